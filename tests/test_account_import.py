"""Importing a whole vendor account: real DuckDB files, the fake vendors on loopback, the quota ledger in the store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.catalog import account_import as ai
from core.catalog import catalog as cat
from core.catalog import enphase_auth, quota_plan
from core.catalog.config_io import ConfigImportError
from core.config import Settings
from core.models import SiteIn, UpdateFrequency
from core.providers.base import ProviderSite
from core.runtime import Runtime
from core.store.crypto import SecretBox
from core.store.oauth_tokens import TOKENS_SECRET, StoredTokens
from core.store.quota_store import StoredQuotaLedger
from core.store.store import Store
from jobs.collector import Collector
from tests.crafting import saved_enphase_source
from tests.fakes import enphase
from tests.fakes import solaredge_v2 as se
from tests.fakes.server import free_port, serve

KEY = se.SANDBOX_API_KEY


@pytest.fixture
def fleet() -> Iterator[tuple[se.FakeState, Settings]]:
    """A SolarEdge account of 50 sites on the Free tier's limits."""
    state = se.FakeState(sites=se.fleet_sites(50))
    with serve(se.create_app(state)) as url:
        yield state, Settings(solaredge_base_url=f"{url}/v2")


def site_list_calls(state: se.FakeState) -> int:
    return state.calls[(se.label(KEY), None)]


def counted_calls(store: Store) -> int:
    with store.connect(read_only=True) as con:
        row = con.execute("SELECT coalesce(sum(calls), 0) FROM quota_usage WHERE period = 'month'").fetchone()
    return int(row[0]) if row else 0


def listed(store: Store, box: SecretBox, settings: Settings, account: ai.Account) -> list[ProviderSite]:
    return ai.list_account_sites(account, settings, StoredQuotaLedger(store), store, box)


def test_an_account_of_50_sites_is_listed_in_one_counted_call(
    store: Store, box: SecretBox, fleet: tuple[se.FakeState, Settings]
) -> None:
    state, settings = fleet
    sites = listed(store, box, settings, ai.solaredge_account(KEY))
    assert [s.id for s in sites] == [str(s.site_id) for s in state.sites]
    first = sites[0]
    assert (first.name, first.timezone, first.capacity_kw) == ("Fleet Site 001", "Europe/Brussels", 3.0)
    assert first.location == "Sandbox, Sandbox"
    # 1,000 sites a page: one call, and the ledger in the store counted it against the key's monthly credits.
    assert site_list_calls(state) == 1
    assert counted_calls(store) == 1


def test_a_larger_account_is_read_page_by_page(store: Store, box: SecretBox) -> None:
    state = se.FakeState(sites=se.fleet_sites(1_001), per_minute_limit=100)
    with serve(se.create_app(state)) as url:
        sites = listed(store, box, Settings(solaredge_base_url=f"{url}/v2"), ai.solaredge_account(KEY))
    assert len(sites) == len({s.id for s in sites}) == 1_001
    assert site_list_calls(state) == 2 and counted_calls(store) == 2


def fitting(store: Store, box: SecretBox, account: ai.Account, sites: list[ProviderSite]) -> dict[str, object]:
    """The PV-only document of `sites` at the fastest frequency the planner says fits."""
    catalog = cat.load_catalog(store)
    probe = ai.import_document(account, sites, frozenset(), UpdateFrequency.MIN15, catalog)
    frequency = quota_plan.common_fastest_fit(ai.quota_checks(store, box, catalog, account, probe, "watt"))
    assert frequency is not None
    return ai.import_document(account, sites, frozenset(), frequency, catalog)


def test_import_creates_the_chosen_sites_with_their_sources_and_the_key_encrypted(
    store: Store, box: SecretBox, fleet: tuple[se.FakeState, Settings]
) -> None:
    _, settings = fleet
    account = ai.solaredge_account(KEY)
    sites = listed(store, box, settings, account)[:12]  # what one Free-tier key carries, PV only
    document = fitting(store, box, account, sites)
    frequency = UpdateFrequency(document["sites"][0]["meters"][0]["sources"][0]["api"]["update_frequency"])  # type: ignore[index]
    checks = ai.quota_checks(store, box, catalog := cat.load_catalog(store), account, document, "watt")
    assert len(checks) == 1 and checks[0].fits and checks[0].vendor_sites == 12 and catalog.sites == []

    report = ai.import_sites(store, box, account, document, enphase_plan="watt")

    assert (report.sites.created, report.meters.created, report.sources.created) == (12, 12, 12)
    after = cat.load_catalog(store)
    assert sorted(s.api.system_id for s in after.sources) == sorted(s.id for s in sites)
    assert {s.api.update_frequency for s in after.sources} == {frequency}
    brussels = next(s for s in after.sites if s.name == "Fleet Site 001")
    assert (brussels.timezone, round(brussels.latitude), round(brussels.longitude)) == ("Europe/Brussels", 51, 4)
    # The key: typed once, stored with each source, only as ciphertext that decrypts to it.
    with store.connect() as con:
        rows = con.execute("SELECT name, ciphertext FROM source_secrets").fetchall()
        con.execute("CHECKPOINT")
    assert len(rows) == 1 and {name for name, _ in rows} == {"api_key"}  # stored once for the account's sources
    assert all(s.secret_names == {"api_key"} for s in after.sources)  # and used by each
    assert {box.decrypt(token).get_secret_value() for _, token in rows} == {KEY}
    assert KEY.encode() not in store.path.read_bytes()


def test_a_selection_the_budget_cannot_carry_is_refused_before_anything_is_saved(
    store: Store, box: SecretBox, fleet: tuple[se.FakeState, Settings]
) -> None:
    _, settings = fleet
    account = ai.solaredge_account(KEY)
    sites = listed(store, box, settings, account)
    catalog = cat.load_catalog(store)
    document = ai.import_document(account, sites, frozenset({"meters", "battery"}), UpdateFrequency.MIN15, catalog)
    checks = ai.quota_checks(store, box, catalog, account, document, "watt")
    assert not checks[0].fits
    # PV, meters and battery: 3 calls a poll for each of 50 sites, every 15 min.
    assert checks[0].calls_per_month == 50 * 3 * 96 * 31
    with pytest.raises(ConfigImportError) as refused:
        ai.import_sites(store, box, account, document, enphase_plan="watt")
    assert any("allows 2,000 calls a month" in line for line in refused.value.errors)
    assert cat.load_catalog(store).sites == []


def test_running_it_again_skips_the_sites_already_there(
    store: Store, box: SecretBox, fleet: tuple[se.FakeState, Settings]
) -> None:
    _, settings = fleet
    account = ai.solaredge_account(KEY)
    sites = listed(store, box, settings, account)
    ai.import_sites(store, box, account, fitting(store, box, account, sites[:3]), enphase_plan="watt")
    # A site named like a vendor site but reading another one keeps its name; the vendor's gets its id added.
    cat.create_site(store, SiteIn(name="Fleet Site 004", latitude=1, longitude=1, timezone="UTC"))

    again = fitting(store, box, account, sites[:10])

    names = [site["name"] for site in again["sites"]]  # type: ignore[index]
    assert len(names) == 7 and names[0] == f"Fleet Site 004 ({sites[3].id})"
    ai.import_sites(store, box, account, again, enphase_plan="watt")
    after = cat.load_catalog(store)
    assert len(after.sources) == 10 and len(after.sites) == 11
    assert ai.import_document(account, sites[:10], frozenset(), UpdateFrequency.HOUR1, after)["sites"] == []


def test_one_bad_site_saves_nothing(store: Store, box: SecretBox, fleet: tuple[se.FakeState, Settings]) -> None:
    _, settings = fleet
    account = ai.solaredge_account(KEY)
    sites = [*listed(store, box, settings, account)[:20], ProviderSite("999", "Far Away", timezone="Mars/Olympus")]
    document = ai.import_document(account, sites, frozenset(), UpdateFrequency.HOUR1, cat.load_catalog(store))
    with pytest.raises(ConfigImportError) as refused:
        ai.import_sites(store, box, account, document, enphase_plan="watt")
    assert any("Mars/Olympus" in line for line in refused.value.errors)
    with store.connect(read_only=True) as con:
        counts = [
            con.execute(f"SELECT count(*) FROM {t}").fetchone() for t in ("sites", "energy_sources", "source_secrets")
        ]
    assert counts == [(0,), (0,), (0,)]


def test_a_bad_key_or_an_unreachable_vendor_gives_one_message(
    store: Store, box: SecretBox, fleet: tuple[se.FakeState, Settings]
) -> None:
    _, settings = fleet
    with pytest.raises(ai.AccountImportError) as bad:
        listed(store, box, settings, ai.solaredge_account("not-the-key"))
    assert "rejected the API key" in str(bad.value) and "not-the-key" not in str(bad.value)
    offline = Settings(solaredge_base_url=f"http://127.0.0.1:{free_port()}/v2", http_timeout_s=2)
    with pytest.raises(ai.AccountImportError) as unreachable:
        listed(store, box, offline, ai.solaredge_account(KEY))
    assert str(unreachable.value).startswith("Could not list the sites of this account.")
    with pytest.raises(ai.AccountImportError, match="Enter the SolarEdge V2 API key"):
        ai.solaredge_account("  ")
    assert cat.load_catalog(store).sites == []


def test_meters_are_checked_as_far_as_the_per_minute_limit_allows_and_shape_the_import(
    store: Store, box: SecretBox, fleet: tuple[se.FakeState, Settings]
) -> None:
    state, settings = fleet
    account = ai.solaredge_account(KEY)
    ledger = StoredQuotaLedger(store)
    sites = ai.list_account_sites(account, settings, ledger, store, box)[:12]
    ids = [s.id for s in sites]

    check = ai.check_meters(account, ids, settings, ledger)

    # The list took 1 of the minute's 10 calls, so 9 sites are checked (more only if the minute turned meanwhile).
    done = len(check.groups)
    assert done >= 9 and list(check.groups) == ids[:done] and check.unchecked == ids[done:]
    if check.unchecked:
        assert check.note is not None and "per minute" in check.note and check.retry_at is not None
    fake = {str(s.site_id): s for s in state.sites}
    for site_id, groups in check.groups.items():
        site = fake[site_id]
        expected = {g for g, there in (("meters", site.has_meter), ("battery", site.battery_kwh > 0)) if there}
        assert groups == expected, site_id
    assert check.groups[ids[0]] == {"meters", "battery"} and check.groups[ids[1]] == frozenset()

    document = ai.import_document(
        account, sites[:2], frozenset({"battery"}), UpdateFrequency.HOUR1, cat.load_catalog(store), check.groups
    )
    meters = [[m["name"] for m in site["meters"]] for site in document["sites"]]  # type: ignore[attr-defined]
    assert meters == [["Solar", "Consumption", "Injection", "Battery"], ["Solar"]]  # reported, not the default


# --- Enphase -----------------------------------------------------------------------------------------------------


@pytest.fixture
def enphase_fleet() -> Iterator[tuple[enphase.FakeState, Settings]]:
    state = enphase.FakeState(systems=enphase.sandbox_systems() | enphase.fleet_systems(150))
    with serve(enphase.create_app(state)) as url:
        yield state, Settings(enphase_base_url=f"{url}/api/v4", enphase_auth_url=f"{url}/oauth")


def enphase_source(
    store: Store, box: SecretBox, *, authorised: bool, settings: Settings, fake: enphase.FakeState
) -> int:
    source_id = saved_enphase_source(store, box).id
    if authorised:
        code = fake.issue_code(enphase_auth.redirect_uri(settings))
        enphase_auth.complete(store, box, settings, source_id, code, datetime.now(UTC))
    return source_id


def test_an_authorised_enphase_application_lists_its_systems_page_by_page_and_imports_them(
    store: Store, box: SecretBox, enphase_fleet: tuple[enphase.FakeState, Settings]
) -> None:
    fake, settings = enphase_fleet
    source_id = enphase_source(store, box, authorised=True, settings=settings, fake=fake)
    catalog = cat.load_catalog(store)
    assert [found for found, _ in ai.enphase_sources(catalog)] == [source_id]
    account = ai.enphase_account(store, box, source_id)

    systems = listed(store, box, settings, account)

    assert len(systems) == 152  # the sandbox's 2 and the 150 of the fleet, 100 a page
    assert fake.calls[(enphase.SANDBOX_API_KEY, "")] == 2
    fleet_only = [s for s in systems if s.name.startswith("Fleet System")][:50]
    document = ai.import_document(account, systems, frozenset(), UpdateFrequency.HOUR1, catalog)
    assert len(document["sites"]) == 151  # type: ignore[arg-type]  # the grant's own system is configured already
    document = ai.import_document(account, fleet_only, frozenset({"meters"}), UpdateFrequency.HOUR1, catalog)
    checks = ai.quota_checks(store, box, catalog, account, document, "kilowatt")
    assert len(checks) == 1 and not checks[0].fits and "fits" in checks[0].message()  # the planner proposes
    frequency = quota_plan.common_fastest_fit(checks)
    assert frequency is not None
    document = ai.import_document(account, fleet_only, frozenset({"meters"}), frequency, catalog)
    assert ai.quota_checks(store, box, catalog, account, document, "kilowatt")[0].fits

    report = ai.import_sites(store, box, account, document, enphase_plan="kilowatt")

    assert (report.sites.created, report.sources.created) == (50, 200)  # PV, load, grid import, grid export
    after = cat.load_catalog(store)
    new = [s for s in after.sources if s.id != source_id]
    assert {s.api.client_id for s in new} == {enphase.SANDBOX_CLIENT_ID}
    # The application's credentials and its owner's authorisation are shared, not copied (Enphase rotates the grant).
    assert {s.api.credentials_source_id for s in new} == {source_id}
    assert {frozenset(s.secret_names) for s in new} == {frozenset({"client_secret", "app_api_key", TOKENS_SECRET})}
    with store.connect(read_only=True) as con:
        holders = con.sql("SELECT DISTINCT source_id FROM source_secrets").fetchall()
    assert holders == [(source_id,)]
    assert [found for found, _ in ai.enphase_sources(after)] == [source_id]  # the application is offered once


def test_imported_enphase_systems_are_collected_on_the_shared_grant_renewed_once(
    store: Store, box: SecretBox, enphase_fleet: tuple[enphase.FakeState, Settings]
) -> None:
    fake, settings = enphase_fleet
    fake.set_plan("Kilowatt")  # 50 calls a minute: the five systems are read at once
    fake.refresh_latency_s = 0.3  # renewals that do not wait for each other overlap, and all but one fail
    settings = settings.model_copy(update={"enphase_plan": "kilowatt"})
    source_id = enphase_source(store, box, authorised=True, settings=settings, fake=fake)
    account = ai.enphase_account(store, box, source_id)
    fleet = [s for s in listed(store, box, settings, account) if s.name.startswith("Fleet System")][:4]
    catalog = cat.load_catalog(store)
    document = ai.import_document(account, fleet, frozenset(), UpdateFrequency.HOUR6, catalog)
    ai.import_sites(store, box, account, document, enphase_plan=settings.enphase_plan)
    tokens = StoredTokens(store, box, source_id)
    stored = tokens.load()
    assert stored is not None
    tokens.save(replace(stored, access_expires_at=datetime.now(UTC) - timedelta(minutes=1)))  # due for renewal
    renewals = fake.token_calls

    collector = Collector(Runtime(settings=settings, store=store, box=box))  # its worker threads poll at once
    try:
        collector._sync()  # a first sync polls every site
    finally:
        collector.executor.shutdown(wait=True)

    assert fake.token_calls == renewals + 1  # one renewal served all five systems; the others adopted it
    imported = {s.id for s in cat.load_catalog(store).sources if s.api.credentials_source_id == source_id}
    assert len(imported) == 4
    with store.connect(read_only=True) as con:
        read = {r[0] for r in con.sql("SELECT DISTINCT source_id FROM readings WHERE value IS NOT NULL").fetchall()}
        statuses = con.sql("SELECT DISTINCT outcome FROM collector_runs").fetchall()
    assert imported <= read, statuses
    assert statuses == [("ok",)]


def test_systems_a_per_minute_limit_refused_are_polled_again_when_it_ends_not_at_their_next_slot(
    store: Store, box: SecretBox, enphase_fleet: tuple[enphase.FakeState, Settings]
) -> None:
    fake, settings = enphase_fleet  # the Watt plan: 10 calls a minute for the application
    source_id = enphase_source(store, box, authorised=True, settings=settings, fake=fake)
    with store.transaction() as con:  # daily, as the fleet will be: the plan's 1,000 calls a month carry six
        con.execute('UPDATE energy_sources SET metadata = json_merge_patch(metadata, \'{"updateFrequency": "1day"}\')')
    account = ai.enphase_account(store, box, source_id)
    fleet = [s for s in listed(store, box, settings, account) if s.name.startswith("Fleet System")][:5]
    document = ai.import_document(account, fleet, frozenset(), UpdateFrequency.DAY1, cat.load_catalog(store))
    ai.import_sites(store, box, account, document, enphase_plan=settings.enphase_plan)

    collector = Collector(Runtime(settings=settings, store=store, box=box))
    try:
        collector._sync()  # six daily systems at once: more calls than the minute allows
    finally:
        collector.executor.shutdown(wait=True)

    with store.connect(read_only=True) as con:
        limited = con.sql("SELECT count(*) FROM collector_runs WHERE outcome = 'rate_limited'").fetchall()[0][0]
    assert limited and len(collector.retry_at) == limited
    assert all(when < datetime.now(UTC) + timedelta(minutes=2) for when in collector.retry_at.values())  # not a day


def test_an_unauthorised_enphase_source_cannot_list(
    store: Store, box: SecretBox, enphase_fleet: tuple[enphase.FakeState, Settings]
) -> None:
    fake, settings = enphase_fleet
    source_id = enphase_source(store, box, authorised=False, settings=settings, fake=fake)
    assert ai.enphase_sources(cat.load_catalog(store)) == []
    with pytest.raises(ai.AccountImportError, match="Authorize with Enphase"):
        ai.enphase_account(store, box, source_id)
