"""Everything a collection pass writes, in the caller's transaction: readings, rollups, run rows, source states,
raw vendor answers and gap attempts. Used for a pass written at once and for one coming out of the spool."""

from __future__ import annotations

import logging
import random
from datetime import datetime

import duckdb
import polars as pl

from core import rollups
from core.gaps import record_attempt
from core.poll_result import GroupResult
from core.readings_store import INGEST_SCHEMA, ingest
from core.response_cache import write_exchanges
from core.source_health import SourceState, next_health, read_states
from core.spool import SpoolEntry

log = logging.getLogger("core.collection")


def pass_readings(results: list[GroupResult]) -> pl.DataFrame:
    batches = [r.batch for r in results if r.batch is not None and r.batch.height]
    return pl.concat(batches) if batches else pl.DataFrame(schema=INGEST_SCHEMA)


def apply_entry(con: duckdb.DuckDBPyConnection, entry: SpoolEntry) -> int:
    now = datetime.fromisoformat(entry.meta["now"])
    results = [GroupResult.from_json(data, entry.readings) for data in entry.meta["results"]]
    return apply_pass(con, results, now)


def apply_pass(con: duckdb.DuckDBPyConnection, results: list[GroupResult], now: datetime) -> int:
    """Everything a pass writes, inside the caller's transaction: readings, rollups, run rows, source states, gap
    attempts. Used for a pass written at once and for one coming out of the spool. Returns readings written."""
    states = read_states(con)
    written_total = 0
    for result in results:
        for source_id in result.source_ids:
            mine = None if result.batch is None else result.batch.filter(pl.col("source_id") == source_id)
            written = ingest(con, mine, now) if mine is not None and mine.height else 0
            written_total += written
            _record(con, source_id, result, mine, written, now, states.get(source_id))
        refresh_rollups(con, result.batch)
        write_exchanges(con, result.source_ids[0], result.exchanges)
        if result.gap_window:
            record_attempt(con, result.source_ids, *result.gap_window, now)
    return written_total


def refresh_rollups(con: duckdb.DuckDBPyConnection, batch: pl.DataFrame | None) -> None:
    """Rebuild the rollup buckets this batch touched, in the same transaction as the readings."""
    if batch is None or batch.height == 0:
        return
    span = batch.select(
        pl.col("ts").min().alias("start"),
        (pl.col("ts") + pl.duration(seconds=pl.col("interval_s"))).max().alias("end"),
    ).row(0)
    rollups.refresh(con, batch["source_id"].unique().to_list(), span[0], span[1])


def _record(
    con: duckdb.DuckDBPyConnection,
    source_id: int,
    result: GroupResult,
    batch: pl.DataFrame | None,
    written: int,
    now: datetime,
    before: SourceState | None,
) -> None:
    """The source's `collector_runs` row and its state: bookmark, failures, backoff and circuit, why it stopped."""
    con.execute(
        "INSERT INTO collector_runs (source_id, provider, started_at, duration_ms, outcome, http_status, error,"
        " rows_written, quota_used, quota_remaining) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            source_id,
            result.provider,
            result.started_at,
            result.duration_ms,
            result.outcome,
            result.http_status,
            result.error,
            written,
            result.quota_used,
            result.quota_remaining,
        ],
    )
    finals = batch.filter(pl.col("is_final")) if batch is not None else None
    newest_final = finals["ts"].max() if finals is not None and finals.height else None
    failures, circuit, next_due = next_health(
        result.outcome, before.failures if before else 0, now, random.uniform(0.8, 1.2)
    )
    if circuit == "open" and (before is None or before.circuit != "open"):
        log.warning("source %s: circuit opened after %d failures; next probe at %s", source_id, failures, next_due)
    con.execute(
        "INSERT INTO source_state (source_id, bookmark_ts, consecutive_failures, circuit, next_due_at, retry_at,"
        " stopped_reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source_id) DO UPDATE SET"
        " bookmark_ts = coalesce(greatest(source_state.bookmark_ts, excluded.bookmark_ts),"
        " source_state.bookmark_ts, excluded.bookmark_ts),"
        " consecutive_failures = excluded.consecutive_failures, circuit = excluded.circuit,"
        " next_due_at = excluded.next_due_at, retry_at = excluded.retry_at,"
        " stopped_reason = excluded.stopped_reason, updated_at = excluded.updated_at",
        [source_id, newest_final, failures, circuit, next_due, result.retry_at, result.stopped_reason, now],
    )
