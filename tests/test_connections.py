"""Data Connections drafts: all-or-nothing saves, masked secrets, status rules, and real connection tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from core.catalog import catalog as cat
from core.catalog import connections
from core.catalog.connections import MASKED, SaveRejected, draft_from_source, new_draft, save_connections
from core.config import Settings
from core.models import ApiSettings, Category, ConnectionStatus, MeterIn, Provider, SiteIn, UpdateFrequency
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.store.crypto import SecretBox
from core.store.secret_store import load_secrets
from core.store.store import Store
from tests.fakes import solaredge_v2
from tests.fakes.server import serve

CONTEXT = ProviderContext(Settings(), QuotaLedger())
NOON = datetime(2026, 6, 21, 11, 0, tzinfo=UTC)  # 13:00 in Brussels, summer
MIDNIGHT = datetime(2026, 6, 21, 23, 0, tzinfo=UTC)


@pytest.fixture
def site(store: Store) -> cat.Site:
    return cat.create_site(store, SiteIn(name="Plant", latitude=50.85, longitude=4.35, timezone="Europe/Brussels"))


@pytest.fixture
def pv_meter(store: Store, site: cat.Site) -> cat.Meter:
    return cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))


def solar_draft(meter: cat.Meter, key: str = "new-a", **values: object):  # type: ignore[no-untyped-def]
    draft = new_draft(key, meter.id, meter.category)
    draft.values |= {"name": "Main Solar Array", "capacity_kw": "500", "carbon_intensity_g_per_kwh": "0"}
    if values.get("api_provider") in {"solaredge", "enphase"}:
        draft.values["update_frequency"] = "1hour"  # what their free budgets allow (core.catalog.quota_plan)
    draft.values |= values
    return draft


def stored_sources(store: Store) -> list[cat.Source]:
    return cat.load_catalog(store).sources


def test_spec_flow_saves_a_simulator_source(store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter) -> None:
    draft = solar_draft(pv_meter, use_api=True, api_provider="simulator")
    outcome = connections.test_connection(store, box, site.id, draft, NOON, CONTEXT)
    assert outcome.status is ConnectionStatus.CONNECTED
    assert outcome.power_w is not None and 50_000 < outcome.power_w <= 500_000
    assert "current power" in outcome.message and "kW" in outcome.message
    draft.test = outcome
    report = save_connections(store, box, site.id, [draft], set())
    assert (report.created, report.updated, report.removed) == (1, 0, 0)
    (source,) = stored_sources(store)
    assert (source.name, source.source_type, source.capacity_kw) == ("Main Solar Array", "solar", 500.0)
    assert source.api.connection_status is ConnectionStatus.CONNECTED
    assert source.api.last_tested == NOON
    assert source.api.last_power_w == pytest.approx(outcome.power_w)


def test_simulator_reports_zero_at_night(store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter) -> None:
    outcome = connections.test_connection(store, box, site.id, solar_draft(pv_meter, use_api=True), MIDNIGHT, CONTEXT)
    assert outcome.status is ConnectionStatus.CONNECTED
    assert outcome.power_w == 0


@pytest.fixture
def solaredge_fake() -> Iterator[ProviderContext]:
    """The fake SolarEdge V2 server, and a context whose settings point at it."""
    with serve(solaredge_v2.create_app(solaredge_v2.FakeState())) as url:
        yield ProviderContext(Settings(solaredge_base_url=f"{url}/v2"), QuotaLedger())


def test_solaredge_connection_against_its_fake(
    store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter, solaredge_fake: ProviderContext
) -> None:
    draft = solar_draft(pv_meter, use_api=True, api_provider="solaredge", system_id="3066774")
    draft.secrets = {"api_key": solaredge_v2.SANDBOX_API_KEY}
    outcome = connections.test_connection(store, box, site.id, draft, datetime.now(UTC), solaredge_fake)
    assert outcome.status is ConnectionStatus.CONNECTED, outcome.message
    assert "current power" in outcome.message


def test_solaredge_wrong_key_gives_the_reason_without_the_key(
    store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter, solaredge_fake: ProviderContext
) -> None:
    draft = solar_draft(pv_meter, use_api=True, api_provider="solaredge", system_id="3066774")
    draft.secrets = {"api_key": "sk-wrong-key-123"}
    outcome = connections.test_connection(store, box, site.id, draft, datetime.now(UTC), solaredge_fake)
    assert outcome.status is ConnectionStatus.FAILED
    assert "API key" in outcome.message
    assert "sk-wrong-key-123" not in outcome.message


def test_test_reports_missing_credentials(store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter) -> None:
    draft = solar_draft(pv_meter, use_api=True, api_provider="enphase")
    outcome = connections.test_connection(store, box, site.id, draft, NOON, CONTEXT)
    assert outcome.status is ConnectionStatus.FAILED
    assert outcome.message == "System ID is required for Enphase"


def test_one_bad_draft_saves_nothing(store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter) -> None:
    good = solar_draft(pv_meter, key="new-good")
    bad = solar_draft(pv_meter, key="new-bad", name="Second", capacity_kw="-5", cost_per_mwh="abc")
    with pytest.raises(SaveRejected) as info:
        save_connections(store, box, site.id, [good, bad], set())
    assert info.value.errors == {
        "new-bad": {"capacity_kw": "must be at least 0", "cost_per_mwh": "must be a number (got 'abc')"}
    }
    assert stored_sources(store) == []


def test_duplicate_names_within_a_meter_are_rejected(
    store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter
) -> None:
    first, second = solar_draft(pv_meter, key="new-1"), solar_draft(pv_meter, key="new-2", name="main solar ARRAY")
    with pytest.raises(SaveRejected) as info:
        save_connections(store, box, site.id, [first, second], set())
    assert info.value.errors == {"new-2": {"name": "another source of this meter is already named 'main solar ARRAY'"}}


def test_source_type_must_fit_the_meter(store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter) -> None:
    with pytest.raises(SaveRejected) as info:
        save_connections(store, box, site.id, [solar_draft(pv_meter, source_type="battery")], set())
    assert info.value.errors["new-a"] == {
        "source_type": "must be one of solar, wind, hydro, chp, other for a PROD meter"
    }


def test_provider_without_credentials_is_rejected(
    store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter
) -> None:
    draft = solar_draft(pv_meter, use_api=True, api_provider="solaredge")
    with pytest.raises(SaveRejected) as info:
        save_connections(store, box, site.id, [draft], set())
    assert info.value.errors["new-a"] == {
        "system_id": "is required for SolarEdge",
        "api_key": "is required for SolarEdge",
    }


def test_masked_secret_keeps_the_stored_value_and_clearing_it_is_an_error(
    store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter
) -> None:
    draft = solar_draft(pv_meter, use_api=True, api_provider="solaredge", system_id="77")
    draft.secrets = {"api_key": "  sk-first  "}
    save_connections(store, box, site.id, [draft], set())
    (source,) = stored_sources(store)
    edited = draft_from_source(source)
    assert edited.secrets == {"api_key": MASKED}
    edited.values["capacity_kw"] = "600"
    save_connections(store, box, site.id, [edited], set())
    assert load_secrets(store, box, source.id)["api_key"].get_secret_value() == "sk-first"
    edited.secrets = {"api_key": ""}
    with pytest.raises(SaveRejected) as info:
        save_connections(store, box, site.id, [edited], set())
    assert info.value.errors[f"s{source.id}"] == {"api_key": "is required for SolarEdge"}
    edited.secrets = {"api_key": "sk-second"}
    save_connections(store, box, site.id, [edited], set())
    assert load_secrets(store, box, source.id)["api_key"].get_secret_value() == "sk-second"


def test_switching_provider_drops_the_old_credentials(
    store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter
) -> None:
    draft = solar_draft(pv_meter, use_api=True, api_provider="solaredge", system_id="77")
    draft.secrets = {"api_key": "sk-old"}
    save_connections(store, box, site.id, [draft], set())
    (source,) = stored_sources(store)
    switched = draft_from_source(source)
    switched.values |= {"api_provider": "simulator", "system_id": ""}
    switched.secrets = {}
    save_connections(store, box, site.id, [switched], set())
    assert stored_sources(store)[0].secret_names == frozenset()


def test_a_test_result_is_dropped_when_connection_settings_change(
    store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter
) -> None:
    draft = solar_draft(pv_meter, use_api=True)
    draft.test = connections.test_connection(store, box, site.id, draft, NOON, CONTEXT)
    save_connections(store, box, site.id, [draft], set())
    (source,) = stored_sources(store)
    renamed = draft_from_source(source)
    renamed.values["name"] = "Renamed"
    save_connections(store, box, site.id, [renamed], set())
    assert stored_sources(store)[0].api.connection_status is ConnectionStatus.CONNECTED
    moved = draft_from_source(stored_sources(store)[0])
    moved.values |= {"api_provider": "solaredge", "system_id": "9", "update_frequency": "1hour"}
    moved.secrets = {"api_key": "sk-x"}
    save_connections(store, box, site.id, [moved], set())
    assert stored_sources(store)[0].api.connection_status is ConnectionStatus.UNTESTED
    assert stored_sources(store)[0].api.last_tested is None


def test_one_rule_keeps_a_test_result_only_for_the_settings_it_tested() -> None:
    """`ApiSettings.with_test_result_of`, used by Save All Connections and the config import alike."""
    tested = ApiSettings(
        use_api=True,
        api_provider=Provider.SOLAREDGE,
        system_id="9",
        connection_status=ConnectionStatus.CONNECTED,
        last_tested=NOON,
        last_power_w=5.0,
    )
    slower = ApiSettings(
        use_api=True, api_provider=Provider.SOLAREDGE, system_id="9", update_frequency=UpdateFrequency.HOUR1
    )
    kept = slower.with_test_result_of(tested, credentials_changed=False)
    assert (kept.connection_status, kept.last_tested, kept.last_power_w) == (ConnectionStatus.CONNECTED, NOON, 5.0)
    assert kept.update_frequency is UpdateFrequency.HOUR1  # the frequency is not what a test tested
    assert slower.with_test_result_of(tested, credentials_changed=True) == slower
    for change in (
        {"use_api": False},
        {"api_provider": Provider.SOLAREDGE_V1},
        {"system_id": "10"},
        {"client_id": "app"},
    ):
        edited = ApiSettings.model_validate(slower.model_dump() | change)
        assert edited.with_test_result_of(tested, credentials_changed=False) == edited
        assert edited.connection_status is ConnectionStatus.UNTESTED


def test_unchanged_sources_are_not_rewritten(store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter) -> None:
    save_connections(store, box, site.id, [solar_draft(pv_meter)], set())
    with store.connect(read_only=True) as con:
        before = con.sql("SELECT updated_at FROM energy_sources").fetchall()
    report = save_connections(store, box, site.id, [draft_from_source(stored_sources(store)[0])], set())
    assert (report.created, report.updated, report.unchanged) == (0, 0, 1)
    with store.connect(read_only=True) as con:
        assert con.sql("SELECT updated_at FROM energy_sources").fetchall() == before


def test_removal_and_addition_land_together(store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter) -> None:
    save_connections(store, box, site.id, [solar_draft(pv_meter)], set())
    (old,) = stored_sources(store)
    replacement = solar_draft(pv_meter, key="new-r")  # same name as the source being removed
    report = save_connections(store, box, site.id, [replacement], {old.id})
    assert (report.created, report.removed) == (1, 1)
    (new,) = stored_sources(store)
    assert new.id != old.id and new.name == old.name


def test_removing_a_source_of_another_site_is_refused(
    store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter
) -> None:
    other = cat.create_site(store, SiteIn(name="Other", latitude=0, longitude=0, timezone="UTC"))
    save_connections(store, box, site.id, [solar_draft(pv_meter)], set())
    (source,) = stored_sources(store)
    with pytest.raises(SaveRejected):
        save_connections(store, box, other.id, [], {source.id})
    assert len(stored_sources(store)) == 1
