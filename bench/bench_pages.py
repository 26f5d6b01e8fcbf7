"""How fast the analytics pages get their data and render, on a year of 15-minute data for 500 sources.

Setup: a temporary store (migrated, no demo) with 100 sites in Europe/Brussels, each with PV, building load, grid
import, battery and grid export sources (500 sources), and a year of 15-minute readings up to now (17.5M rows,
with 0.5 % of intervals missing so gaps exist), generated in SQL in time order as the collector writes them, and its
15-minute, hourly and daily rollups. The dashboard is pointed at it through its settings.

Two figures per page:
(a) data: the `core` calls the page makes on its first run, uncached, for one site (p50/p95 of several runs).
    Target p95 < 300 ms.
(b) first render: `AppTest` running the page for the first time with Streamlit's caches cleared (p50/p95).
    Target p95 < 1.5 s.
Baseline: the store's fixed cost, an empty read-only operation (lock, connect, `SELECT 1`, close).

`BENCH_SCALE` (default 1.0) scales the number of days (at least 7); 0.05 runs in about a minute.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.bench_catalog import populate
from bench.timing import measure, percentiles
from core import localtime
from core.analytics import alerts, api_health, coverage, history, kpis, live
from core.analytics.alert_rules import Thresholds
from core.catalog import catalog as cat
from core.config import Settings
from core.models import Site
from core.store import rollups
from core.store.crypto import SecretBox, generate_key
from core.store.schema import migrate
from core.store.store import Store

DAYS = 365
DATA_TARGET_MS = 300.0
RENDER_TARGET_S = 1.5
DATA_RUNS = 7
RENDER_RUNS = 5
APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _now() -> datetime:
    now = datetime.now(UTC)
    return now - timedelta(minutes=now.minute % 15, seconds=now.second, microseconds=now.microsecond)


def generate(store: Store, days: int, end: datetime) -> int:
    """A year of plausible 15-minute readings for every source, in time order, then all rollups."""
    start = end - timedelta(days=days)
    with store.transaction() as con:
        # Per source type: PV follows a daylight sine (capacity 100 kW), load a daily profile, grid import and
        # export the net of the two, battery a small charge/discharge swing. hash() gives stable pseudo-noise.
        con.execute(
            """
            INSERT INTO readings (source_id, ts, interval_s, value, is_final, received_at)
            SELECT e.id, t.ts, 900,
                   CASE
                     WHEN m.category = 'PROD' THEN greatest(0, 100000 * sin(pi() * (h - 7) / 10)) * (0.6 + 0.4 * n)
                     WHEN m.category = 'CONS' AND e.source_type = 'load' THEN 30000 + 20000 * n
                     WHEN m.category = 'CONS' THEN greatest(0, 30000 - greatest(0, 100000 * sin(pi() * (h - 7) / 10)))
                     WHEN m.category = 'STOR' THEN 10000 * cos(pi() * h / 12)
                     ELSE greatest(0, 100000 * sin(pi() * (h - 7) / 10) - 40000)
                   END,
                   true, t.ts
            FROM (SELECT ts, (epoch(ts)::BIGINT % 86400) / 3600.0 AS h
                  FROM range(?::TIMESTAMPTZ, ?::TIMESTAMPTZ, INTERVAL 15 MINUTE) r(ts)) t
            CROSS JOIN energy_sources e JOIN meters m ON m.id = e.meter_id,
            LATERAL (SELECT (hash(e.id, t.ts) % 1000) / 1000.0 AS n)
            WHERE hash(t.ts, e.id) % 200 <> 0
            ORDER BY t.ts, e.id
            """,
            [start, end],
        )
        # A month of 5-minute polls per source in the collector's log, as the API Health page reads it; 2 % failed,
        # but not the last hour's (a source whose newest poll failed shows an error on Data Connections, which the
        # renders below take for a broken page).
        con.execute(
            "INSERT INTO collector_runs (source_id, provider, started_at, duration_ms, outcome, http_status)"
            " SELECT e.id, 'simulator', r.ts, 50 + hash(e.id, r.ts) % 800, CASE WHEN hash(r.ts, e.id) % 50 = 0"
            " AND r.ts < ?::TIMESTAMPTZ - INTERVAL 1 HOUR THEN 'connection_error' ELSE 'ok' END, 200"
            " FROM range(?::TIMESTAMPTZ, ?::TIMESTAMPTZ, INTERVAL 5 MINUTE) r(ts) CROSS JOIN energy_sources e"
            " ORDER BY r.ts",
            [end, end - timedelta(days=min(days, 31)), end],
        )
        ids = [r[0] for r in con.sql("SELECT id FROM energy_sources").fetchall()]
        rollups.refresh(con, ids, start, end)
        return int(con.sql("SELECT count(*) FROM readings").fetchall()[0][0])


def page_data_calls(store: Store, site: Site, now: datetime) -> dict[str, Callable[[], object]]:
    """What each analytics page loads on its first run, by page file (the pages' default choices)."""
    box = SecretBox([generate_key()])
    today = localtime.site_today(now, site.timezone)
    week = (today - timedelta(days=6), today)
    catalog = cat.load_catalog(store)
    first_series = history.series_groups(catalog, site.id, history.Level.SITE)[0].key
    return {
        "pages/live.py": lambda: live.live_snapshot(store, site.id, now),
        "pages/history.py": lambda: (
            history.load_history(store, site.id, history.Level.SITE, None, history.Resolution.HOUR, *week, now),
            history.load_year_comparison(
                store, site.id, first_series, history.Level.SITE, None, history.Resolution.DAY, *week, 2, now
            ),
        ),
        "pages/kpis.py": lambda: kpis.site_kpis(store, site.id, kpis.preset_period("This month", today), now),
        "pages/alerts.py": lambda: (
            alerts.load_alerts(store, site.id, now - timedelta(days=7)),
            alerts.last_evaluated(store),
        ),
        "pages/api_health.py": lambda: (
            api_health.load_health(store, box, now),
            coverage.load_coverage(store, now, site_id=site.id),
        ),
    }


def first_render(page: str) -> float:
    """Seconds for a page's first run in AppTest, caches cleared (the app's entry page is run first, not timed)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("streamlit")]:
        logging.getLogger(name).setLevel(logging.ERROR)  # bare-mode notices from AppTest are noise here
    app = AppTest.from_file(APP, default_timeout=120)
    app.run()
    st.cache_data.clear()
    started = time.perf_counter()
    app.switch_page(page).run()
    elapsed = time.perf_counter() - started
    if app.exception:
        raise RuntimeError(f"{page} failed: {app.exception[0].message}")
    if app.error:  # a page that only says what went wrong would time nothing real
        raise RuntimeError(f"{page} showed an error: {app.error[0].value}")
    if len(app.main.children) < 3:
        raise RuntimeError(f"{page} rendered almost nothing")
    return elapsed


def main() -> None:
    days = max(7, round(DAYS * float(os.environ.get("BENCH_SCALE", "1"))))
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        migrate(store)
        populate(store)
        now = _now()
        started = time.perf_counter()
        rows = generate(store, days, now)
        took = time.perf_counter() - started
        print(f"pages: generated {rows:,} readings ({days} days x 500 sources) in {took:.0f} s")
        catalog = cat.load_catalog(store)
        site = catalog.sites[0]

        def empty_operation() -> None:
            with store.connect(read_only=True) as con:
                con.sql("SELECT 1").fetchall()

        base_p50, base_p95 = measure(empty_operation, 30)
        print(f"pages baseline (lock + connect + SELECT 1 + close): p50 {base_p50:.1f} ms, p95 {base_p95:.1f} ms")
        for page, call in page_data_calls(store, site, now).items():
            p50, p95 = measure(call, DATA_RUNS)
            verdict = "meets" if p95 < DATA_TARGET_MS else "MISSES"
            print(
                f"{page} data: p50 {p50:.0f} ms, p95 {p95:.0f} ms ({p95 / base_p95:.1f}x baseline);"
                f" target p95 < {DATA_TARGET_MS:.0f} ms: {verdict}"
            )

        # The collector evaluates every alert rule over the fleet after polls (at most once a minute): the first
        # evaluation of a process also computes each site's sun positions and clear-sky day (cached afterwards).
        # Later runs move `now` on by 5 minutes each, as the collector's would: new instants for the sun cache (a
        # repeated `now` would also be skipped as stale), the same `readings` window size.
        thresholds = Thresholds.from_settings(Settings())
        evaluated_at = now - timedelta(minutes=5 * (DATA_RUNS + 1))  # measure() runs DATA_RUNS + 1: the last at `now`
        started = time.perf_counter()
        alerts.evaluate(store, thresholds, evaluated_at)
        first_s = time.perf_counter() - started

        def next_evaluation() -> None:
            nonlocal evaluated_at
            evaluated_at += timedelta(minutes=5)
            alerts.evaluate(store, thresholds, evaluated_at)

        p50, p95 = measure(next_evaluation, DATA_RUNS)
        print(
            f"alert evaluation over {len(catalog.sources)} sources: first {first_s:.1f} s, then p50 {p50:.0f} ms,"
            f" p95 {p95:.0f} ms ({p95 / base_p95:.1f}x baseline)"
        )

        os.environ.update(
            DATACONN_DB_PATH=str(store.path), DATACONN_KEY_FILE=str(Path(tmp) / "secret.key"), DATACONN_SEED_DEMO="0"
        )
        for page in ANALYTICS_PAGES:
            first_render(page)  # warm up: imports and the page's module code
            p50, p95 = percentiles([first_render(page) for _ in range(RENDER_RUNS)])
            verdict = "meets" if p95 < RENDER_TARGET_S else "MISSES"
            print(f"{page} first render: p50 {p50:.2f} s, p95 {p95:.2f} s; target p95 < {RENDER_TARGET_S} s: {verdict}")


ANALYTICS_PAGES = (
    "pages/live.py",
    "pages/history.py",
    "pages/kpis.py",
    "pages/alerts.py",
    "pages/api_health.py",
    "pages/control_room.py",
    "pages/data_connections.py",
)

if __name__ == "__main__":
    main()
