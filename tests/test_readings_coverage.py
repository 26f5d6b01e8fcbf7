"""`readings.coverage` (migration 13) on real DuckDB files: old rows and plain batches keep NULL, minute rows keep
their coverage through ingest and through the spool, an old source's metadata still loads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core.catalog import catalog as cat
from core.collect.pass_write import pass_readings
from core.collect.poll_result import GroupResult
from core.models import Category, MeterIn, Provider, SiteIn, SourceIn
from core.store import schema
from core.store.readings_store import COVERAGE_SCHEMA, INGEST_SCHEMA, ingest
from core.store.schema import migrate
from core.store.spool import Spool
from core.store.store import Store

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)


def plain(source_id: int, minutes: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source_id": [source_id] * len(minutes),
            "ts": [T0 + timedelta(minutes=m) for m in minutes],
            "interval_s": [60] * len(minutes),
            "value": [100.0 + m for m in minutes],
            "is_final": [True] * len(minutes),
        },
        schema=INGEST_SCHEMA,
    )


def covered(source_id: int, minutes: list[int], coverage: list[float | None]) -> pl.DataFrame:
    return plain(source_id, minutes).with_columns(pl.Series("coverage", coverage, pl.Float64))


def rows(store: Store) -> list[tuple]:
    with store.connect(read_only=True) as con:
        return con.sql("SELECT source_id, value, coverage FROM readings ORDER BY source_id, ts").fetchall()


def test_old_file_migrates_old_rows_get_null_coverage_and_old_metadata_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "v12.duckdb")
    with monkeypatch.context() as patch:  # a file written by the version before migration 13
        patch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m[0] <= 12])
        patch.setattr(schema, "LATEST_VERSION", 12)
        migrate(store)
    site = cat.create_site(store, SiteIn(name="Old", latitude=50.8, longitude=4.4, timezone="Europe/Brussels"))
    meter = cat.create_meter(store, site.id, MeterIn(name="Plug", category=Category.CONS))
    fridge = SourceIn(name="Fridge", source_type="load", capacity_kw=1, carbon_intensity_g_per_kwh=0, cost_per_mwh=0)
    # Metadata as the version before MQTT wrote it: none of the MQTT keys.
    old_metadata = {"useAPI": True, "apiProvider": "simulator", "systemId": "", "updateFrequency": "15min"}
    with store.transaction() as con:
        source_id = cat.insert_source(con, meter.id, fridge)
        con.execute("UPDATE energy_sources SET metadata = ? WHERE id = ?", [json.dumps(old_metadata), source_id])
        con.execute(
            "INSERT INTO readings (source_id, ts, interval_s, value, is_final, received_at)"
            " VALUES (?, ?, 900, 5, true, ?)",
            [source_id, T0, NOW],
        )

    assert migrate(store) == list(range(13, schema.LATEST_VERSION + 1))  # 13 and every later one
    assert rows(store) == [(source_id, 5.0, None)]  # the interval as reported
    api = cat.load_catalog(store).source(source_id).api
    assert api.api_provider is Provider.SIMULATOR and api.mqtt_port == 1883 and api.mqtt_topic == ""
    assert (api.stream_on_live, api.stream_schedule) == (False, "off")  # nor the stream keys of migration 14
    with store.connect(read_only=True) as con:
        assert con.sql("SELECT count(*) FROM mqtt_status").fetchall() == [(0,)]


def test_plain_batches_store_null_and_covered_batches_their_coverage(store: Store) -> None:
    with store.transaction() as con:
        assert ingest(con, plain(1, [0, 1]), NOW) == 2
        assert ingest(con, covered(2, [0, 1, 2], [1.0, 0.25, None]), NOW) == 3
    assert rows(store) == [(1, 100.0, None), (1, 101.0, None), (2, 100.0, 1.0), (2, 101.0, 0.25), (2, 102.0, None)]


def test_coverage_outside_0_to_1_is_refused_and_nothing_is_written(store: Store) -> None:
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="coverage` must be between 0 and 1"), store.transaction() as con:
            ingest(con, covered(2, [0], [bad]), NOW)
    assert rows(store) == []


def test_a_pass_mixing_plain_and_covered_batches_keeps_both(store: Store) -> None:
    first, second = GroupResult([1], "simulator", NOW), GroupResult([2], "mqtt", NOW)
    first.batch, second.batch = plain(1, [0]), covered(2, [0], [0.5])
    frame = pass_readings([first, second])
    assert frame.schema == COVERAGE_SCHEMA
    with store.transaction() as con:
        ingest(con, frame, NOW)
    assert rows(store) == [(1, 100.0, None), (2, 100.0, 0.5)]


def test_the_spool_round_trips_coverage_and_still_takes_plain_entries(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    with_coverage = spool.put({"now": NOW.isoformat(), "results": []}, covered(2, [0, 1], [0.75, None]))
    without = spool.put({"now": NOW.isoformat(), "results": []}, plain(1, [0]))
    back = spool.read(with_coverage).readings
    assert back.schema == COVERAGE_SCHEMA and back["coverage"].to_list() == [0.75, None]
    assert spool.read(without).readings.schema == INGEST_SCHEMA
