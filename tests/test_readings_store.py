"""Ingesting readings into real DuckDB files: idempotency on (source_id, ts), finality, NULLs and UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from core.providers.base import READINGS_SCHEMA
from core.store import readings_store
from core.store.readings_store import INGEST_SCHEMA, ingest, to_batch
from core.store.store import Store

T0 = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # a DST night in Europe: nothing may shift in UTC
NOW = datetime(2026, 3, 30, 12, 0, tzinfo=UTC)


def batch(rows: list[tuple[int, int, float | None, bool]]) -> pl.DataFrame:
    """(source_id, 15-minute slot after T0, value, is_final) rows in the ingest shape."""
    return pl.DataFrame(
        {
            "source_id": [r[0] for r in rows],
            "ts": [T0 + timedelta(minutes=15 * r[1]) for r in rows],
            "interval_s": [900] * len(rows),
            "value": [r[2] for r in rows],
            "is_final": [r[3] for r in rows],
        },
        schema=INGEST_SCHEMA,
    )


def write(store: Store, frame: pl.DataFrame, now: datetime = NOW) -> int:
    with store.transaction() as con:
        return ingest(con, frame, now)


def stored(store: Store) -> pl.DataFrame:
    with store.connect(read_only=True) as con:
        return con.sql("SELECT * FROM readings ORDER BY source_id, ts").pl()


def test_reingesting_the_same_batch_inserts_nothing(store: Store) -> None:
    frame = batch([(1, i, float(i), True) for i in range(10)])
    assert write(store, frame) == 10
    assert write(store, frame) == 0
    assert stored(store).height == 10


def test_half_duplicates_insert_only_the_new_half(store: Store) -> None:
    assert write(store, batch([(1, i, 1.0, True) for i in range(10)])) == 10
    assert write(store, batch([(1, i, 2.0, True) for i in range(5, 15)])) == 5
    rows = stored(store)
    assert rows.height == 15
    assert rows.filter(pl.col("ts") < T0 + timedelta(minutes=150))["value"].to_list() == [1.0] * 10
    assert rows["value"].to_list()[10:] == [2.0] * 5


def test_non_final_row_is_replaced_by_its_final_version_exactly_once(store: Store) -> None:
    later = NOW + timedelta(minutes=5)
    assert write(store, batch([(1, 0, 100.0, False)])) == 1
    assert write(store, batch([(1, 0, 150.0, False)])) == 1  # still open: the newer reading wins
    assert write(store, batch([(1, 0, 200.0, True)]), later) == 1
    assert write(store, batch([(1, 0, 200.0, True)]), later + timedelta(minutes=5)) == 0
    rows = stored(store)
    assert rows.height == 1
    assert rows.row(0, named=True)["value"] == 200.0
    assert rows.row(0, named=True)["is_final"] is True
    assert rows.row(0, named=True)["received_at"] == later


def test_final_rows_are_never_changed_by_a_later_non_final_row(store: Store) -> None:
    assert write(store, batch([(1, 0, 200.0, True), (2, 0, 7.0, True)])) == 2
    assert write(store, batch([(1, 0, 999.0, False), (2, 0, None, True)])) == 0
    rows = stored(store)
    assert rows["value"].to_list() == [200.0, 7.0]
    assert rows["is_final"].to_list() == [True, True]
    assert rows["received_at"].to_list() == [NOW, NOW]


def test_duplicates_inside_one_batch_keep_the_last(store: Store) -> None:
    frame = batch([(1, 0, 1.0, False), (2, 0, 5.0, True), (1, 0, 2.0, True), (1, 1, 3.0, True)])
    assert write(store, frame) == 3
    rows = stored(store)
    assert rows.select("source_id", "value").rows() == [(1, 2.0), (1, 3.0), (2, 5.0)]


def test_keys_of_other_sources_and_older_times_are_untouched(store: Store) -> None:
    write(store, batch([(1, i, 1.0, False) for i in range(4)] + [(2, 3, 1.0, False)]))
    assert write(store, batch([(1, 3, 9.0, True)])) == 1
    rows = stored(store)
    assert rows.select("source_id", "value", "is_final").rows() == [
        (1, 1.0, False),
        (1, 1.0, False),
        (1, 1.0, False),
        (1, 9.0, True),
        (2, 1.0, False),
    ]


def test_nulls_are_kept_as_null(store: Store) -> None:
    assert write(store, batch([(1, 0, None, True), (1, 1, 0.0, True)])) == 2
    with store.connect(read_only=True) as con:
        nulls = con.sql("SELECT count(*) FROM readings WHERE value IS NULL").fetchall()[0][0]
    assert nulls == 1
    assert stored(store)["value"].to_list() == [None, 0.0]


def test_timestamps_round_trip_in_utc(store: Store) -> None:
    # The same instants written as Brussels local times come back as the UTC interval starts.
    local = batch([(1, i, 1.0, True) for i in range(12)]).with_columns(
        pl.col("ts").dt.convert_time_zone("Europe/Brussels")
    )
    assert write(store, local) == 12
    rows = stored(store)
    assert rows.schema["ts"] == pl.Datetime("us", "UTC")
    assert rows["ts"].to_list() == [T0 + timedelta(minutes=15 * i) for i in range(12)]
    with store.connect(read_only=True) as con:
        first = con.sql("SELECT strftime(min(ts), '%Y-%m-%d %H:%M:%S%z') FROM readings").fetchall()[0][0]
    assert first == "2026-03-29 00:00:00+00"


def test_empty_batch_and_bad_input(store: Store) -> None:
    assert write(store, pl.DataFrame(schema=INGEST_SCHEMA)) == 0
    naive = batch([(1, 0, 1.0, True)]).with_columns(pl.col("ts").dt.replace_time_zone(None))
    with pytest.raises(ValueError, match="timezone-aware"):
        write(store, naive)
    with pytest.raises(ValueError, match="lacks columns"):
        write(store, batch([(1, 0, 1.0, True)]).drop("is_final"))
    assert stored(store).height == 0


def test_to_batch_marks_the_open_interval_non_final() -> None:
    now = T0 + timedelta(minutes=40)  # inside the third 15-minute interval
    readings = pl.DataFrame(
        {
            "ts": [T0 + timedelta(minutes=15 * i) for i in range(3)],
            "interval_s": [900] * 3,
            "channel": ["pv_w"] * 3,
            "value": [10.0, None, 30.0],
        },
        schema=READINGS_SCHEMA,
    )
    out = to_batch(7, readings, now, final_before=now)
    assert out.schema == INGEST_SCHEMA
    assert out["source_id"].to_list() == [7, 7, 7]
    assert out["is_final"].to_list() == [True, True, False]
    assert out["value"].to_list() == [10.0, None, 30.0]
    # A re-read window: everything ending after `final_before` stays open.
    assert to_batch(7, readings, now, final_before=T0 + timedelta(minutes=15))["is_final"].to_list() == [
        True,
        False,
        False,
    ]


def test_to_batch_output_ingests(store: Store) -> None:
    readings = pl.DataFrame(
        {"ts": [T0], "interval_s": [900], "channel": ["soc_pct"], "value": [55.5]}, schema=READINGS_SCHEMA
    )
    assert write(store, to_batch(3, readings, NOW, NOW)) == 1
    assert stored(store).select("source_id", "ts", "interval_s", "value", "is_final").rows() == [
        (3, T0, 900, 55.5, True)
    ]


def test_big_batches_take_the_counted_path_and_still_replace_open_rows(store: Store) -> None:
    # Past its small-batch size, `ingest` counts the open rows in range before deleting: every batch here carries
    # that many final rows of a second source, so each one takes that path.
    padding = [(2, slot, 0.5, True) for slot in range(readings_store._SMALL_BATCH + 1)]
    assert write(store, batch([(1, 0, 1.0, True), (1, 1, 2.0, False), *padding])) == 2 + len(padding)
    assert write(store, batch([(1, 0, 9.0, True), (1, 1, 3.0, True), (1, 2, 4.0, False), *padding])) == 2
    assert write(store, batch([(1, 0, 9.0, True), (1, 1, 9.0, True), *padding])) == 0
    first = stored(store).filter(pl.col("source_id") == 1)
    assert first.select("value", "is_final").rows() == [(1.0, True), (3.0, True), (4.0, False)]
    assert stored(store).height == 3 + len(padding)
