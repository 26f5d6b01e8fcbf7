"""Retention drops old raw readings and cached responses, and only after their rollups are in place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from core.actors import COLLECTOR, acting_as
from core.store.readings_store import ingest
from core.store.retention import apply_retention
from core.store.store import Store

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def test_old_raw_rows_go_their_energy_stays_in_the_rollups(store: Store) -> None:
    old = NOW - timedelta(days=500)
    recent = NOW - timedelta(days=2)
    ts = [old + timedelta(minutes=15 * i) for i in range(8)] + [recent + timedelta(minutes=15 * i) for i in range(4)]
    batch = pl.DataFrame(
        {"source_id": [1] * 12, "ts": ts, "interval_s": [900] * 12, "value": [1000.0] * 12, "is_final": [True] * 12},
        schema={"source_id": pl.Int64, "ts": pl.Datetime("us", "UTC"), "interval_s": pl.Int32, "value": pl.Float64,
                "is_final": pl.Boolean},
    )  # fmt: skip
    with store.transaction() as con:
        ingest(con, batch, NOW)  # written without rollups, as a database from before they existed would be
        con.execute(
            "INSERT INTO energy_sources (id, meter_id, name, source_type, capacity_kw,"
            " carbon_intensity_g_per_kwh, cost_per_mwh, metadata) VALUES (1, 1, 'PV', 'solar', 1, 0, 0, '{}')"
        )
        con.execute("INSERT INTO meters (id, site_id, name, category) VALUES (1, 1, 'PV', 'PROD')")
        con.execute("INSERT INTO sites (id, name, latitude, longitude, timezone) VALUES (1, 'S', 0, 0, 'UTC')")
        con.execute(
            "INSERT INTO api_data_cache VALUES (1, 'power', ?, 200, '{}'), (1, 'power', ?, 200, '{}')",
            [NOW - timedelta(days=30), NOW - timedelta(hours=1)],
        )  # fmt: skip

    with acting_as(COLLECTOR):
        assert apply_retention(store, NOW, raw_days=400, cache_days=7) == (8, 1)
    with store.connect(read_only=True) as con:
        recorded = con.sql("SELECT actor, action, summary FROM audit_log").fetchall()
        assert recorded == [
            ("collector", "retention", "8 final raw readings before 2025-10-23 UTC dropped (rollups kept)")
        ]
        assert con.sql("SELECT count(*) FROM readings").fetchall()[0][0] == 4
        hourly = con.execute("SELECT sum(energy_wh) FROM readings_hourly WHERE bucket < ?", [NOW - timedelta(days=400)])
        assert hourly.fetchall()[0][0] == 2000.0  # 1 kW for the two dropped hours, still accounted for
        assert con.sql("SELECT count(*) FROM api_data_cache").fetchall()[0][0] == 1
    assert apply_retention(store, NOW, raw_days=400, cache_days=7) == (0, 0)
