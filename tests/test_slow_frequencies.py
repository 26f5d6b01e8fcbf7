"""Slower update frequencies (2 h, 3 h, 6 h, 12 h, daily): a free-tier site with every channel can be configured,
the planner proposes the fastest frequency that fits every channel of the site with its figures, a poll's longer
window is read in requests within each vendor's limit (against the fake vendor servers), and API Health and the
no-data alert judge the data's age by the source's own period. Core against real DuckDB files."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from core.analytics.alert_rules import Thresholds
from core.analytics.alerts import evaluate
from core.analytics.api_health import load_health
from core.analytics.api_health_display import source_table
from core.cadence import poll_span
from core.catalog import catalog as cat
from core.catalog import quota_plan
from core.catalog.config_io import ConfigImportError, import_config
from core.catalog.connections import SaveRejected, SourceDraft, new_draft, save_connections
from core.catalog.quota_plan import PlannedSource, check, fastest_fitting, windows_per_poll
from core.collect.collection import collect_once
from core.collect.poll_result import GroupResult
from core.collect.source_health import GroupKey, early_retry
from core.config import Settings, load_settings
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn, UpdateFrequency
from core.providers.context import ProviderContext
from core.providers.enphase.client import DEFAULT_ENDPOINTS
from core.providers.quota import QuotaLedger
from core.providers.registry import SPECS
from core.runtime import open_runtime
from core.store.crypto import SecretBox
from core.store.secret_store import put_secret
from core.store.source_state import SourceState
from core.store.store import Store
from jobs.collector import Collector
from tests.fakes import enphase, solaredge_v2
from tests.fakes.server import serve
from tests.test_collection import london_roof

F = UpdateFrequency
SEED = ["5min", "15min", "30min", "1hour"]
# A typical SolarEdge V2 free-tier site: PV, load and grid (meter telemetry), battery (storage telemetry).
FULL_SITE = (("pv", "pv_w"), ("load", "load_w"), ("grid", "grid_import_w"), ("battery", "battery_w"))
ENPHASE_SITE = (("pv", "pv_w"), ("load", "load_w"), ("battery", "battery_w"))
KEY = "se-free-tier-key-0001"
FIVE = timedelta(minutes=5)
APP = str(Path(__file__).resolve().parents[1] / "app.py")
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")  # pictographs, symbols and dingbats (⛔ included)


def planned(
    channels: tuple[tuple[str, str], ...],
    frequency: UpdateFrequency,
    provider: Provider = Provider.SOLAREDGE,
    *,
    site: str = "100",
    editable: bool = True,
) -> list[PlannedSource]:
    return [
        PlannedSource(f"{site}-{name}", provider, site, "account-1", channel, frequency, editable)
        for name, channel in channels
    ]


# --- the choices ------------------------------------------------------------------------------------------------


def test_the_seed_frequencies_come_first_and_the_slow_ones_follow() -> None:
    assert [f.value for f in F] == [*SEED, "2hour", "3hour", "6hour", "12hour", "1day"]
    assert [f.minutes for f in F] == [5, 15, 30, 60, 120, 180, 360, 720, 1_440]
    assert [f.label for f in F] == ["5 min", "15 min", "30 min", "1 hour", "2 h", "3 h", "6 h", "12 h", "24 h (daily)"]
    assert ApiSettings.model_validate({"updateFrequency": "1day"}).update_frequency is F.DAY1


# --- the planner ------------------------------------------------------------------------------------------------


def test_a_full_v2_site_costs_what_each_frequency_implies_and_2_h_is_proposed() -> None:
    per_month = {f: check(planned(FULL_SITE, f))[0].calls_per_month for f in F if f.minutes >= 60}
    # 3 calls a request; one request a poll up to 6 h, two at 12 h (V2's 12 h limit), three daily.
    assert per_month == {F.HOUR1: 2_232, F.HOUR2: 1_116, F.HOUR3: 744, F.HOUR6: 372, F.HOUR12: 372, F.DAY1: 279}
    (scope,) = check(planned(FULL_SITE, F.HOUR1))
    assert not scope.fits and scope.fastest_fit is F.HOUR2
    assert scope.proposal() == "every 2 h fits: 1,116 calls/month of 2,000"
    assert scope.message() == (
        "SolarEdge (V2) allows 2,000 calls a month for this API key; every 1 hour needs 2,232; "
        "every 2 h fits: 1,116 calls/month of 2,000."
    )
    assert fastest_fitting(planned(FULL_SITE, F.HOUR1)) is F.HOUR2
    assert quota_plan.refusals(check(planned(FULL_SITE, F.HOUR2))) == {}


def test_an_enphase_watt_site_with_three_endpoints_fits_every_3_h() -> None:
    (scope,) = check(planned(ENPHASE_SITE, F.HOUR1, Provider.ENPHASE))
    assert (scope.calls_per_month, scope.fastest_fit) == (2_232, F.HOUR3)
    assert scope.message() == (
        "Enphase (Watt plan) allows 1,000 calls a month for this application; every 1 hour needs 2,232; "
        "every 3 h fits: 744 calls/month of 1,000."
    )
    # Daily: two requests of one day per endpoint (Enphase's longest window), 3 x 2 x 31.
    assert check(planned(ENPHASE_SITE, F.DAY1, Provider.ENPHASE))[0].calls_per_month == 186


def test_the_fastest_fit_counts_the_sources_of_other_sites() -> None:
    def fit(other: UpdateFrequency) -> UpdateFrequency | None:
        fixed = planned((("pv", "pv_w"),), other, site="200", editable=False)
        return fastest_fitting([*fixed, *planned(FULL_SITE, F.MIN15)])

    assert fit(F.HOUR1) is F.HOUR2  # 744 + 1,116
    assert fit(F.MIN30) is F.HOUR6  # 1,488 + 372 (2 h and 3 h would need 2,604 and 2,232)
    assert fit(F.MIN15) is None  # 2,976 already: nothing the new site does can fit
    assert fastest_fitting(planned((("pv", "pv_w"),), F.HOUR1)) is F.MIN30  # never slower than needed


@pytest.mark.parametrize("provider", [Provider.SOLAREDGE, Provider.SOLAREDGE_V1, Provider.ENPHASE])
def test_calls_never_grow_as_polling_slows(provider: Provider) -> None:
    """`fastest_fitting` relies on it: the slowest of each budget's fastest fit fits them all."""
    channels = [c for _, c in FULL_SITE] + ["soc_pct", "grid_export_w"]
    for size in range(1, len(channels) + 1):
        for chosen in itertools.combinations(channels, size):
            group = tuple((c, c) for c in chosen)
            daily = [check(planned(group, f, provider))[0].calls_per_day for f in quota_plan.FASTEST_FIRST]
            assert daily == sorted(daily, reverse=True), (provider, chosen, daily)


def test_a_poll_window_fits_the_requests_the_planner_counts() -> None:
    limits = {p: spec.max_window for p, spec in SPECS.items() if spec.max_window is not None}
    assert limits[Provider.SOLAREDGE] == timedelta(hours=12) and limits[Provider.ENPHASE] == timedelta(days=1)
    for frequency in F:
        for provider, longest in limits.items():
            span = poll_span(frequency.minutes) + SPECS[provider].window_alignment
            requests = windows_per_poll(provider, frequency)
            assert (requests - 1) * longest < span <= requests * longest, (provider, frequency)


# --- Save and config import against a real database --------------------------------------------------------------


def full_site_drafts(store: Store, frequency: str) -> tuple[cat.Site, list[SourceDraft]]:
    site = cat.create_site(store, SiteIn(name="Free tier", latitude=50.85, longitude=4.35, timezone="Europe/Brussels"))
    meters = {
        "pv": (cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD)), "solar"),
        "load": (cat.create_meter(store, site.id, MeterIn(name="Building", category=Category.CONS)), "load"),
        "grid": (cat.create_meter(store, site.id, MeterIn(name="Grid", category=Category.CONS)), "grid"),
        "battery": (cat.create_meter(store, site.id, MeterIn(name="Battery", category=Category.STOR)), "battery"),
    }
    drafts = []
    for name, (meter, source_type) in meters.items():
        draft = new_draft(f"new-{name}", meter.id, meter.category)
        draft.values |= {"name": name.title(), "capacity_kw": "5", "use_api": True, "api_provider": "solaredge"}
        draft.values |= {"system_id": "100", "update_frequency": frequency, "source_type": source_type}
        draft.secrets = {"api_key": KEY}
        drafts.append(draft)
    return site, drafts


def test_save_refuses_a_full_site_hourly_proposing_2_h_and_saves_it_at_2_h(store: Store, box: SecretBox) -> None:
    site, drafts = full_site_drafts(store, "1hour")
    with pytest.raises(SaveRejected) as refused:
        save_connections(store, box, site.id, drafts, set())
    proposal = "every 1 hour needs 2,232; every 2 h fits: 1,116 calls/month of 2,000."
    assert set(refused.value.errors) == {d.key for d in drafts}
    assert all(proposal in e["update_frequency"] for e in refused.value.errors.values())
    assert cat.load_catalog(store).sources == []  # nothing written
    for draft in drafts:
        draft.values["update_frequency"] = "2hour"
    save_connections(store, box, site.id, drafts, set())
    assert {s.api.update_frequency for s in cat.load_catalog(store).sources} == {F.HOUR2}


def import_file(frequency: str) -> dict[str, Any]:
    def meter(name: str, category: str, source_type: str) -> dict[str, Any]:
        api = {"enabled": True, "provider": "solaredge", "system_id": "100", "update_frequency": frequency}
        source = {"name": name, "source_type": source_type, "capacity_kw": 5, "carbon_intensity_g_per_kwh": 0}
        source |= {"cost_per_mwh": 0, "api": api, "credentials": {"api_key": KEY}}
        return {"name": name, "category": category, "sources": [source]}

    meters = [meter("PV", "PROD", "solar"), meter("Load", "CONS", "load"), meter("Grid", "CONS", "grid")]
    meters.append(meter("Battery", "STOR", "battery"))
    site = {"name": "Free tier", "latitude": 50.85, "longitude": 4.35, "timezone": "Europe/Brussels", "meters": meters}
    return {"version": 1, "sites": [site]}


def test_config_import_refuses_hourly_with_the_proposal_and_takes_daily(store: Store, box: SecretBox) -> None:
    with pytest.raises(ConfigImportError) as refused:
        import_config(store, box, import_file("1hour"))
    assert any("every 2 h fits: 1,116 calls/month of 2,000." in e for e in refused.value.errors)
    assert cat.load_catalog(store).sources == []
    import_config(store, box, import_file("1day"))
    assert {s.api.update_frequency for s in cat.load_catalog(store).sources} == {F.DAY1}
    refused_value = import_file("1day")
    refused_value["sites"][0]["meters"][0]["sources"][0]["api"]["update_frequency"] = "2days"
    with pytest.raises(ConfigImportError) as wrong:
        import_config(store, box, refused_value)
    assert any("'1day'" in e and "'12hour'" in e for e in wrong.value.errors)  # the allowed values are listed


# --- windows within the vendors' request limits, against the fakes ----------------------------------------------


def quarters_before(instant: datetime) -> int:
    """How many 15-minute intervals of the UTC grid start before `instant` (since the epoch)."""
    return -(-(instant - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(minutes=15))


@dataclass
class DailySite:
    """The fake V2 server's Chicago site (meters and a battery), read daily by PV, load and battery sources."""

    state: solaredge_v2.FakeState
    url: str
    source_ids: list[int]
    now: datetime  # the fake's clock follows it; it starts at the real time, as the sources' `created_at` does

    def poll(self, store: Store, box: SecretBox) -> None:
        """One collection pass at `now`, with a fresh ledger (the passes stand a simulated day apart)."""
        context = ProviderContext(Settings(solaredge_base_url=f"{self.url}/v2"), QuotaLedger())
        report = collect_once(store, box, context, self.now)
        assert [r.outcome for r in report.results] == ["ok"], report.results[0].error


@pytest.fixture
def daily_site(store: Store, box: SecretBox) -> Iterator[DailySite]:
    site = cat.create_site(store, SiteIn(name="Office", latitude=41.88, longitude=-87.63, timezone="America/Chicago"))
    drafts = []
    for key, category, source_type in (
        ("pv", Category.PROD, "solar"),
        ("load", Category.CONS, "load"),
        ("battery", Category.STOR, "battery"),
    ):
        meter = cat.create_meter(store, site.id, MeterIn(name=key.title(), category=category))
        draft = new_draft(f"new-{key}", meter.id, category)
        draft.values |= {"name": key.title(), "capacity_kw": "7.6", "use_api": True, "api_provider": "solaredge"}
        draft.values |= {"system_id": "1234567", "update_frequency": "1day", "source_type": source_type}
        draft.secrets = {"api_key": solaredge_v2.SANDBOX_API_KEY}
        drafts.append(draft)
    save_connections(store, box, site.id, drafts, set())
    ids = [s.id for s in cat.load_catalog(store).sources]
    holder: list[DailySite] = []
    state = solaredge_v2.FakeState(clock=lambda: holder[0].now, per_minute_limit=100)
    with serve(solaredge_v2.create_app(state)) as url:
        holder.append(DailySite(state, url, ids, datetime.now(UTC).replace(second=0, microsecond=0)))
        yield holder[0]


def test_a_daily_v2_poll_reads_its_window_in_requests_of_at_most_12_h(
    store: Store, box: SecretBox, daily_site: DailySite
) -> None:
    first_pass = daily_site.now
    daily_site.poll(store, box)
    # The next poll comes a day later, plus the scheduler's largest jitter (2 h 24 min): the longest regular window.
    daily_site.now = first_pass + timedelta(minutes=1_440 + 144)
    state, before = daily_site.state, daily_site.state.calls_total
    daily_site.poll(store, box)
    assert state.largest_window <= timedelta(hours=12)  # never a span over the vendor's limit (it would answer 400)
    per_request = quota_plan.calls_per_poll(Provider.SOLAREDGE, {"pv_w", "load_w", "battery_w"})
    assert per_request == 3 and windows_per_poll(Provider.SOLAREDGE, F.DAY1) == 3
    assert state.calls_total - before == 3 * 3  # exactly what the planner counts for a daily poll
    lower, upper = first_pass - timedelta(hours=20), daily_site.now - timedelta(hours=1)
    with store.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT source_id, count(DISTINCT ts), count(*) FROM readings WHERE ts >= ? AND ts < ?"
            " GROUP BY source_id ORDER BY source_id",
            [lower, upper],
        ).fetchall()
    expected = quarters_before(upper) - quarters_before(lower)  # the 15-minute intervals starting in [lower, upper)
    # No hole between the two polls, nothing twice: every 15-minute interval of every channel is stored once.
    assert [tuple(r) for r in rows] == [(sid, expected, expected) for sid in daily_site.source_ids]


def test_an_enphase_daily_window_is_read_one_day_per_request() -> None:
    app, harness = enphase.make_harness()
    with serve(app) as url:
        client = harness.client(url)
        _, end = harness.history_range()
        start = end - poll_span(F.DAY1.minutes)
        before = harness.calls_served()
        frame = client.history(start, end)
        client.close()
    requests = windows_per_poll(Provider.ENPHASE, F.DAY1)
    assert requests == 2 and harness.calls_served() - before == requests * len(DEFAULT_ENDPOINTS)
    assert harness.state.largest_window <= timedelta(days=1)
    pv = frame.filter(frame["channel"] == "pv_w")["ts"]
    first = start + (-(start - end) % FIVE)  # the first 5-minute interval starting in the window (`end` is on the grid)
    assert (pv.min(), pv.max(), pv.n_unique()) == (first, end - timedelta(minutes=5), (end - first) // FIVE)


# --- the data's age: API Health and the no-data alert -------------------------------------------------------------

NOW = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)


def polled_source(store: Store, box: SecretBox, frequency: UpdateFrequency, last_poll: datetime) -> int:
    site = cat.create_site(store, SiteIn(name="Farm", latitude=50.85, longitude=4.35, timezone="Europe/Brussels"))
    meter = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    api = ApiSettings(use_api=True, api_provider=Provider.SOLAREDGE, system_id="100", update_frequency=frequency)
    row = SourceIn(
        name="Roof", source_type="solar", capacity_kw=5, carbon_intensity_g_per_kwh=0, cost_per_mwh=0, api=api
    )
    with store.transaction() as con:
        source_id = cat.insert_source(con, meter.id, row)
        put_secret(con, box, source_id, "api_key", KEY)
        con.execute(
            "INSERT INTO source_state (source_id, bookmark_ts, updated_at) VALUES (?, ?, ?)",
            [source_id, last_poll - timedelta(hours=1), last_poll],
        )
    return source_id


@pytest.mark.parametrize(
    ("frequency", "since", "status", "note"),
    [
        (F.HOUR6, timedelta(hours=1), "ok", "every 6 h"),
        (F.HOUR6, timedelta(hours=6, minutes=37), "ok", "every 6 h"),  # within its period and jitter
        (F.HOUR6, timedelta(hours=6, minutes=39), "overdue", "overdue: is the collector running?"),
        (F.DAY1, timedelta(hours=25), "ok", "every 24 h"),
        (F.HOUR1, timedelta(hours=1, minutes=9), "overdue", "overdue: is the collector running?"),
    ],
)
def test_api_health_judges_a_source_late_only_after_its_own_period(
    store: Store, box: SecretBox, frequency: UpdateFrequency, since: timedelta, status: str, note: str
) -> None:
    polled_source(store, box, frequency, NOW - since)
    health = load_health(store, box, NOW)
    [row] = health.sources.to_dicts()
    assert (row["status"], row["next_poll_note"]) == (status, note)
    shown = source_table(health.sources, NOW).to_dicts()[0]
    assert shown["Status"] == {"ok": "OK", "overdue": "Overdue"}[status]  # words, no emoji


def test_the_no_data_alert_waits_twice_a_daily_period(store: Store, box: SecretBox, daily_site: DailySite) -> None:
    polled = daily_site.now
    daily_site.poll(store, box)
    thresholds = Thresholds.from_settings(Settings())

    def no_data_alerts(at: datetime) -> list[tuple[int, str]]:
        evaluate(store, thresholds, at)
        with store.connect(read_only=True) as con:
            sql = "SELECT source_id, message FROM alerts WHERE rule = 'no_data' AND status = 'open' ORDER BY 1"
            return [(int(r[0]), str(r[1])) for r in con.sql(sql).fetchall()]

    assert no_data_alerts(polled + timedelta(hours=26)) == []  # a daily source is not late after a day and more
    late = no_data_alerts(polled + timedelta(hours=49))
    assert [sid for sid, _ in late] == daily_site.source_ids
    assert all("(expected every 24 h)" in message for _, message in late)


def test_the_api_health_page_marks_statuses_with_words_icons_and_colours(app_env: Path) -> None:
    """A source polled every 6 h, last 2 h ago, is OK on the page; status counts are badges with Material icons."""
    runtime = open_runtime(load_settings())
    with runtime.store.transaction() as con:
        site = cat.read_catalog(con).sites[0]
        meter = cat.insert_meter(con, site.id, MeterIn(name="SolarEdge PV", category=Category.PROD))
        api = ApiSettings(use_api=True, api_provider=Provider.SOLAREDGE, system_id="100", update_frequency=F.HOUR6)
        row = SourceIn(
            name="Slow Roof", source_type="solar", capacity_kw=5, carbon_intensity_g_per_kwh=0, cost_per_mwh=0, api=api
        )
        source_id = cat.insert_source(con, meter, row)
        put_secret(con, runtime.box, source_id, "api_key", KEY)
        con.execute(
            "INSERT INTO source_state (source_id, updated_at) VALUES (?, ?)",
            [source_id, datetime.now(UTC) - timedelta(hours=2)],
        )
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("pages/api_health.py").run()
    assert not app.exception
    sources = app.dataframe[1].value.set_index("Source")
    assert sources.loc["Slow Roof", "Status"] == "OK"
    assert sources.loc["Slow Roof", "Next poll"].endswith("· every 6 h")
    badges = [m.value for m in app.markdown if "-badge[" in m.value]
    assert badges == [
        ":gray-badge[:material/hourglass_empty: First poll pending: 6] :green-badge[:material/check_circle: OK: 1]"
    ]  # most urgent first
    shown = " ".join([m.value for m in app.markdown] + [str(v) for v in sources["Status"]])
    assert not EMOJI.search(shown)


# --- a slow site that fails is tried again at its backoff times, not a whole period later ---------------------


def _daily_london(tmp_path: Path, base_url: str) -> tuple[Collector, GroupKey]:
    settings = Settings(
        db_path=tmp_path / "dataconn.duckdb",
        key_file=tmp_path / "secret.key",
        seed_demo=False,
        solaredge_base_url=f"{base_url}/v2",
    )
    runtime = open_runtime(settings)
    london_roof(runtime.store, runtime.box, solaredge_v2.SANDBOX_API_KEY)
    source = cat.load_catalog(runtime.store).sources[0]
    with runtime.store.transaction() as con:  # a daily source: 279 calls a month for a full V2 site
        con.execute('UPDATE energy_sources SET metadata = json_merge_patch(metadata, \'{"updateFrequency": "1day"}\')')
    collector = Collector(runtime)
    key: GroupKey = ("solaredge", source.api.system_id)
    collector.intervals[key] = UpdateFrequency.DAY1.minutes  # as `sync` schedules it
    return collector, key


def test_a_daily_site_that_fails_is_retried_at_its_backoff_until_its_circuit_opens(tmp_path: Path) -> None:
    state = solaredge_v2.FakeState()
    with serve(solaredge_v2.create_app(state)) as url:
        collector, key = _daily_london(tmp_path, url)
        try:
            state.failures.fail_next("5xx", 1)
            before = datetime.now(UTC)
            collector._poll(key)
            when = collector.retry_at[key]
            # The first backoff: 1 minute, jittered by up to 20 %; not the next day.
            assert before + timedelta(seconds=47) <= when <= datetime.now(UTC) + timedelta(seconds=73)

            # Due: the next sync polls it (its backoff is moved into the past, as if the minute had gone by).
            with collector.runtime.store.transaction() as con:
                con.execute("UPDATE source_state SET next_due_at = now() - INTERVAL 1 SECOND")
            collector.retry_at[key] = datetime.now(UTC) - timedelta(seconds=1)
            collector._sync()
            collector.executor.shutdown(wait=True)
            assert key not in collector.retry_at  # it succeeded: nothing more to bring forward
            with collector.runtime.store.connect(read_only=True) as con:
                outcomes = [r[0] for r in con.sql("SELECT outcome FROM collector_runs ORDER BY id").fetchall()]
            assert outcomes == ["connection_error", "ok"]
        finally:
            collector.executor.shutdown(wait=False)


def test_an_open_circuit_or_an_hourly_site_waits_for_its_slot() -> None:
    now = datetime(2026, 12, 3, 9, 40, tzinfo=UTC)
    failed = GroupResult(source_ids=[1], provider="solaredge", started_at=now, outcome="connection_error")
    closed = {1: SourceState(None, None, False, 2, now + timedelta(minutes=2), "closed")}
    opened = {1: SourceState(None, None, False, 5, now + timedelta(minutes=30), "open")}
    assert early_retry(timedelta(days=1), failed, closed) == now + timedelta(minutes=2)
    assert early_retry(timedelta(days=1), failed, opened) is None  # bounded: an outage costs at most 4 extra polls
    assert early_retry(timedelta(hours=1), failed, closed) is None  # back within the hour anyway
    limited = GroupResult(source_ids=[1], provider="solaredge", started_at=now, outcome="rate_limited")
    assert early_retry(timedelta(days=1), limited, closed) is None  # no retry time given: its next slot


def test_a_slow_site_refused_by_a_per_minute_limit_is_polled_when_the_limit_ends() -> None:
    now = datetime(2026, 12, 3, 9, 40, tzinfo=UTC)
    minute = now + timedelta(seconds=40)  # the minute's budget, spent by the sites polled together, ends
    limited = GroupResult([1], "enphase", now, outcome="rate_limited", retry_at=minute)
    assert early_retry(timedelta(hours=6), limited, {}) == minute  # not 6 h later
    assert early_retry(timedelta(hours=1), limited, {}) is None  # back within the hour anyway
    month = GroupResult([1], "enphase", now, outcome="rate_limited", retry_at=now + timedelta(days=9))
    assert early_retry(timedelta(hours=6), month, {}) is None  # a spent monthly budget: the slots wait it out
