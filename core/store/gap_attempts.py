"""The re-read windows the collector has tried, kept in `gap_attempts`, so a hole is never asked for twice.

The collection looks back `LOOKBACK` for holes in stored history (`core.collect.gaps`) and records every window it
re-reads; an attempt that ends before that look-back can no longer matter, so retention (`core.store.retention`)
forgets it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

LOOKBACK = timedelta(days=31)  # how far back holes are looked for, and so how long an attempt is remembered


def record_attempt(
    con: duckdb.DuckDBPyConnection, source_ids: list[int], start: datetime, end: datetime, now: datetime
) -> None:
    con.executemany(
        "INSERT INTO gap_attempts (source_id, window_start, window_end, attempted_at) VALUES (?, ?, ?, ?)",
        [[source_id, start, end, now] for source_id in source_ids],
    )


def forget_old_attempts(con: duckdb.DuckDBPyConnection, now: datetime) -> int:
    rows = con.execute("DELETE FROM gap_attempts WHERE window_end < ?", [now - LOOKBACK]).fetchall()
    return int(rows[0][0])
