"""The one way into the DuckDB file.

DuckDB allows one writing process or several reading ones, and a conflicting open fails at once. So no process
keeps a connection between operations: each operation opens a short-lived connection under a sidecar `flock`
(which queues our own processes and threads fairly) and retries, with a bounded jittered wait, the lock errors
raised while an outside program such as the `duckdb` CLI holds the file. When the wait runs out the caller gets
`StoreBusy`, whose message tells the user what to do; nothing half-done is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)


class StoreError(Exception):
    """A storage failure whose message is safe to show to a user."""


class StoreBusy(StoreError):
    """The database file stayed locked by another program for longer than the configured wait."""


def ts_literal(moment: datetime) -> str:
    """A TIMESTAMPTZ literal for a query's time bounds. Literals rather than parameters: DuckDB's optimizer then
    sees constants and prunes row groups by their zone maps, which keeps reads of a recent range fast on a year of
    readings."""
    return f"TIMESTAMPTZ '{moment.astimezone(UTC).isoformat()}'"


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


class Store:
    """Short-lived, serialized connections to one DuckDB file."""

    def __init__(self, path: Path | str, *, lock_timeout_s: float = 15.0) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def _file_lock(self, deadline: float) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh open file description per use: flock then also serializes threads of this process.
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            delay = 0.002
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreBusy(self._busy_message()) from None
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 1.5, 0.05)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _busy_message(self) -> str:
        return (
            f"The database {self.path.name} is busy: another program has held it for more than "
            f"{self.lock_timeout_s:g} s. Close other sessions on the file (for example a duckdb CLI) and try again."
        )

    @contextlib.contextmanager
    def connect(
        self, *, read_only: bool = False, timeout_s: float | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one operation; closed (and the file released) when the block ends.

        `timeout_s` overrides the configured wait for callers that have somewhere else to go (the collector spools).
        """
        deadline = time.monotonic() + (self.lock_timeout_s if timeout_s is None else timeout_s)
        with self._file_lock(deadline):
            con = self._open(read_only, deadline)
            try:
                # UTC: see DESIGN.md (Polars gets plain UTC datetimes). No progress bar: a long query would draw one
                # on the stderr of the collector and the CLI.
                con.execute("SET GLOBAL TimeZone = 'UTC'; SET enable_progress_bar = false")
                yield con
            finally:
                con.close()

    def _open(self, read_only: bool, deadline: float) -> duckdb.DuckDBPyConnection:
        delay = 0.005
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if not _is_lock_conflict(exc):
                    raise StoreError(f"Cannot open the database {self.path.name}: {exc}") from exc
                if time.monotonic() >= deadline:
                    log.debug("database %s stayed locked by another program", self.path.name)
                    raise StoreBusy(self._busy_message()) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 1.5, 0.2)

    @contextlib.contextmanager
    def transaction(self, *, timeout_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A writing connection inside one transaction: everything in the block lands, or nothing does."""
        with self.connect(timeout_s=timeout_s) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def exists(self) -> bool:
        return self.path.exists()
