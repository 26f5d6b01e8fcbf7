"""A collection pass against real DuckDB files: the simulator demo and a SolarEdge site on its fake server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from core.catalog import catalog as cat
from core.catalog.connections import draft_from_source, new_draft, save_connections
from core.catalog.demo import seed_demo
from core.collect.collection import backfill, collect_once
from core.collect.pass_inputs import UNMETERED_BACKFILL, window_for
from core.collect.source_health import next_health
from core.config import Settings
from core.models import Category, MeterIn, SiteIn
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.store.crypto import SecretBox
from core.store.store import Store
from tests.fakes import solaredge_v2
from tests.fakes.server import serve

NOW = datetime(2026, 6, 21, 12, 2, tzinfo=UTC)


def runs(store: Store) -> int:
    with store.connect(read_only=True) as con:
        return int(con.sql("SELECT count(*) FROM collector_runs").fetchall()[0][0])


def counts(store: Store) -> dict[int, tuple[int, int]]:
    with store.connect(read_only=True) as con:
        rows = con.sql("SELECT source_id, count(*), count(DISTINCT ts) FROM readings GROUP BY 1").fetchall()
    return {int(source): (int(n), int(distinct)) for source, n, distinct in rows}


def london_roof(store: Store, box: SecretBox, api_key: str, capacity_kw: str = "5") -> cat.Site:
    """A SolarEdge V2 source on the fake's site 3066774 (London)."""
    site = cat.create_site(store, SiteIn(name="London", latitude=51.5, longitude=-0.12, timezone="Europe/London"))
    meter = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    draft = new_draft("new-se", meter.id, Category.PROD)
    draft.values |= {"name": "Roof", "capacity_kw": capacity_kw, "use_api": True, "api_provider": "solaredge"}
    draft.values["update_frequency"] = "1hour"  # within the V2 monthly credits
    draft.values |= {"system_id": "3066774"}
    draft.secrets = {"api_key": api_key}
    save_connections(store, box, site.id, [draft], set())
    return site


@pytest.fixture
def context() -> ProviderContext:
    return ProviderContext(Settings(), QuotaLedger())


def test_demo_pass_writes_every_source_once_and_repolls_without_duplicates(
    store: Store, box: SecretBox, context: ProviderContext
) -> None:
    seed_demo(store)
    report = collect_once(store, box, context, NOW)
    assert [r.outcome for r in report.results] == ["ok"]  # six sources, one simulated site: one poll
    first = counts(store)
    intervals = int(UNMETERED_BACKFILL / timedelta(minutes=5))  # the simulator has no vendor quota
    assert len(first) == 6 and all(n == distinct for n, distinct in first.values())
    assert all(intervals <= n <= intervals + 1 for n, _ in first.values())

    collect_once(store, box, context, NOW + timedelta(minutes=15))
    second = counts(store)
    assert all(n == distinct for n, distinct in second.values())  # re-read window: replaced, never duplicated
    assert all(second[s][0] == first[s][0] + 3 for s in first)  # three new 5-minute intervals each
    with store.connect(read_only=True) as con:
        runs = con.sql("SELECT count(*), count(DISTINCT source_id) FROM collector_runs").fetchall()[0]
        open_rows = con.execute(
            "SELECT count(*) FROM readings WHERE NOT is_final AND ts + to_seconds(interval_s) <= ?",
            [NOW + timedelta(minutes=15) - timedelta(hours=1)],
        ).fetchall()[0][0]
    assert runs == (12, 6)
    assert open_rows == 0  # only the last hour may still change


@pytest.fixture
def solaredge_site(store: Store, box: SecretBox) -> Iterator[tuple[ProviderContext, int]]:
    london_roof(store, box, solaredge_v2.SANDBOX_API_KEY, "5.68")
    with serve(solaredge_v2.create_app(solaredge_v2.FakeState())) as url:
        yield (
            ProviderContext(Settings(solaredge_base_url=f"{url}/v2"), QuotaLedger()),
            cat.load_catalog(store).sources[0].id,
        )


def test_a_vendor_site_is_collected_from_its_fake(
    store: Store, box: SecretBox, solaredge_site: tuple[ProviderContext, int]
) -> None:
    context, source_id = solaredge_site
    report = collect_once(store, box, context, datetime.now(UTC))
    assert [r.outcome for r in report.results] == ["ok"], report.results[0].error
    n, distinct = counts(store)[source_id]
    assert n == distinct and n >= 90  # a day of 15-minute PV data
    with store.connect(read_only=True) as con:
        run = con.sql("SELECT outcome, http_status, quota_used, quota_remaining FROM collector_runs").fetchall()
        cached = con.sql("SELECT source_id, endpoint, http_status, length(body) FROM api_data_cache").fetchall()
    calls = len(cached)
    assert calls >= 1 and all(row[0] == source_id and row[2] == 200 and row[3] > 0 for row in cached)
    assert all("power" in row[1] or "meters" in row[1] or "storage" in row[1] for row in cached)
    assert run == [("ok", 200, calls, 2000 - calls)]  # the monthly credits: the tightest day/month budget


def test_a_wrong_key_stops_the_source_with_the_reason(
    store: Store, box: SecretBox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="core.collect.collection")
    site = london_roof(store, box, "sk-wrong-999")
    with serve(solaredge_v2.create_app(solaredge_v2.FakeState())) as url:
        context = ProviderContext(Settings(solaredge_base_url=f"{url}/v2"), QuotaLedger())
        report = collect_once(store, box, context, datetime.now(UTC))
        again = collect_once(store, box, context, datetime.now(UTC))
        stopped_runs = runs(store)
        fixed = draft_from_source(cat.load_catalog(store).sources[0])
        fixed.secrets = {"api_key": solaredge_v2.SANDBOX_API_KEY}
        save_connections(store, box, site.id, [fixed], set())
        resumed = collect_once(store, box, context, datetime.now(UTC))
    assert [r.outcome for r in report.results] == ["auth_error"]
    assert again.results == [] and again.skipped == 1 and stopped_runs == 1  # no call until the key changes
    assert [r.outcome for r in resumed.results] == ["ok"]
    transitions = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if "failing" in r.getMessage() or "recovered" in r.getMessage()
    ]
    assert [level for level, _ in transitions] == ["WARNING", "INFO"]  # the change of health, once each way
    assert "solaredge/3066774 is failing (auth_error)" in transitions[0][1]
    assert "recovered after 1 failed poll(s)" in transitions[1][1]
    assert "sk-wrong-999" not in caplog.text
    with store.connect(read_only=True) as con:
        error = con.sql("SELECT error FROM collector_runs ORDER BY id LIMIT 1").fetchall()[0][0]
        reason, failures = con.sql("SELECT stopped_reason, consecutive_failures FROM source_state").fetchall()[0]
    assert "API key" in error and "sk-wrong-999" not in error
    assert reason is None and failures == 0  # the successful poll after the fix cleared both
    assert counts(store)


def test_backfill_fills_a_range_for_the_whole_vendor_site_once(
    store: Store, box: SecretBox, context: ProviderContext
) -> None:
    seed_demo(store)
    start, end = datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 30, 22, tzinfo=UTC)  # Brussels DST day
    steps: list[tuple[int, int]] = []
    written = backfill(store, box, context, 1, start, end, NOW, lambda done, total, rows: steps.append((done, total)))
    intervals = int((end - start) / timedelta(minutes=5))
    assert written == 6 * intervals  # all six sources of the simulated site, every 5-minute interval
    assert steps[-1][0] == steps[-1][1]
    assert backfill(store, box, context, 1, start, end, NOW) == 0  # re-running duplicates nothing
    assert all(n == distinct == intervals for n, distinct in counts(store).values())


def test_a_vendor_backfill_archives_every_answer(store: Store, box: SecretBox) -> None:
    london_roof(store, box, solaredge_v2.SANDBOX_API_KEY)
    state = solaredge_v2.FakeState()
    with serve(solaredge_v2.create_app(state)) as url:
        context = ProviderContext(Settings(solaredge_base_url=f"{url}/v2"), QuotaLedger())
        now = datetime.now(UTC)
        source_id = cat.load_catalog(store).sources[0].id
        backfill(store, box, context, source_id, now - timedelta(days=3), now - timedelta(days=1), now)
    with store.connect(read_only=True) as con:
        archived = con.sql("SELECT count(*), count(DISTINCT endpoint) FROM api_data_cache").fetchall()[0]
    assert state.calls_total > 0 and archived[0] == state.calls_total  # one row per vendor answer


def test_a_channel_the_vendor_site_lacks_does_not_hold_the_window_open_and_says_so(
    store: Store, box: SecretBox
) -> None:
    from core.analytics.poll_status import describe, poll_statuses, unreported

    site = cat.create_site(store, SiteIn(name="Fleet 2", latitude=51.5, longitude=-0.12, timezone="Europe/London"))
    drafts = []
    for meter_name, category, name, source_type in (
        ("PV", Category.PROD, "Roof", "solar"),
        ("Battery", Category.STOR, "Battery", "battery"),
    ):
        meter = cat.create_meter(store, site.id, MeterIn(name=meter_name, category=category))
        draft = new_draft(f"new-{name}", meter.id, category)
        draft.values |= {"name": name, "source_type": source_type, "capacity_kw": "5", "use_api": True}
        draft.values |= {"api_provider": "solaredge", "system_id": "4000002", "update_frequency": "1hour"}
        draft.secrets = {"api_key": solaredge_v2.SANDBOX_API_KEY}
        drafts.append(draft)
    save_connections(store, box, site.id, drafts, set())
    state = solaredge_v2.FakeState(sites=solaredge_v2.fleet_sites(2))  # site 4000002: no battery, no meter
    with serve(solaredge_v2.create_app(state)) as url:
        context = ProviderContext(Settings(solaredge_base_url=f"{url}/v2"), QuotaLedger())
        now = datetime.now(UTC)
        first = collect_once(store, box, context, now)
        second = collect_once(store, box, context, now + timedelta(hours=1, minutes=1))
    assert [r.outcome for r in first.results + second.results] == ["ok", "ok"]
    ids = {s.name: s.id for s in cat.load_catalog(store).sources}
    with store.connect(read_only=True) as con:
        marks = dict(con.sql("SELECT source_id, bookmark_ts FROM source_state").fetchall())
        battery_rows = con.sql(f"SELECT count(*) FROM readings WHERE source_id = {ids['Battery']}").fetchall()
    assert battery_rows == [(0,)] and marks[ids["Battery"]] == marks[ids["Roof"]]  # it moved on with the site
    # The second poll read the last hour or so, not the first day again (the window ran from the shared bookmark).
    assert second.results[0].gap_window is None
    poll = poll_statuses(store, [ids["Battery"]], now + timedelta(hours=1, minutes=2))[ids["Battery"]]
    line = describe(poll, now + timedelta(hours=1, minutes=2), UTC, "W", unreported("SolarEdge", "Battery"))
    assert line.text.endswith("; SolarEdge reports no battery for this site")


def test_backoff_grows_then_the_circuit_opens_and_a_success_closes_it() -> None:
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert next_health("ok", 7, now, 1.0) == (0, "closed", None)
    assert next_health("connection_error", 0, now, 1.0) == (1, "closed", now + timedelta(minutes=1))
    assert next_health("connection_error", 2, now, 1.0) == (3, "closed", now + timedelta(minutes=4))
    assert next_health("bad_response", 3, now, 1.2) == (4, "closed", now + timedelta(minutes=8) * 1.2)
    assert next_health("connection_error", 4, now, 1.0) == (5, "open", now + timedelta(minutes=30))
    assert next_health("rate_limited", 1, now, 1.0) == (2, "closed", None)  # waits for the vendor's retry_at


def test_a_failing_vendor_is_left_alone_while_backing_off(store: Store, box: SecretBox) -> None:
    london_roof(store, box, solaredge_v2.SANDBOX_API_KEY)
    state = solaredge_v2.FakeState()
    with serve(solaredge_v2.create_app(state)) as url:
        context = ProviderContext(Settings(solaredge_base_url=f"{url}/v2"), QuotaLedger())
        now = datetime.now(UTC)
        state.failures.fail_next("5xx", 3)
        first = collect_once(store, box, context, now)
        during = collect_once(store, box, context, now + timedelta(seconds=20))
        after = collect_once(store, box, context, now + timedelta(minutes=2))
    assert [r.outcome for r in first.results] == ["connection_error"]
    assert during.results == [] and during.skipped == 1
    assert [r.outcome for r in after.results] == ["connection_error"]  # due again, and the vendor still fails
    with store.connect(read_only=True) as con:
        failures, circuit, due = con.sql(
            "SELECT consecutive_failures, circuit, next_due_at FROM source_state"
        ).fetchall()[0]
    assert (failures, circuit) == (2, "closed")
    assert now + timedelta(minutes=2) + timedelta(minutes=2) * 0.8 <= due <= now + timedelta(minutes=2) * 2.2


def test_only_a_first_unmetered_backfill_reads_a_month_in_one_pass() -> None:
    new, old = SimpleNamespace(id=1), SimpleNamespace(id=2)
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    # A new simulator source: a month back in one pass (the demo's month of history on the first pass).
    assert window_for([new], {}, now, unmetered=True) == (now - timedelta(days=31), now)
    # A vendor with a quota: one day back.
    assert window_for([new], {}, now, unmetered=False) == (now - timedelta(days=1), now)
    # Catching up after 20 days of downtime: 7 days a pass, from 2 hours before the bookmark, even unmetered.
    bookmark = now - timedelta(days=20)
    start = bookmark - timedelta(hours=2)
    assert window_for([old], {2: bookmark}, now, unmetered=True) == (start, start + timedelta(days=7))
    # A source added to a bookmarked group brings the month back with it.
    assert window_for([old, new], {2: bookmark}, now, unmetered=True) == (now - timedelta(days=31), now)
