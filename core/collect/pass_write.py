"""Everything a collection pass writes, in the caller's transaction: readings, rollups, run rows, source states,
raw vendor answers and gap attempts. Used for a pass written at once and for one coming out of the spool."""

from __future__ import annotations

import logging
import random
from datetime import datetime

import duckdb
import polars as pl

from core.collect.poll_result import GroupResult, newest_finals
from core.collect.source_health import next_health
from core.store import rollups
from core.store.exchange_archive import write_exchanges
from core.store.gap_attempts import record_attempt
from core.store.readings_store import INGEST_SCHEMA, ingest_per_source
from core.store.source_state import SourceState, read_states
from core.store.spool import SpoolEntry

log = logging.getLogger("core.collect.collection")


def pass_readings(results: list[GroupResult]) -> pl.DataFrame:
    batches = [r.batch for r in results if r.batch is not None and r.batch.height]
    if not batches:
        return pl.DataFrame(schema=INGEST_SCHEMA)
    # Batches with coverage (MQTT minutes) and without share a frame: the missing coverage is NULL.
    same = all(b.columns == batches[0].columns for b in batches)
    return pl.concat(batches, how="vertical" if same else "diagonal_relaxed")


def apply_entry(con: duckdb.DuckDBPyConnection, entry: SpoolEntry) -> int:
    now = datetime.fromisoformat(entry.meta["now"])
    results = [GroupResult.from_json(data, entry.readings) for data in entry.meta["results"]]
    return apply_pass(con, results, entry.readings, newest_finals(entry.readings, results), now)


def apply_pass(
    con: duckdb.DuckDBPyConnection,
    results: list[GroupResult],
    readings: pl.DataFrame,
    newest: dict[int, datetime],
    now: datetime,
) -> int:
    """Everything a pass writes, inside the caller's transaction: readings, rollups, run rows, source states, raw
    answers, gap attempts. Set-based, so a pass over a thousand sources costs a handful of statements. Used for a
    pass written at once and for one coming out of the spool. Returns the readings written.

    `readings` are the results' batches in one frame (`pass_readings`, or a spool entry's readings) and `newest`
    their `newest_finals`: the caller has both already (it spools the one and moves its kept bookmarks with the
    other), so they are not computed again here."""
    return sum(apply_pass_per_source(con, results, readings, newest, now).values())


def apply_pass_per_source(
    con: duckdb.DuckDBPyConnection,
    results: list[GroupResult],
    readings: pl.DataFrame,
    newest: dict[int, datetime],
    now: datetime,
) -> dict[int, int]:
    """`apply_pass`, returning the readings written per source id: a group commit
    (`core.collect.group_writer`) writes several polls' passes at once and tells each its own count."""
    if not results:
        return {}
    states = read_states(con, {i for r in results for i in r.source_ids})
    written = ingest_per_source(con, readings, now) if readings.height else {}
    for source_ids, start, end in _touched_spans(results, readings):
        rollups.refresh(con, source_ids, start, end)
    _record_runs(con, results, written)
    _record_states(con, results, states, newest, now)
    for result in results:
        write_exchanges(con, result.source_ids[0], result.exchanges)
        if result.gap_window:
            record_attempt(con, result.source_ids, *result.gap_window, now)
    return written


def _span(batch: pl.DataFrame) -> tuple[datetime, datetime]:
    start, end = batch.select(
        pl.col("ts").min(), (pl.col("ts") + pl.duration(seconds=pl.col("interval_s"))).max().alias("end")
    ).row(0)
    return start, end


def _touched_spans(results: list[GroupResult], readings: pl.DataFrame) -> list[tuple[list[int], datetime, datetime]]:
    """The rollup ranges to rebuild: results whose time spans overlap are merged into one refresh (the usual
    pass: every group re-read the same recent hours), a group re-reading an old gap keeps its own. The spans come
    from one aggregation over all the pass's `readings` (the results' batches), not one per result: a group commit
    carries hundreds of results."""
    if readings.height == 0:
        return []
    per_source = {
        int(source_id): (start, end)
        for source_id, start, end in readings.group_by("source_id")
        .agg(
            pl.col("ts").min().alias("start"),
            (pl.col("ts") + pl.duration(seconds=pl.col("interval_s"))).max().alias("end"),
        )
        .iter_rows()
    }
    spans = []
    for result in results:
        found = [per_source[i] for i in result.source_ids if i in per_source]
        if found:
            spans.append((min(start for start, _ in found), max(end for _, end in found), result.source_ids))
    spans.sort(key=lambda span: (span[0], span[1]))
    merged: list[tuple[list[int], datetime, datetime]] = []
    for start, end, source_ids in spans:
        if merged and start <= merged[-1][2]:
            ids, first, last = merged[-1]
            merged[-1] = (ids + source_ids, first, max(last, end))
        else:
            merged.append((list(source_ids), start, end))
    return merged


def refresh_rollups(con: duckdb.DuckDBPyConnection, batch: pl.DataFrame | None) -> None:
    """Rebuild the rollup buckets this batch touched, in the same transaction as the readings."""
    if batch is None or batch.height == 0:
        return
    start, end = _span(batch)
    rollups.refresh(con, batch["source_id"].unique().to_list(), start, end)


RUNS_SCHEMA = pl.Schema(
    {
        "source_id": pl.Int64(),
        "provider": pl.String(),
        "started_at": pl.Datetime("us", "UTC"),
        "duration_ms": pl.Float64(),
        "outcome": pl.String(),
        "http_status": pl.Int32(),
        "error": pl.String(),
        "rows_written": pl.Int32(),
        "quota_used": pl.Int32(),
        "quota_remaining": pl.Int32(),
    }
)


def _record_runs(con: duckdb.DuckDBPyConnection, results: list[GroupResult], written: dict[int, int]) -> None:
    """One `collector_runs` row per source of every polled vendor site."""
    rows = [
        (
            source_id,
            r.provider,
            r.started_at,
            r.duration_ms,
            r.outcome,
            r.http_status,
            r.error,
            written.get(source_id, 0),
            r.quota_used,
            r.quota_remaining,
        )
        for r in results
        for source_id in r.source_ids
    ]
    _insert_frame(
        con,
        pl.DataFrame(rows, schema=RUNS_SCHEMA, orient="row"),
        f"INSERT INTO collector_runs ({', '.join(RUNS_SCHEMA)})",
    )


STATES_SCHEMA = pl.Schema(
    {
        "source_id": pl.Int64(),
        "bookmark_ts": pl.Datetime("us", "UTC"),
        "consecutive_failures": pl.Int32(),
        "circuit": pl.String(),
        "next_due_at": pl.Datetime("us", "UTC"),
        "retry_at": pl.Datetime("us", "UTC"),
        "stopped_reason": pl.String(),
        "updated_at": pl.Datetime("us", "UTC"),
    }
)


def _record_states(
    con: duckdb.DuckDBPyConnection,
    results: list[GroupResult],
    before: dict[int, SourceState],
    newest: dict[int, datetime],
    now: datetime,
) -> None:
    """Each source's state after the poll: bookmark (never moved back), failures, backoff and circuit, why it
    stopped."""
    rows = []
    for result in results:
        for source_id in result.source_ids:
            previous = before.get(source_id)
            failures, circuit, next_due = next_health(
                result.outcome, previous.failures if previous else 0, now, random.uniform(0.8, 1.2)
            )
            if circuit == "open" and (previous is None or previous.circuit != "open"):
                log.warning(
                    "source %s: circuit opened after %d failures; next probe at %s", source_id, failures, next_due
                )
            rows.append(
                (
                    source_id,
                    newest.get(source_id),
                    failures,
                    circuit,
                    next_due,
                    result.retry_at,
                    result.stopped_reason,
                    now,
                )
            )
    _insert_frame(
        con,
        pl.DataFrame(rows, schema=STATES_SCHEMA, orient="row"),
        f"INSERT INTO source_state ({', '.join(STATES_SCHEMA)})",
        " ON CONFLICT (source_id) DO UPDATE SET"
        " bookmark_ts = coalesce(greatest(source_state.bookmark_ts, excluded.bookmark_ts),"
        " source_state.bookmark_ts, excluded.bookmark_ts),"
        " consecutive_failures = excluded.consecutive_failures, circuit = excluded.circuit,"
        " next_due_at = excluded.next_due_at, retry_at = excluded.retry_at,"
        " stopped_reason = excluded.stopped_reason, updated_at = excluded.updated_at",
    )


def _insert_frame(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, insert: str, tail: str = "") -> None:
    """`insert` + SELECT every row of `frame` + `tail`, in one statement."""
    con.register("_pass_rows", frame)
    try:
        con.execute(f"{insert} SELECT * FROM _pass_rows{tail}")
    finally:
        con.unregister("_pass_rows")
