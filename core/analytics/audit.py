"""The Audit page's reads (admins only: the role is checked here, on the server side, not by hiding the page)."""

from __future__ import annotations

import polars as pl

from core.actors import Permission, require
from core.store import audit_log
from core.store.audit_log import AuditFilter
from core.store.store import Store

# What the page and its download show, in order, with the names people read.
COLUMNS = {
    "changed_at": "When (UTC)",
    "actor": "Who",
    "action": "Action",
    "object_type": "Object",
    "object_id": "Id",
    "object_name": "Name",
    "summary": "Change",
    "before": "Before",
    "after": "After",
    "origin": "Via",
}


def audit_rows(store: Store, where: AuditFilter) -> pl.DataFrame:
    """The rows matching `where`, newest first, with `COLUMNS`' columns."""
    require(Permission.READ_AUDIT)
    with store.connect(read_only=True) as con:
        frame = audit_log.read(con, where)
    return frame.select(list(COLUMNS))


def audit_choices(store: Store) -> dict[str, list[str]]:
    """Who, which objects and which actions appear in the log: the filters' choices."""
    require(Permission.READ_AUDIT)
    with store.connect(read_only=True) as con:
        return audit_log.choices(con)
