"""API health figures and the coverage heatmap, on crafted collector runs, states, quota counts and readings in a
real temporary DuckDB. Every expected value below is worked out by hand from the crafted rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from pydantic import SecretStr

from core.analytics.api_accounts import Member, ledger_scope
from core.analytics.api_health import Health, load_health, next_poll
from core.analytics.api_health_display import account_table, quota_text, source_table, span, status_counts
from core.analytics.coverage import heatmap, hover_text, load_coverage
from core.analytics.export import to_bytes
from core.catalog.catalog import insert_meter, insert_site, insert_source
from core.models import ApiSettings, Category, MeterIn, Provider, Site, SiteIn, SourceIn, UpdateFrequency
from core.providers.enphase.client import EnphaseClient
from core.providers.enphase.oauth import Tokens
from core.providers.solaredge_v1.client import SolarEdgeV1Client
from core.providers.solaredge_v2.client import SolarEdgeV2Client
from core.store import rollups
from core.store.crypto import SecretBox
from core.store.oauth_tokens import TOKENS_SECRET, encode_tokens
from core.store.quota_store import StoredQuotaLedger
from core.store.readings_store import INGEST_SCHEMA, ingest
from core.store.secret_store import put_secret
from core.store.source_state import SourceState
from core.store.store import Store
from tests.providers.token_stores import InMemoryTokenStore

NOW = datetime(2026, 10, 27, 12, 0, tzinfo=UTC)  # 13:00 in Brussels, two days after the 25-hour DST day
KEY_V2 = "v2-secret-key-AAAA"
KEY_V1 = "v1-secret-key-BBBB"
ENPHASE_APP_KEY = "enph-app-key-CCCC"
ENPHASE_CLIENT_SECRET = "enph-client-secret-DDDD"
ACCESS_TOKEN, REFRESH_TOKEN = "enph-access-EEEE", "enph-refresh-FFFF"
SECRETS = (KEY_V2, KEY_V1, ENPHASE_APP_KEY, ENPHASE_CLIENT_SECRET, ACCESS_TOKEN, REFRESH_TOKEN)


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def api(provider: Provider, system_id: str = "", frequency: UpdateFrequency = UpdateFrequency.HOUR1, **extra: str):  # type: ignore[no-untyped-def]
    return ApiSettings(use_api=True, api_provider=provider, system_id=system_id, update_frequency=frequency, **extra)


def add_source(con, meter_id: int, name: str, source_type: str, settings: ApiSettings) -> int:  # type: ignore[no-untyped-def]
    source = SourceIn(
        name=name, source_type=source_type, capacity_kw=10, carbon_intensity_g_per_kwh=0, cost_per_mwh=0, api=settings
    )
    return insert_source(con, meter_id, source)


@pytest.fixture
def fleet(store: Store, box: SecretBox) -> dict[str, int]:
    """One Brussels site: two SolarEdge V2 vendor sites on one key (A and B share site 1001, C reads 1002), a V1
    source, a simulated one, an Enphase one and one without API; with runs, states, quota counts and secrets."""
    with store.transaction() as con:
        site = insert_site(con, SiteIn(name="Ghent", latitude=51.05, longitude=3.72, timezone="Europe/Brussels"))
        prod = insert_meter(con, site, MeterIn(name="PV", category=Category.PROD))
        cons = insert_meter(con, site, MeterIn(name="Consumption", category=Category.CONS))
        inj = insert_meter(con, site, MeterIn(name="Injection", category=Category.INJ))
        ids = {
            "A": add_source(con, prod, "East PV", "solar", api(Provider.SOLAREDGE, "1001")),
            "B": add_source(con, cons, "East Grid", "grid", api(Provider.SOLAREDGE, "1001")),
            "C": add_source(con, prod, "West PV", "solar", api(Provider.SOLAREDGE, "1002")),
            "D": add_source(con, prod, "Legacy PV", "solar", api(Provider.SOLAREDGE_V1, "2001")),
            "E": add_source(con, cons, "Sim Load", "load", api(Provider.SIMULATOR, frequency=UpdateFrequency.MIN15)),
            "F": add_source(con, prod, "Enphase PV", "solar", api(Provider.ENPHASE, "3001", client_id="enph-client-1")),
            "G": add_source(con, inj, "Manual Export", "grid", ApiSettings(use_api=False)),
        }
        for name in ("A", "B", "C"):
            put_secret(con, box, ids[name], "api_key", KEY_V2)
        put_secret(con, box, ids["D"], "api_key", KEY_V1)
        put_secret(con, box, ids["F"], "app_api_key", ENPHASE_APP_KEY)
        put_secret(con, box, ids["F"], "client_secret", ENPHASE_CLIENT_SECRET)
        grant = Tokens(
            SecretStr(ACCESS_TOKEN), SecretStr(REFRESH_TOKEN), NOW + timedelta(hours=20), NOW + timedelta(days=6)
        )
        put_secret(con, box, ids["F"], TOKENS_SECRET, encode_tokens(grant))
        # Settings and credentials last changed a month ago: a stop recorded since holds (core.collect.source_health).
        con.execute("UPDATE energy_sources SET updated_at = ?", [ago(days=30)])
        con.execute("UPDATE source_secrets SET updated_at = ?", [ago(days=30)])

        leaked = f"echoed {KEY_V2} in https://x.example/?api_key={KEY_V2}"
        vendor_site_1001 = [  # (started_at, duration_ms, outcome, http_status, error): A and B get the same rows
            (ago(minutes=20), 100, "ok", 200, None),
            (ago(hours=2), 200, "ok", 200, None),
            (ago(hours=3), 300, "connection_error", 429, leaked),
            (ago(hours=4), 500, "rate_limited", 429, "SolarEdge answered 429"),
            (ago(hours=5), 1000, "ok", 200, None),
            (ago(hours=6), 9999, "skipped", None, None),  # not a poll
            (ago(hours=25), 5000, "ok", 200, None),  # older than 24 h
            (ago(hours=30), 50, "auth_error", 401, "older error"),
        ]
        runs = [(ids[n], "solaredge", *row) for row in vendor_site_1001 for n in ("A", "B")]
        runs += [
            (ids["C"], "solaredge", ago(minutes=90), 50, "ok", 200, None),
            (ids["C"], "solaredge", ago(minutes=150), 150, "ok", 200, None),
            (ids["D"], "solaredge_v1", ago(minutes=10), 80, "auth_error", 403, f"SolarEdge V1 refused {KEY_V1}"),
            (ids["D"], "solaredge_v1", ago(days=8), 80, "ok", 200, None),  # beyond the 7-day lookback
            (ids["E"], "simulator", ago(hours=3), 40, "ok", None, None),
            (ids["F"], "enphase", ago(days=2), 120, "ok", 200, None),  # found by the older-success lookup
            (ids["F"], "enphase", ago(hours=1), 30, "rate_limited", 429, "Enphase monthly limit reached"),
        ]
        con.executemany(
            "INSERT INTO collector_runs (source_id, provider, started_at, duration_ms, outcome, http_status, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            runs,
        )
        states = [  # (source, failures, circuit, next_due_at, retry_at, stopped_reason, updated_at = last poll)
            (ids["A"], 0, "closed", None, None, None, ago(minutes=20)),
            (ids["B"], 0, "closed", None, None, None, ago(minutes=20)),
            (ids["C"], 5, "open", NOW + timedelta(minutes=25), None, None, ago(minutes=5)),
            (ids["D"], 1, "closed", None, None, f"SolarEdge V1 rejected the API key {KEY_V1} (403)", ago(minutes=10)),
            (ids["E"], 0, "closed", None, None, None, ago(hours=3)),
            (ids["F"], 1, "closed", None, NOW + timedelta(hours=3), None, ago(hours=1)),
        ]
        con.executemany(
            "INSERT INTO source_state (source_id, consecutive_failures, circuit, next_due_at, retry_at,"
            " stopped_reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            states,
        )
        v2 = ledger_scope(Provider.SOLAREDGE, {"api_key": SecretStr(KEY_V2)})
        v1 = ledger_scope(Provider.SOLAREDGE_V1, {"api_key": SecretStr(KEY_V1)})
        enphase = ledger_scope(Provider.ENPHASE, {"app_api_key": SecretStr(ENPHASE_APP_KEY)})
        usage = [
            ("SolarEdge", v2, "month", datetime(2026, 10, 1, tzinfo=UTC), 120),
            ("SolarEdge", v2, "minute", ago(hours=1), 2),
            ("SolarEdge", v2, "minute", ago(hours=2), 1),
            ("SolarEdge", v2, "minute", ago(days=1), 5),  # yesterday
            ("SolarEdge", v2, "month", datetime(2026, 9, 1, tzinfo=UTC), 999),  # last month
            ("SolarEdge", "another-account", "month", datetime(2026, 10, 1, tzinfo=UTC), 500),
            ("SolarEdge V1", v1, "day", datetime(2026, 10, 27, tzinfo=UTC), 40),
            ("SolarEdge V1", v1, "day", datetime(2026, 10, 26, tzinfo=UTC), 60),
            ("SolarEdge V1", v1, "day", datetime(2026, 9, 30, tzinfo=UTC), 77),  # last month
            ("SolarEdge V1", "2001", "day", datetime(2026, 10, 27, tzinfo=UTC), 10),  # the site's own budget
            ("Enphase", enphase, "month", datetime(2026, 10, 1, tzinfo=UTC), 250),
            ("Enphase", enphase, "minute", ago(minutes=30), 4),
        ]
        con.executemany(
            "INSERT INTO quota_usage (provider, scope_key, period, bucket_start, calls) VALUES (?, ?, ?, ?, ?)", usage
        )
    return ids


@pytest.fixture
def health(store: Store, box: SecretBox, fleet: dict[str, int]) -> Health:
    return load_health(store, box, NOW)


def row(frame: pl.DataFrame, column: str, value: object) -> dict:  # type: ignore[type-arg]
    rows = frame.filter(pl.col(column) == value).rows(named=True)
    assert len(rows) == 1, rows
    return rows[0]


# --- per source ------------------------------------------------------------------------------------------------


def test_poll_figures_cover_the_last_24_hours_only(health: Health, fleet: dict[str, int]) -> None:
    east = row(health.sources, "source_id", fleet["A"])
    # Polls at -20 min, -2, -3, -4, -5 h; the skipped row and the runs at -25 h and -30 h do not count.
    assert (east["polls_24h"], east["ok_24h"]) == (5, 3)
    assert east["success_pct"] == pytest.approx(60.0)
    # Durations 100, 200, 300, 500, 1000 ms: median 300; p95 at rank 0.95 * 4 = 3.8 -> 500 + 0.8 * 500 = 900.
    assert east["p50_ms"] == pytest.approx(300.0)
    assert east["p95_ms"] == pytest.approx(900.0)
    # One rate_limited outcome and one connection error whose HTTP status was 429.
    assert east["rate_limited_24h"] == 2
    assert row(health.sources, "source_id", fleet["B"])["p95_ms"] == pytest.approx(900.0)  # same vendor site

    west = row(health.sources, "source_id", fleet["C"])
    # 50 and 150 ms: median 100; p95 = 50 + 0.95 * 100 = 145.
    assert (west["polls_24h"], west["success_pct"], west["p50_ms"], west["p95_ms"]) == (2, 100.0, 100.0, 145.0)


def test_last_success_and_last_error(health: Health, fleet: dict[str, int]) -> None:
    east = row(health.sources, "source_id", fleet["A"])
    assert east["last_success_at"] == ago(minutes=20)
    assert east["last_error_at"] == ago(hours=3)
    assert (east["last_error_outcome"], east["last_error_http_status"]) == ("connection_error", 429)
    assert east["last_error"] == "echoed *** in https://x.example/?api_key=***"

    legacy = row(health.sources, "source_id", fleet["D"])
    assert legacy["last_success_at"] is None  # its only success is 8 days old, beyond the lookback
    assert legacy["last_error"] == "SolarEdge V1 refused ***"
    enphase = row(health.sources, "source_id", fleet["F"])
    assert enphase["last_success_at"] == ago(days=2)  # none in the last 24 h: looked up further back
    assert (enphase["polls_24h"], enphase["ok_24h"], enphase["rate_limited_24h"]) == (1, 0, 1)


def test_quota_today_and_this_month_against_the_budgets(health: Health, fleet: dict[str, int]) -> None:
    def quota(name: str) -> tuple:  # type: ignore[type-arg]
        r = row(health.sources, "source_id", fleet[name])
        return r["quota_today_used"], r["quota_today_budget"], r["quota_month_used"], r["quota_month_budget"]

    # V2: 2 + 1 calls in today's minute buckets (not yesterday's 5); 120 this month of 2,000 credits.
    assert quota("A") == quota("B") == quota("C") == (3, None, 120, 2000)
    # V1: today's account bucket of 40 against 300 a day; the month adds yesterday's 60 (not September's 77).
    assert quota("D") == (40, 300, 100, None)
    assert quota("F") == (4, None, 250, 1000)  # Enphase Watt plan: 1,000 a month
    assert quota("E") == (None, None, None, None)
    assert row(health.sources, "source_id", fleet["E"])["metered"] is False

    shown = source_table(health.sources, NOW)
    assert row(shown, "Source", "East PV")["Quota today (UTC)"] == "3 (no daily limit)"
    assert row(shown, "Source", "East PV")["Quota this month"] == "120 / 2,000 (6%)"
    assert row(shown, "Source", "Legacy PV")["Quota today (UTC)"] == "40 / 300 (13%)"
    assert row(shown, "Source", "Legacy PV")["Quota this month"] == "100 (no monthly limit)"
    assert row(shown, "Source", "Enphase PV")["Quota this month"] == "250 / 1,000 (25%)"
    assert row(shown, "Source", "Sim Load")["Quota today (UTC)"] == "no limit"
    assert row(shown, "Source", "Manual Export")["Quota today (UTC)"] == "-"


def test_scope_keys_match_what_the_clients_count_under(store: Store, fleet: dict[str, int]) -> None:
    """The crafted counts were written under `ledger_scope`; the real clients read the same buckets back."""
    ledger = StoredQuotaLedger(store)
    v2 = SolarEdgeV2Client(SecretStr(KEY_V2), "1001", ledger=ledger)
    v1 = SolarEdgeV1Client(SecretStr(KEY_V1), "2001", ledger=ledger)
    enphase = EnphaseClient(
        client_id="enph-client-1",
        client_secret=SecretStr(ENPHASE_CLIENT_SECRET),
        api_key=SecretStr(ENPHASE_APP_KEY),
        system_id="3001",
        token_store=InMemoryTokenStore(),
        ledger=ledger,
    )
    try:
        assert v2.quota_snapshot(NOW) == (120, 1880)
        # The account's 40 (260 left) is tighter than the site's 10 (290 left): the account key matched.
        assert v1.quota_snapshot(NOW) == (40, 260)
        assert enphase.quota_snapshot(NOW) == (250, 750)
    finally:
        for client in (v2, v1, enphase):
            client.close()


def test_circuit_status_and_next_poll(health: Health, fleet: dict[str, int]) -> None:
    def state(name: str) -> tuple:  # type: ignore[type-arg]
        r = row(health.sources, "source_id", fleet[name])
        return r["status"], r["circuit"], r["next_poll_at"]

    assert state("A") == ("ok", "closed", ago(minutes=20) + timedelta(hours=1))
    assert state("C") == ("circuit_open", "open", NOW + timedelta(minutes=25))
    assert state("D") == ("stopped", "closed", None)
    assert state("E") == ("overdue", "closed", ago(hours=3) + timedelta(minutes=15))
    assert state("F") == ("rate_limited", "closed", NOW + timedelta(hours=3))
    assert state("G") == ("off", None, None)
    legacy = row(health.sources, "source_id", fleet["D"])
    assert legacy["next_poll_note"] == "stopped until its settings change: SolarEdge V1 rejected the API key *** (403)"

    shown = source_table(health.sources, NOW)
    assert row(shown, "Source", "East PV")["Next poll"] == "2026-10-27 13:40 CET (in 40 min) · every 1 hour"
    assert row(shown, "Source", "West PV")["Circuit"] == "open (5 failed in a row)"
    assert row(shown, "Source", "West PV")["Status"] == "Circuit open"
    assert row(shown, "Source", "Sim Load")["Status"] == "Overdue"
    assert row(shown, "Source", "Manual Export")["Status"] == "API off"
    assert status_counts(health.sources) == {
        "Stopped": 1,
        "Circuit open": 1,
        "Rate limited": 1,
        "Overdue": 1,
        "OK": 2,
        "API off": 1,
    }


def test_next_poll_while_backing_off_and_before_the_first_poll() -> None:
    site = Site(id=1, name="S", latitude=0, longitude=0, timezone="UTC")
    member = Member(site, "solaredge/1", "solaredge:x", 15)
    backing_off = SourceState(None, None, False, failures=2, next_due_at=NOW + timedelta(minutes=2))
    assert next_poll(member, backing_off, ago(minutes=1), None, NOW) == (
        "failing",
        NOW + timedelta(minutes=2),
        "backing off after 2 failure(s)",
    )
    assert next_poll(member, None, None, None, NOW)[0] == "waiting"
    # Due at -1 min; within the jitter (1 min) and grace (2 min) it is not overdue yet.
    assert next_poll(member, SourceState(None, None, False), ago(minutes=16), None, NOW)[0] == "ok"


def test_token_expiry_for_enphase_only(health: Health, fleet: dict[str, int]) -> None:
    enphase = row(health.sources, "source_id", fleet["F"])
    assert enphase["token_expires_at"] == NOW + timedelta(hours=20)
    assert enphase["refresh_expires_at"] == NOW + timedelta(days=6)
    shown = source_table(health.sources, NOW)
    assert row(shown, "Source", "Enphase PV")["Token expiry"] == "2026-10-28 09:00 CET (in 20 h)"
    assert row(shown, "Source", "Enphase PV")["Refresh token expiry"] == "2026-11-02 13:00 CET (in 6 d)"
    assert row(shown, "Source", "East PV")["Token expiry"] == "n/a"


# --- per account -----------------------------------------------------------------------------------------------


def test_accounts_count_each_vendor_site_poll_once(health: Health) -> None:
    accounts = health.accounts
    assert accounts["account"].to_list() == [
        "SolarEdge (V2) account 1",
        "SolarEdge V1 account 1",
        "Simulator (built-in)",
        "Enphase (Watt plan) app enph-client-1",
    ]
    v2 = row(accounts, "account", "SolarEdge (V2) account 1")
    assert (v2["vendor_sites"], v2["sources"], v2["needing_attention"], v2["circuits_open"]) == (2, 3, 1, 1)
    # Site 1001's 5 polls (A and B's rows counted once) and site 1002's 2: 5 successes of 7.
    assert (v2["polls_24h"], v2["ok_24h"], v2["rate_limited_24h"]) == (7, 5, 2)
    assert v2["success_pct"] == pytest.approx(500 / 7)
    # 50, 100, 150, 200, 300, 500, 1000: median 200; p95 at rank 0.95 * 6 = 5.7 -> 500 + 0.7 * 500 = 850.
    assert (v2["p50_ms"], v2["p95_ms"]) == pytest.approx((200.0, 850.0))
    assert v2["last_error"] == "echoed *** in https://x.example/?api_key=***"
    assert (v2["quota_month_used"], v2["quota_month_budget"]) == (120, 2000)

    shown = account_table(accounts, NOW)
    assert row(shown, "Account", "Simulator (built-in)")["Quota this month"] == "no limit"
    assert row(shown, "Account", "Enphase (Watt plan) app enph-client-1")["Token expiry"] == (
        "2026-10-28 08:00 UTC (in 20 h)"
    )


def test_no_secret_leaves_the_module(health: Health) -> None:
    for frame in (
        health.sources,
        health.accounts,
        source_table(health.sources, NOW),
        account_table(health.accounts, NOW),
    ):
        text = to_bytes(frame, "csv").decode()
        assert not [secret for secret in SECRETS if secret in text]
    scope = ledger_scope(Provider.SOLAREDGE, {"api_key": SecretStr(KEY_V2)})
    assert scope is not None and scope not in to_bytes(health.accounts, "csv").decode()  # not even the fingerprint


def test_display_rules() -> None:
    assert [span(s) for s in (45, 600, 3 * 3600 + 300, 2 * 86400 + 7200, 4 * 86400)] == [
        "45 s",
        "10 min",
        "3 h 5 min",
        "2 d 2 h",
        "4 d",
    ]
    assert quota_text(150, 300, True, "daily") == "150 / 300 (50%)"
    assert quota_text(None, None, False, "daily") == "no limit"
    assert quota_text(None, 300, True, "daily") == "-"
    assert quota_text(None, None, None, "daily") == "-"


# --- coverage --------------------------------------------------------------------------------------------------


def readings(source_id: int, start: datetime, end: datetime, value: float | None = 1000.0) -> pl.DataFrame:
    count = int((end - start).total_seconds() // 900)
    return pl.DataFrame(
        {
            "source_id": [source_id] * count,
            "ts": [start + timedelta(minutes=15 * i) for i in range(count)],
            "interval_s": [900] * count,
            "value": [value] * count,
            "is_final": [True] * count,
        },
        schema=INGEST_SCHEMA,
    )


def utc(day: int, hour: int) -> datetime:
    return datetime(2026, 10, day, hour, tzinfo=UTC)


@pytest.fixture
def coverage_site(store: Store) -> dict[str, int]:
    """S1 starts on Friday 23 Oct at 10:00 local, misses two hours on the 24th (one without rows, one with empty
    values), has the whole 25-hour DST day, nothing on the 26th and today up to now. S2 has no reading at all.
    S3 started before the window and stopped at the end of the 23rd."""
    with store.transaction() as con:
        site = insert_site(con, SiteIn(name="Coverage", latitude=50.85, longitude=4.35, timezone="Europe/Brussels"))
        meter = insert_meter(con, site, MeterIn(name="PV", category=Category.PROD))
        ids = {name: add_source(con, meter, name, "solar", ApiSettings()) for name in ("S1", "S2", "S3")}
        ids["site"] = site
        batches = [
            readings(ids["S1"], utc(23, 8), utc(24, 10)),  # 23 Oct 10:00 CEST onwards
            readings(ids["S1"], utc(24, 11), utc(24, 12), value=None),  # the vendor said "no data"
            readings(ids["S1"], utc(24, 12), utc(25, 23)),  # to the end of the DST day (25 Oct 24:00 CET)
            readings(ids["S1"], utc(26, 23), NOW),  # today, 27 Oct from 00:00 CET up to now
            readings(ids["S3"], utc(20, 0), utc(23, 22)),
        ]
        for batch in batches:
            ingest(con, batch, NOW)
        rollups.refresh(con, list(ids.values()), utc(19, 0), NOW)
    return ids


def test_coverage_counts_per_local_day_with_a_dst_day_and_a_gap(store: Store, coverage_site: dict[str, int]) -> None:
    frame = load_coverage(store, NOW, days=5, site_id=coverage_site["site"])
    s1 = frame.filter(pl.col("source_id") == coverage_site["S1"])
    assert s1["day"].to_list() == [date(2026, 10, d) for d in (23, 24, 25, 26, 27)]
    assert s1["day_hours"].to_list() == [24.0, 24.0, 25.0, 24.0, 24.0]
    # 23rd from its first reading (08:00 UTC) to midnight CEST (22:00 UTC); 24th whole; 25 h DST day; 26th whole;
    # today from midnight CET (23:00 UTC) to now (12:00 UTC).
    assert s1["expected_s"].to_list() == [14 * 3600, 86400, 90000, 86400, 13 * 3600]
    # The 24th misses one hour without rows; the hour of NULL rows was answered by the vendor, so it is received.
    assert s1["received_s"].to_list() == [14 * 3600, 23 * 3600, 90000, 0, 13 * 3600]
    assert s1["coverage_pct"].to_list() == pytest.approx([100.0, 100 * 23 / 24, 100.0, 0.0, 100.0])
    assert s1["expected_intervals"].to_list() == [56, 96, 100, 96, 52]
    assert s1["received_intervals"].to_list() == [56, 92, 100, 0, 52]

    s2 = frame.filter(pl.col("source_id") == coverage_site["S2"])  # never read: whole days expected
    assert s2["expected_s"].to_list() == [86400, 86400, 90000, 86400, 13 * 3600]
    assert s2["coverage_pct"].to_list() == [0.0] * 5
    assert s2["expected_intervals"].null_count() == 5  # no interval to count in

    s3 = frame.filter(pl.col("source_id") == coverage_site["S3"])  # started before the window: whole first day
    assert s3["coverage_pct"].to_list() == [100.0, 0.0, 0.0, 0.0, 0.0]


def test_heatmap_rows_days_and_hover(store: Store, coverage_site: dict[str, int]) -> None:
    frame = load_coverage(store, NOW, days=5, site_id=coverage_site["site"])
    labels, days, values, texts = heatmap(frame)
    assert labels == [f"S1 (#{coverage_site['S1']})", f"S2 (#{coverage_site['S2']})", f"S3 (#{coverage_site['S3']})"]
    assert days == [date(2026, 10, d) for d in (23, 24, 25, 26, 27)]
    assert values[0] == pytest.approx([100.0, 100 * 23 / 24, 100.0, 0.0, 100.0])
    assert texts[0][1] == "92 / 96 intervals (15 min), 95.8 % · 24 h day"
    assert texts[0][2] == "100 / 100 intervals (15 min), 100.0 % · 25 h day"
    assert texts[2][1] == "0.00 h / 24.00 h, 0.0 % · 24 h day"  # S3: no recent reading, so no interval


def test_null_night_rows_count_as_received_intervals(store: Store) -> None:
    """A SolarEdge-like PV source: NULL power every night, values by day, one hour without rows on the 26th."""
    with store.transaction() as con:
        site = insert_site(con, SiteIn(name="Night", latitude=50.85, longitude=4.35, timezone="Europe/Brussels"))
        meter = insert_meter(con, site, MeterIn(name="PV", category=Category.PROD))
        pv = add_source(con, meter, "SE PV", "solar", ApiSettings())
        batches = [
            readings(pv, utc(25, 23), utc(26, 5), value=None),  # 26 Oct 00:00-06:00 CET: night, null
            readings(pv, utc(26, 5), utc(26, 11)),  # 06:00-12:00
            readings(pv, utc(26, 12), utc(26, 17)),  # 13:00-18:00 (12:00-13:00 has no rows: a real gap)
            readings(pv, utc(26, 17), utc(27, 6), value=None),  # 18:00 to 07:00 on the 27th: night, null
            readings(pv, utc(27, 6), NOW),  # 07:00-13:00 on the 27th
        ]
        for batch in batches:
            ingest(con, batch, NOW)
        rollups.refresh(con, [pv], utc(25, 0), NOW)
    frame = load_coverage(store, NOW, days=2, site_id=site)
    assert frame["day"].to_list() == [date(2026, 10, 26), date(2026, 10, 27)]
    # 26th: 24 h expected from its first (null) row at local midnight, 23 h answered; 27th: 13 h up to now, all.
    assert frame["expected_s"].to_list() == [86400, 13 * 3600]
    assert frame["received_s"].to_list() == [23 * 3600, 13 * 3600]
    assert frame["coverage_pct"].to_list() == pytest.approx([100 * 23 / 24, 100.0])
    assert frame["received_intervals"].to_list() == [92, 52]
    assert frame["expected_intervals"].to_list() == [96, 52]


def test_coverage_before_the_first_reading_expects_nothing(store: Store, coverage_site: dict[str, int]) -> None:
    frame = load_coverage(store, NOW, days=6, site_id=coverage_site["site"])
    first = frame.filter((pl.col("source_id") == coverage_site["S1"]) & (pl.col("day") == date(2026, 10, 22)))
    assert first["expected_s"].to_list() == [0] and first["coverage_pct"].to_list() == [None]
    assert hover_text(first.row(0, named=True)) == "nothing expected (before the first reading) · 24 h day"


def test_coverage_refuses_a_bad_day_count(store: Store) -> None:
    with pytest.raises(ValueError, match="days must be between 1 and 366"):
        load_coverage(store, NOW, days=0)
