"""Writing readings into the `readings` table, idempotently and fast.

What a row of `readings` means:

- `source_id`: the energy source (`energy_sources.id`) the value belongs to.
- `ts` (TIMESTAMPTZ, UTC): the **start** of the interval the row describes; the interval is
  `[ts, ts + interval_s seconds)`. Vendors that label the end of an interval (Enphase) are converted at parse.
- `interval_s`: the interval's length in seconds (900 for 15-minute data).
- `value`: for power channels (PROD/CONS/INJ/STOR power) the **average power in W** over the interval, so the energy
  in Wh is `value * interval_s / 3600` (battery power is positive when discharging); for the state-of-charge
  channel, the battery's **state of charge in %** at the end of the interval. NULL means the vendor said "no data"
  for that interval; it is not zero.
- `is_final`: false while the interval may still change (it is still open, or recent enough that the collector
  re-reads it); true once the value is settled.
- `received_at` (UTC): when the collector stored this version of the row.
- `coverage`: the share of the interval for which samples were seen, 0 to 1, for rows averaged from a device's
  samples (MQTT minutes: docs/real-time.md); the value is then the mean over the covered part. NULL for every other
  row (vendors, imports, pushes): the interval as reported.

The natural key is (source_id, ts). The table has no PRIMARY KEY (an index would make bulk inserts ~11x slower and
cost 3.5-5x the data on disk); `ingest` keeps the key unique instead, which is race-free because only one process
writes at a time (the store's lock). Every probe of `readings` is bounded by `ts >= min(ts of the batch)` and the
batch's source ids, so DuckDB's zone maps skip the old row groups and a batch costs milliseconds even on a table of
tens of millions of rows.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime

import duckdb
import polars as pl

from core.store.store import ts_literal

INGEST_SCHEMA = pl.Schema(
    [
        ("source_id", pl.Int64()),
        ("ts", pl.Datetime("us", "UTC")),
        ("interval_s", pl.Int32()),
        ("value", pl.Float64()),
        ("is_final", pl.Boolean()),
    ]
)
# A batch MAY carry this column too; one without it (every vendor, import and push path) stores NULL. Optional
# rather than part of INGEST_SCHEMA so the many producers of plain batches need not know about it.
COVERAGE = "coverage"
COVERAGE_SCHEMA = pl.Schema([*INGEST_SCHEMA.items(), (COVERAGE, pl.Float64())])

_names = itertools.count()
_SMALL_BATCH = 10_000  # up to this many rows, deleting directly is cheaper than counting open rows first


def _as_ingest_frame(batch: pl.DataFrame) -> pl.DataFrame:
    """The batch cast to COVERAGE_SCHEMA (coverage NULL when the batch has none), keys checked, duplicates of one key
    reduced to the last row."""
    missing = [name for name in INGEST_SCHEMA.names() if name not in batch.columns]
    if missing:
        raise ValueError(f"readings batch lacks columns {missing}")
    ts_type = batch.schema["ts"]
    if not isinstance(ts_type, pl.Datetime) or ts_type.time_zone is None:
        raise ValueError("readings batch `ts` must be a timezone-aware datetime (UTC)")
    frame = batch.select(
        pl.col("source_id").cast(pl.Int64),
        pl.col("ts").dt.convert_time_zone("UTC").dt.cast_time_unit("us"),
        pl.col("interval_s").cast(pl.Int32),
        pl.col("value").cast(pl.Float64),
        pl.col("is_final").cast(pl.Boolean),
        pl.col(COVERAGE).cast(pl.Float64) if COVERAGE in batch.columns else pl.lit(None, pl.Float64).alias(COVERAGE),
    )
    coverage = pl.col(COVERAGE)
    if COVERAGE in batch.columns and frame.select(((coverage < 0) | (coverage > 1) | coverage.is_nan()).any()).item():
        raise ValueError("readings batch `coverage` must be between 0 and 1")
    required = ["source_id", "ts", "interval_s", "is_final"]
    nulls = frame.select(pl.col(required).null_count()).row(0)
    if any(nulls):
        raise ValueError(
            f"readings batch has nulls in key columns {[c for c, n in zip(required, nulls, strict=True) if n]}"
        )
    # Fast path: a cheap integer function of (source_id, ts) with as many distinct values as rows proves the keys
    # distinct (equal keys give equal values). Only when it does not (a real duplicate, or a collision) pay for the
    # hash-based `unique`, ~30x slower on a 1M-row batch.
    probe = (pl.col("ts").dt.epoch("us") + pl.col("source_id") * 1_000_003).n_unique()
    if frame.select(probe).item() == frame.height:
        return frame
    return frame.unique(subset=["source_id", "ts"], keep="last", maintain_order=True)


def ingest(con: duckdb.DuckDBPyConnection, batch: pl.DataFrame, now: datetime) -> int:
    """Store a batch of readings; returns the number of rows inserted (replacements of non-final rows included).

    `batch` has the columns of INGEST_SCHEMA, and may have `coverage`. Idempotent on (source_id, ts): a key already
    stored as final is left alone; a key stored as non-final is replaced by the batch's row; a new key is inserted; a
    key repeated in the batch keeps its last row. Runs inside the caller's transaction (`Store.transaction`), so a
    cycle lands whole.
    """
    return sum(_ingest(con, batch, now, per_source=False).values())


def ingest_per_source(con: duckdb.DuckDBPyConnection, batch: pl.DataFrame, now: datetime) -> dict[int, int]:
    """`ingest`, returning the rows inserted per source id (sources with none left out): one write for a whole
    collection pass, which still records what each source got."""
    return _ingest(con, batch, now, per_source=True)


def _ingest(con: duckdb.DuckDBPyConnection, batch: pl.DataFrame, now: datetime, *, per_source: bool) -> dict[int, int]:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    frame = _as_ingest_frame(batch)
    if frame.is_empty():
        return {}
    min_ts = frame["ts"].min()
    assert isinstance(min_ts, datetime)
    low, high = frame.select(pl.col("source_id").min().alias("low"), pl.col("source_id").max().alias("high")).row(0)
    # Literals, not parameters, so the optimizer sees constants and prunes row groups by their zone maps. The source
    # range costs nothing to test, where an IN list of hundreds of ids measurably slows the probe.
    bound = f"r.ts >= {ts_literal(min_ts)} AND r.source_id BETWEEN {int(low)} AND {int(high)}"
    view = f"_ingest_batch_{next(_names)}"
    con.register(view, frame)
    try:
        # Stored non-final rows that the batch covers make way for the batch's version. They are few (the last
        # hours), so a big batch looks (~1 ms) before paying for the semi-join against all its rows.
        if (
            frame.height <= _SMALL_BATCH
            or con.sql(f"SELECT count(*) FROM readings r WHERE {bound} AND NOT r.is_final").fetchall()[0][0]
        ):
            con.execute(
                f"DELETE FROM readings r WHERE {bound} AND NOT r.is_final "
                f"AND EXISTS (SELECT 1 FROM {view} b WHERE b.source_id = r.source_id AND b.ts = r.ts)"
            )
        # Every stored row still matching a batch key is final: skip those keys.
        returning = " RETURNING source_id" if per_source else ""
        rows = con.execute(
            f"INSERT INTO readings (source_id, ts, interval_s, value, is_final, received_at, coverage) "
            f"SELECT b.source_id, b.ts, b.interval_s, b.value, b.is_final, {ts_literal(now)}, b.coverage FROM {view} b "
            f"WHERE NOT EXISTS (SELECT 1 FROM readings r WHERE {bound} AND r.source_id = b.source_id AND r.ts = b.ts)"
            f"{returning}"
        ).fetchall()
    finally:
        con.unregister(view)
    if not per_source:
        return {int(low): int(rows[0][0])}  # the total, under any key
    return dict(Counter(int(row[0]) for row in rows))


def to_batch(source_id: int, readings: pl.DataFrame, now: datetime, final_before: datetime) -> pl.DataFrame:
    """A provider answer (READINGS_SCHEMA, already filtered to the source's channel) in the shape `ingest` takes.

    An interval is final when it ends at or before `final_before` (and before `now`): later ones may still change
    and are re-read by the collector, which then replaces them.
    """
    return to_batches(readings.with_columns(pl.lit(source_id, dtype=pl.Int64).alias("source_id")), now, final_before)


def to_batches(readings: pl.DataFrame, now: datetime, final_before: datetime) -> pl.DataFrame:
    """`to_batch` for readings that already carry their `source_id` (one answer fanned out to many sources)."""
    if now.tzinfo is None or final_before.tzinfo is None:
        raise ValueError("now and final_before must be timezone-aware")
    cutoff = min(now, final_before).astimezone(UTC)
    ts = pl.col("ts").cast(pl.Datetime("us", "UTC"))
    end = ts + pl.duration(seconds=pl.col("interval_s").cast(pl.Int64))
    return readings.select(
        pl.col("source_id").cast(pl.Int64),
        ts.alias("ts"),
        pl.col("interval_s").cast(pl.Int32),
        pl.col("value").cast(pl.Float64),
        (end <= pl.lit(cutoff, dtype=pl.Datetime("us", "UTC"))).alias("is_final"),
    )
