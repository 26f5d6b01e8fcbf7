"""Deleting a site, a meter or a source takes everything of theirs along, in the same transaction: no row is left
referring to a source that no longer exists (`core.store.schema.SOURCE_DATA_TABLES`), and the confirmations say how many
readings go.

On a real DuckDB file after a real collection pass of the demo (readings, rollups, runs, state, cached answers),
plus an alert and a gap attempt written as the collector writes them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.catalog import catalog as cat
from core.catalog.connections import draft_from_source, save_connections
from core.runtime import Runtime
from core.store.schema import SOURCE_DATA_TABLES
from core.store.store import Store
from tests.seeding import seed_history

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _orphans(store: Store) -> dict[str, int]:
    """Rows per table whose source no longer exists."""
    found = {}
    with store.connect(read_only=True) as con:
        for table in SOURCE_DATA_TABLES:
            count = con.sql(
                f"SELECT count(*) FROM {table} WHERE source_id NOT IN (SELECT id FROM energy_sources)"
            ).fetchall()[0][0]
            if count:
                found[table] = count
    return found


def _rows(store: Store, table: str) -> int:
    with store.connect(read_only=True) as con:
        return int(con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def _seed(app_env: Path) -> Runtime:
    runtime = seed_history()
    source = cat.load_catalog(runtime.store).sources[0]
    with runtime.store.transaction() as con:  # an open alert and a gap attempt, as the collector leaves them
        con.execute(
            "INSERT INTO alerts (rule, source_id, site_id, severity, status, opened_at, last_seen_at, message)"
            " SELECT 'no_data', e.id, m.site_id, 'warning', 'open', now(), now(), 'no data' FROM energy_sources e"
            " JOIN meters m ON m.id = e.meter_id WHERE e.id = ?",
            [source.id],
        )
        start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
        con.execute("INSERT INTO gap_attempts VALUES (?, ?, ?, now())", [source.id, start, end])
    return runtime


def test_deleting_the_demo_site_leaves_no_row_of_its_sources(app_env: Path) -> None:
    runtime = _seed(app_env)
    store = runtime.store
    site = cat.load_catalog(store).sites[0]
    before = {table: _rows(store, table) for table in SOURCE_DATA_TABLES}
    assert all(before[t] for t in ("readings", "readings_15min", "readings_daily", "collector_runs", "alerts"))
    readings = cat.readings_count(store, site_id=site.id)
    assert readings == before["readings"] > 0

    cat.delete_site(store, site.id)

    assert _orphans(store) == {}
    assert {table: _rows(store, table) for table in SOURCE_DATA_TABLES} == dict.fromkeys(SOURCE_DATA_TABLES, 0)


def test_removing_one_source_in_data_connections_takes_its_rows_and_leaves_the_others(app_env: Path) -> None:
    runtime = _seed(app_env)
    store = runtime.store
    catalog = cat.load_catalog(store)
    doomed, *others = catalog.sources
    site = catalog.sites[0]
    kept = {s.id: cat.readings_count(store, source_id=s.id) for s in others}
    assert cat.readings_count(store, source_id=doomed.id) > 0

    save_connections(store, runtime.box, site.id, [draft_from_source(s) for s in others], {doomed.id})

    assert _orphans(store) == {}
    assert {s.id: cat.readings_count(store, source_id=s.id) for s in others} == kept
    with store.connect(read_only=True) as con:
        left = con.sql(f"SELECT count(*) FROM readings_daily WHERE source_id = {doomed.id}").fetchall()
    assert left == [(0,)]


def test_deleting_a_meter_takes_its_sources_rows(app_env: Path) -> None:
    runtime = _seed(app_env)
    store = runtime.store
    catalog = cat.load_catalog(store)
    meter = next(m for m in catalog.meters if catalog.sources_of(m.id))
    cat.delete_meter(store, meter.id)
    assert _orphans(store) == {}


def test_the_confirmation_says_how_many_readings_go(app_env: Path) -> None:
    runtime = _seed(app_env)
    site = cat.load_catalog(runtime.store).sites[0]
    readings = cat.readings_count(runtime.store, site_id=site.id)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.button(key=f"cr_site{site.id}_delete").click().run()
    warning = next(w.value for w in at.warning if "Delete site" in w.value)
    assert f"{readings:,} stored reading(s) with their rollups, runs and alerts" in warning
    assert len(cat.load_catalog(runtime.store).sites) == 1  # nothing deleted before the confirmation
