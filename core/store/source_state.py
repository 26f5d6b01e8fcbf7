"""Each polled source's state between passes, as `source_state` keeps it: its bookmark (the start of its newest
final interval) and its health (rate-limit wait, stop, consecutive failures, next due time, circuit).

The collector writes it after each poll (`core.collect.pass_write`) by the rules of `core.collect.source_health`;
API Health and the collector's scheduler read it here.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import duckdb

from core.store.secret_store import SOURCE_CREDENTIALS


@dataclass(frozen=True)
class SourceState:
    bookmark: datetime | None
    retry_at: datetime | None
    stopped: bool  # stopped for a reason (rejected key, retired API) that only a configuration change can cure
    failures: int = 0
    next_due_at: datetime | None = None  # backing off after transient failures, or the circuit is open
    circuit: str = "closed"


def read_states(con: duckdb.DuckDBPyConnection, only: Collection[int] | None = None) -> dict[int, SourceState]:
    """Per source (of `only`, else every one): bookmark, and whether it must sit this pass out. A stop holds until
    the source's settings or credentials change after it (their `updated_at` is newer than the state's). A write
    passes `only`: it needs the states of the sources it writes, not the fleet's, inside its transaction."""
    sql = (  # a shared key saved anew on the source holding it lifts the stops of all its sources
        "SELECT s.source_id, s.bookmark_ts, s.retry_at,"
        " s.stopped_reason IS NOT NULL AND s.updated_at >= greatest(e.updated_at,"
        f" coalesce((SELECT max(updated_at) FROM {SOURCE_CREDENTIALS} x WHERE x.source_id = s.source_id),"
        " e.updated_at)),"
        " s.consecutive_failures, s.next_due_at, s.circuit"
        " FROM source_state s JOIN energy_sources e ON e.id = s.source_id"
    )
    if only is None:
        rows = con.sql(sql).fetchall()
    else:
        rows = con.execute(sql + " WHERE s.source_id IN (SELECT UNNEST(?))", [list(only)]).fetchall()
    return {int(r[0]): SourceState(r[1], r[2], bool(r[3]), int(r[4]), r[5], str(r[6])) for r in rows}
