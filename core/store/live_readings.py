"""`live_readings`: an Enphase system's live stream as 1-minute averages per source, with their coverage
(docs/real-time.md, "The Enphase live stream"). Kept apart from `readings`, whose 5/15-minute vendor history is the
source's energy: Live reads both and shows the newer; KPIs, History and the rollups read only `readings`.

A minute is written once, when it has closed: its natural key (source_id, ts) is kept unique by inserting only keys
not stored yet, so a minute sent twice (a retried write) is stored once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import duckdb
import polars as pl

from core.store.store import ts_literal

SCHEMA = pl.Schema(
    [
        ("source_id", pl.Int64()),
        ("ts", pl.Datetime("us", "UTC")),
        ("interval_s", pl.Int32()),
        ("value", pl.Float64()),
        ("coverage", pl.Float64()),
    ]
)


def store_minutes(con: duckdb.DuckDBPyConnection, minutes: pl.DataFrame, now: datetime) -> int:
    """Insert the minutes (`SCHEMA`'s columns) whose key is not stored yet, in the caller's transaction; returns the
    rows inserted. A key repeated within `minutes` keeps its last row."""
    if minutes.is_empty():
        return 0
    frame = minutes.select(SCHEMA.names()).cast(SCHEMA).unique(["source_id", "ts"], keep="last", maintain_order=True)
    oldest: datetime = frame["ts"].min()  # type: ignore[assignment]  # a datetime column's minimum
    con.register("live_minutes_new", frame)
    try:
        return int(
            con.execute(
                "INSERT INTO live_readings (source_id, ts, interval_s, value, coverage, received_at)"
                " SELECT n.source_id, n.ts, n.interval_s, n.value, n.coverage, ? FROM live_minutes_new n"
                " WHERE NOT EXISTS (SELECT 1 FROM live_readings l WHERE l.source_id = n.source_id AND l.ts = n.ts"
                f" AND l.ts >= {ts_literal(oldest)})",
                [now],
            ).fetchall()[0][0]
        )
    finally:
        con.unregister("live_minutes_new")


def newest_minutes(
    con: duckdb.DuckDBPyConnection, source_ids: Sequence[int], start: datetime, end: datetime
) -> dict[int, tuple[datetime, int, float | None, datetime]]:
    """Each source's newest minute with `start` <= ts <= `end`: {source_id: (ts, interval_s, value, received_at)}."""
    if not source_ids:
        return {}
    ids = ", ".join(str(int(i)) for i in source_ids)
    rows = con.sql(
        "SELECT source_id, max(ts), arg_max({'i': interval_s, 'v': value, 'r': received_at}, ts) FROM live_readings"
        f" WHERE ts >= {ts_literal(start)} AND ts <= {ts_literal(end)} AND source_id IN ({ids}) GROUP BY source_id"
    ).fetchall()
    return {
        int(source_id): (ts, int(row["i"]), None if row["v"] is None else float(row["v"]), row["r"])
        for source_id, ts, row in rows
    }


def drop_before(con: duckdb.DuckDBPyConnection, cutoff: datetime) -> int:
    """Forget minutes that started before `cutoff` (retention: the history has long replaced them)."""
    return int(con.execute("DELETE FROM live_readings WHERE ts < ?", [cutoff]).fetchall()[0][0])
