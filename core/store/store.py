"""The one way into the DuckDB file.

DuckDB allows one writing process or several reading ones, and a conflicting open fails at once. So no process
keeps a connection between operations: each operation opens a short-lived connection under a sidecar `flock`
(which queues our own processes and threads fairly) and retries, with a bounded jittered wait, the lock errors
raised while an outside program such as the `duckdb` CLI holds the file. When the wait runs out the caller gets
`StoreBusy`, whose message tells the user what to do; nothing half-done is left behind. A caller that can say so
at once and look again by itself (a dashboard page) shortens the wait of its reads with `reads_wait_at_most`.

A fault of the file system under the database (disk full, read-only location, permission denied, a directory or
a foreign file at its path) raises `StoreFault`, one line naming the path and the cause, whatever DuckDB or the OS
said. Both are `StoreUnavailable`: the operation may succeed later, so the collector keeps what it fetched in its
spool and tries again. Reading needs no write access: on a read-only location the sidecar lock is used if it is
there and skipped if it cannot be created (DuckDB's own lock still keeps writers out), so exports and SQL work.

The database, its WAL and the lock are private to their owner: created 0600 (`core.store.private_files`).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import logging
import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from core.store.private_files import (
    DENIED,
    DISK_FULL,
    NOT_A_FOLDER,
    PRIVATE_FILE,
    QUOTA_USED_UP,
    READ_ONLY,
    make_private,
    os_error_words,
)

log = logging.getLogger(__name__)


class StoreError(Exception):
    """A storage failure whose message is safe to show to a user."""


class StoreUnavailable(StoreError):
    """The file cannot be used right now; the same operation may succeed later (keep the data, try again)."""


class StoreBusy(StoreUnavailable):
    """The database file stayed locked by another program for longer than the wait; `path` is that file."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class StoreFault(StoreUnavailable):
    """The file system refused the database file: disk full, read-only, permission denied, not a database.

    `cause` is the short reason in the user's words ("the disk is full"); the message is one line with the path,
    the cause and what to do."""

    def __init__(self, path: Path, cause: str) -> None:
        hint = _HINTS.get(cause)
        super().__init__(f"{path}: {cause}" + (f" ({hint})" if hint else ""))
        self.path, self.cause = path, cause


A_DIRECTORY = "it is a directory, not a database file"
# What DuckDB or the OS says, in the user's words. DuckDB reports OS errors by their strerror text inside its own
# messages, so both kinds are matched by that text.
_FAULT_CAUSES = (
    ("No space left on device", DISK_FULL),
    ("Disk quota exceeded", QUOTA_USED_UP),
    ("Read-only file system", READ_ONLY),
    ("Permission denied", DENIED),
    ("Operation not permitted", DENIED),
    ("Is a directory", A_DIRECTORY),
    ("not a valid DuckDB database file", "it is not a DuckDB database file"),
    ("Not a directory", NOT_A_FOLDER),
    ("database has been invalidated", "the database was closed after a file-system error"),
)
_HINTS = {
    DISK_FULL: "free some space; the collector writes what it kept once there is room",
    QUOTA_USED_UP: "free some space or raise the quota",
    READ_ONLY: "reading works there; to write, remount it writable or move the file (DATACONN_DB_PATH)",
    DENIED: "the file or its folder belongs to another user or is not writable by this one",
    A_DIRECTORY: "set DATACONN_DB_PATH to a file",
    "it is not a DuckDB database file": "set DATACONN_DB_PATH to another path; the file is left as it is",
    "the database was closed after a file-system error": "the next try opens it again",
}


def fault_cause(exc: BaseException) -> str | None:
    """The user's words for a file-system fault, or None when `exc` is not one (a query error, say)."""
    if isinstance(exc, OSError):  # in the words of every file's failures, but a directory is not a database
        return A_DIRECTORY if exc.errno == errno.EISDIR else os_error_words(exc)
    text = str(exc)
    return next((cause for needle, cause in _FAULT_CAUSES if needle in text), None)


def ts_literal(moment: datetime) -> str:
    """A TIMESTAMPTZ literal for a query's time bounds. Literals rather than parameters: DuckDB's optimizer then
    sees constants and prunes row groups by their zone maps, which keeps reads of a recent range fast on a year of
    readings."""
    return f"TIMESTAMPTZ '{moment.astimezone(UTC).isoformat()}'"


# The wait of reading connections that name none, for the code running in this context only (a thread, or a task).
_READ_WAIT_S: contextvars.ContextVar[float | None] = contextvars.ContextVar("store_read_wait_s", default=None)


@contextlib.contextmanager
def reads_wait_at_most(seconds: float) -> Iterator[None]:
    """Within the block, reading connections (`read_only=True`) that name no wait of their own give a held file
    at most `seconds` (never more than the store's configured wait) before `StoreBusy`.

    For callers that can say "held" at once and look again by themselves, as the dashboard's pages do. Writes keep
    the configured wait: a write is what someone asked for, and giving up on it early would drop it. A context
    variable rather than a parameter, so the pages' many reads through core need no argument threaded through.
    """
    token = _READ_WAIT_S.set(seconds)
    try:
        yield
    finally:
        _READ_WAIT_S.reset(token)


# The oldest DuckDB line that must read our file: the DuckDB CLI and drivers analysts have installed. DuckDB 2.0
# writes a storage format that 1.5 refuses ("version number 69"); with this setting it writes the 1.5 format, which
# it reads and writes as fast (measured on 20 million readings: same build and query times, same size). It decides
# the format of a file when the file is created; `core.store.file_format` converts a file created without it.
STORAGE_COMPATIBILITY = "v1.5.0"


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


class Store:
    """Short-lived, serialized connections to one DuckDB file."""

    def __init__(self, path: Path | str, *, lock_timeout_s: float = 15.0) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        # The names DuckDB may print for this file: as given, absolute, or with links and ".." resolved.
        self._names = {str(self.path), str(self.path.absolute()), os.path.realpath(self.path)}

    def _lock_fd(self, read_only: bool) -> int | None:
        """A fresh open file description of the lock (flock then also serializes threads of this process); None
        when a reader cannot have one because the location is read-only or not ours."""
        try:
            if not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.lock_path, os.O_CREAT | os.O_RDWR, PRIVATE_FILE)
        except OSError as exc:
            if not read_only or exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT):
                # A fault of the whole location is named by the database the user knows; one of the lock itself
                # (another user's lock file) by the lock.
                where = self.lock_path if os.path.lexists(self.lock_path) else self.path.parent
                if exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
                    where = self.path
                raise StoreFault(where, fault_cause(exc) or str(exc)) from exc
        try:
            return os.open(self.lock_path, os.O_RDONLY)  # flock works on a read-only descriptor too
        except OSError:
            log.debug("no lock file %s for a reader on a read-only location; relying on DuckDB's", self.lock_path)
            return None

    @contextlib.contextmanager
    def _file_lock(self, deadline: float, wait_s: float, read_only: bool = False) -> Iterator[None]:
        fd = self._lock_fd(read_only)
        if fd is None:
            yield
            return
        try:
            delay = 0.002
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreBusy(self._busy_message(wait_s), self.path) from None
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 1.5, 0.05)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _busy_message(self, wait_s: float) -> str:
        return (
            f"The database {self.path.name} is busy: another program has held it for more than "
            f"{wait_s:g} s. Close other sessions on the file (for example a duckdb CLI) and try again."
        )

    @contextlib.contextmanager
    def connect(
        self, *, read_only: bool = False, timeout_s: float | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one operation; closed (and the file released) when the block ends.

        `timeout_s` overrides the configured wait for callers that have somewhere else to go (the collector spools);
        without it a reading connection inside `reads_wait_at_most` waits that long at most.
        """
        if timeout_s is None:
            shorter = _READ_WAIT_S.get() if read_only else None
            timeout_s = self.lock_timeout_s if shorter is None else min(shorter, self.lock_timeout_s)
        deadline = time.monotonic() + timeout_s
        with self._file_lock(deadline, timeout_s, read_only), self._faults_named():
            con = self._open(read_only, deadline, timeout_s)
            try:
                # UTC: Polars then gets plain UTC datetimes (an "Etc/UTC" column is 4x slower to truncate). No
                # progress bar: a long query would draw one on the stderr of the collector and the CLI.
                con.execute("SET GLOBAL TimeZone = 'UTC'; SET enable_progress_bar = false")
                yield con
            finally:
                with contextlib.suppress(duckdb.Error):  # closing after a fault may fail again; the fault is raised
                    con.close()

    @contextlib.contextmanager
    def _faults_named(self) -> Iterator[None]:
        """DuckDB's file-system errors (opening, writing, committing) as one `StoreFault` naming this database.
        Only errors that name this file (or say the database was invalidated) count: a query's own error, such as
        a CSV that `read_csv` cannot find, stays what it is."""
        try:
            yield
        except duckdb.Error as exc:
            text = str(exc)
            cause = fault_cause(exc)
            if cause is None or not ("invalidated" in text or any(name in text for name in self._names)):
                raise
            log.debug("database %s: file-system fault", self.path, exc_info=True)
            raise StoreFault(self.path, cause) from exc

    def _open(self, read_only: bool, deadline: float, wait_s: float) -> duckdb.DuckDBPyConnection:
        delay = 0.005
        while True:
            try:
                return self._connect(read_only)
            except duckdb.IOException as exc:
                if not _is_lock_conflict(exc):
                    if fault_cause(exc) is not None:
                        raise  # named by `_faults_named`
                    raise StoreError(f"Cannot open the database {self.path}: {str(exc).splitlines()[0]}") from exc
                if time.monotonic() >= deadline:
                    log.debug("database %s stayed locked by another program", self.path.name)
                    raise StoreBusy(self._busy_message(wait_s), self.path) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 1.5, 0.2)

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the file; a file this call creates is made private at once (DuckDB creates it from the umask)."""
        new = not read_only and not os.path.lexists(self.path)
        # Given on every open (it only matters when this call creates the file) so no race decides the format.
        con = duckdb.connect(
            str(self.path), read_only=read_only, config={"storage_compatibility_version": STORAGE_COMPATIBILITY}
        )
        if new:
            make_private(self.path)
        return con

    def private_files(self) -> list[Path]:
        """The database's own files, for `core.store.private_files.tighten` at start."""
        return [self.path, self.path.with_name(self.path.name + ".wal"), self.lock_path]

    @contextlib.contextmanager
    def transaction(self, *, timeout_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A writing connection inside one transaction: everything in the block lands, or nothing does."""
        with self.connect(timeout_s=timeout_s) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                with contextlib.suppress(duckdb.Error):  # after a fault DuckDB may have rolled back already
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def exists(self) -> bool:
        return self.path.exists()
