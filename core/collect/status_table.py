"""A status table: figures a collector thread keeps in memory (MQTT connections, live streams), written for API Health
(another process, which reads everything from the file) every `PUBLISH_EVERY_S` in one small transaction: the rows
given replace the table's, rows of sources no longer followed are deleted. Skipped while the file is held (the
figures are in memory and the next write catches up)."""

from __future__ import annotations

import logging
import time

import polars as pl

from core.store.store import Store, StoreError

log = logging.getLogger(__name__)

PUBLISH_EVERY_S = 5.0


class StatusTable:
    """One table keyed by `source_id`, whose columns are the rows' columns in order."""

    def __init__(self, store: Store, table: str, *, every_s: float = PUBLISH_EVERY_S) -> None:
        self.store, self.table = store, table
        self.every_s = every_s
        self._published = -float("inf")
        # The table is known empty: with no source of this kind (the demo, a vendor-only fleet) nothing is written
        # at all after the first clear-out of rows a previous run left.
        self._cleared = False

    def due(self) -> bool:
        """Whether `publish` would write now (`every_s` passed since the last write). Building the rows can cost more
        than writing them (a snapshot of every source's counters), so callers ticking more often than `every_s` build
        them only when this says so."""
        return time.monotonic() - self._published >= self.every_s

    def publish(self, rows: pl.DataFrame, *, force: bool = False) -> bool:
        """Write `rows` as the whole table if `every_s` passed (or `force`); False when skipped or held."""
        if rows.is_empty() and self._cleared:
            return False
        if not force and not self.due():
            return False
        self._published = time.monotonic()
        table, now_view = self.table, f"{self.table}_now"
        try:
            with self.store.transaction(timeout_s=0.5) as con:
                if rows.is_empty():
                    con.execute(f"DELETE FROM {table}")
                    self._cleared = True
                    return True
                con.register(now_view, rows)
                con.execute(f"DELETE FROM {table} WHERE source_id NOT IN (SELECT source_id FROM {now_view})")
                con.execute(f"INSERT OR REPLACE INTO {table} SELECT * FROM {now_view}")
                con.unregister(now_view)
                self._cleared = False
        except StoreError as exc:
            log.debug("%s not written now: %s", table, exc)
            return False
        return True
