"""The audit log: who changed what, when, written in the transaction of the change itself (docs/access.md).

One row per changed object: the actor (`core.actors`), the action, the object (type, id, name at the time), the
fields that changed with their values before and after as JSON. A credential's value never enters the log: its row
says "API key replaced" with no values (`SECRET_MARK` stands where a value would be). Rows are only ever added;
nothing of ours updates or deletes them (deleting a source keeps its history: the log is about people, not data).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from core.actors import Actor

SECRET_MARK = "(secret)"  # where a credential's value would stand: its presence, never the value

AUDIT_SCHEMA = pl.Schema(
    {
        "changed_at": pl.Datetime("us", "UTC"),
        "actor": pl.String(),
        "actor_kind": pl.String(),
        "action": pl.String(),
        "object_type": pl.String(),
        "object_id": pl.Int64(),
        "object_name": pl.String(),
        "fields": pl.List(pl.String()),
        "before": pl.String(),
        "after": pl.String(),
        "summary": pl.String(),
        "origin": pl.String(),
    }
)


@dataclass(frozen=True)
class AuditEntry:
    """One change of one object. `before`/`after` hold only the changed fields (all of them for a create or a
    delete); `summary` is the sentence the Audit page shows ("API key replaced", "capacity_kw 5.0 -> 6.5")."""

    action: str  # create, update, delete, or a verb of its own ("sign in", "rotate keys", "import readings")
    object_type: str  # site, meter, source, credential, push token, user, api token, alert, readings, keys
    object_id: int | None
    object_name: str
    summary: str
    fields: tuple[str, ...] = ()
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)


def _json(values: dict[str, Any]) -> str | None:
    return json.dumps(values, default=str, sort_keys=True) if values else None


def record(
    con: duckdb.DuckDBPyConnection, actor: Actor, entries: Sequence[AuditEntry], now: datetime, *, origin: str = ""
) -> int:
    """Add `entries` as `actor`'s, in the caller's transaction (so the change and its record land together or not at
    all); returns how many rows were written."""
    if not entries:
        return 0
    frame = pl.DataFrame(
        {
            "changed_at": [now] * len(entries),
            "actor": [actor.label] * len(entries),
            "actor_kind": [actor.kind.value] * len(entries),
            "action": [e.action for e in entries],
            "object_type": [e.object_type for e in entries],
            "object_id": [e.object_id for e in entries],
            "object_name": [e.object_name for e in entries],
            "fields": [list(e.fields) for e in entries],
            "before": [_json(e.before) for e in entries],
            "after": [_json(e.after) for e in entries],
            "summary": [e.summary for e in entries],
            "origin": [origin or None] * len(entries),
        },
        schema=AUDIT_SCHEMA,
    )
    con.register("audit_new", frame)
    try:
        con.execute(
            "INSERT INTO audit_log (changed_at, actor, actor_kind, action, object_type, object_id, object_name, fields,"
            " before, after, summary, origin) SELECT changed_at, actor, actor_kind, action, object_type, object_id,"
            " object_name, fields, before::JSON, after::JSON, summary, origin FROM audit_new"
        )
    finally:
        con.unregister("audit_new")
    return len(entries)


@dataclass(frozen=True)
class AuditFilter:
    """What the Audit page asks for: a time range, and optionally who, which kind of object, which action."""

    start: datetime
    end: datetime
    actor: str | None = None
    object_type: str | None = None
    action: str | None = None
    text: str | None = None  # found in the object's name or the summary, case-insensitive
    limit: int = 5_000


def read(con: duckdb.DuckDBPyConnection, where: AuditFilter) -> pl.DataFrame:
    """Rows matching `where`, newest first."""
    clauses = ["changed_at >= ?", "changed_at < ?"]
    params: list[object] = [where.start, where.end]
    for column, value in (("actor", where.actor), ("object_type", where.object_type), ("action", where.action)):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.text:
        clauses.append("(contains(lower(object_name), lower(?)) OR contains(lower(summary), lower(?)))")
        params += [where.text, where.text]
    sql = (
        "SELECT id, changed_at, actor, actor_kind, action, object_type, object_id, object_name, summary, fields,"
        " before::VARCHAR AS before, after::VARCHAR AS after, origin FROM audit_log WHERE "
        + " AND ".join(clauses)
        + f" ORDER BY changed_at DESC, id DESC LIMIT {int(where.limit)}"
    )
    return con.sql(sql, params=params).pl()


def choices(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """The actors, object types and actions present, for the page's filters."""
    out: dict[str, list[str]] = {}
    for column in ("actor", "object_type", "action"):
        out[column] = [str(r[0]) for r in con.sql(f"SELECT DISTINCT {column} FROM audit_log ORDER BY 1").fetchall()]
    return out
