"""A durable on-disk spool for collection passes that could not be written because the database was held.

An analyst's `duckdb` CLI session can hold the file for as long as it stays open. The collector must keep polling
(vendor data is only kept so long, and the quota spent on a call is gone either way), so a pass it cannot write
goes here and is written once the file is free. Nothing is ever dropped and nothing is written twice:

- An entry is a directory `<spool>/pass-<utc time>-<random>/` holding `readings.parquet` (the pass's readings,
  in `core.store.readings_store.INGEST_SCHEMA` order, with `coverage` last for MQTT minutes) and `pass.json`
  (everything else the pass would have written).
  It is written under a temporary name, fsynced, then renamed: a crash leaves either a whole entry or a
  `tmp-*` directory that is ignored and cleaned up, never half an entry.
- Applying an entry records its name in `spool_applied` in the same transaction as its rows; the directory is
  removed only after that commits. A crash between the two (or during the removal, which can leave a directory
  part empty) leaves a directory whose name is already recorded, and the next drain just removes it: the name is
  looked up before the entry is read.
- An entry that cannot be read or written because of what it holds (a truncated or foreign file, a garbled or
  incomplete `pass.json`, readings of the wrong shape) would otherwise stop every drain, and so every start of the
  collector, for good: it is moved to the quarantine (`core.store.quarantine`) with a note and skipped, and the entries
  behind it are written in order. A failure that is not the entry's fault (the file held, a full disk, an I/O
  error) leaves it where it is, for the next drain (`StoreBusy` / `StoreFault`).

Both files are read with `core.store.private_files.read_bounded`: a named pipe or a device put in an entry is damage
(read, it would block the drain, which holds the database's write lock, for good), and so is a file over
`ENTRY_FILE_MAX_BYTES`. That bound is generous on purpose: it only has to refuse what no pass can be (an endless
device, a stray file of gigabytes) before it is read whole into memory, never a real pass (see its comment).

The spool lives beside the database (`<db file>.spool/`), like the lock file, and is its owner's only (folders
0700, files 0600).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from core.store.private_files import (
    PRIVATE_FILE,
    NotAFile,
    NotUtf8,
    TooLarge,
    decode_utf8,
    fsync_dir,
    fsync_file,
    os_error_words,
    private_dir,
    read_bounded,
    write_private,
)
from core.store.quarantine import FOLDER, Quarantine
from core.store.readings_store import COVERAGE_SCHEMA, INGEST_SCHEMA
from core.store.store import Store, StoreError, StoreFault, StoreUnavailable, fault_cause

log = logging.getLogger(__name__)

READINGS_FILE = "readings.parquet"
META_FILE = "pass.json"
LEFTOVER_AGE_S = 600
# A pass is written whole from the memory of the collector that fetched it, so a real one is far below this: the
# largest (a first 31-day catch-up of 1-minute readings for 1,000 sources, 45 million rows) makes a parquet file
# of a few hundred MB. Its raw vendor answers (pass.json) are of the same order. The bound only stops what no pass
# can be before it is read whole: an endless device, a stray multi-GB file.
ENTRY_FILE_MAX_BYTES = 2_000_000_000
# Failures that say nothing about the entry: the store (held, full, failing), the disk, the memory. The entry stays.
NOT_THE_ENTRYS_FAULT: tuple[type[BaseException], ...] = (
    StoreError,
    OSError,
    MemoryError,
    duckdb.OperationalError,  # I/O, out of memory, connection, transaction conflicts
    duckdb.FatalException,
    duckdb.InterruptException,
    duckdb.PermissionException,
    duckdb.InternalException,
)


@dataclass(frozen=True)
class SpoolEntry:
    name: str
    meta: dict[str, Any]
    readings: pl.DataFrame


class DamagedEntry(Exception):
    """An entry whose files cannot be used as they are; the message says why, in the operator's terms."""


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.quarantine = Quarantine(directory / FOLDER)

    @classmethod
    def beside(cls, db_path: Path) -> Spool:
        return cls(db_path.with_name(db_path.name + ".spool"))

    def put(self, meta: dict[str, Any], readings: pl.DataFrame) -> str:
        """Write one entry durably; returns its name. `meta` must be JSON-serialisable."""
        private_dir(self.directory)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"pass-{stamp}-{uuid.uuid4().hex[:8]}"
        tmp = self.directory / f"tmp-{name}"
        private_dir(tmp)
        readings.write_parquet(tmp / READINGS_FILE)
        os.chmod(tmp / READINGS_FILE, PRIVATE_FILE)
        fsync_file(tmp / READINGS_FILE)
        write_private(tmp / META_FILE, json.dumps(meta).encode("utf-8"))
        fsync_dir(tmp)
        os.rename(tmp, self.directory / name)
        fsync_dir(self.directory)
        return name

    def pending(self) -> list[str]:
        """Names of whole entries, oldest first (names sort by time)."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir() and p.name.startswith("pass-"))

    def read(self, name: str) -> SpoolEntry:
        """The entry; `DamagedEntry` when its files are missing, truncated, garbled, of the wrong shape, not files
        or not ours to read (that lasts, and would hold back every entry behind it). Other `OSError`s (I/O) are not
        the entry's fault and pass through."""
        path = self.directory / name
        try:
            meta = json.loads(decode_utf8(_read_file(path, META_FILE)))
        except NotUtf8 as exc:
            raise DamagedEntry(f"{META_FILE} is {exc}") from None
        except ValueError as exc:
            raise DamagedEntry(f"{META_FILE} is not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise DamagedEntry(f"{META_FILE} holds {type(meta).__name__} where an object was expected")
        return SpoolEntry(name, meta, _read_readings(path))

    def drain(
        self,
        store: Store,
        apply: Callable[[duckdb.DuckDBPyConnection, SpoolEntry], int],
        *,
        timeout_s: float | None = None,
    ) -> tuple[int, int]:
        """Write every pending entry, each in its own transaction, oldest first. Returns (entries, rows written).

        A damaged entry (unreadable, or `apply` failing for a reason of its own) goes to the quarantine and the
        next one is written. Raises `StoreBusy` when the file is still held, `StoreFault` when an entry cannot be
        written for another reason that is not its own (disk full, I/O); what was applied before stays applied.
        """
        self._remove_leftovers()
        entries = rows = 0
        for name in self.pending():
            if not (self.directory / name).is_dir():
                continue  # another process (a `--once` beside the daemon) wrote or quarantined it meanwhile
            try:
                written = self._apply(store, apply, name, timeout_s)
            except DamagedEntry as exc:
                self._quarantine(name, str(exc))
                continue
            except StoreUnavailable:
                raise
            except NOT_THE_ENTRYS_FAULT as exc:
                raise _deferred(self.directory / name, exc) from exc
            except Exception as exc:  # anything else `apply` raised is about what the entry holds
                self._quarantine(name, f"it cannot be written to the database: {_plain(exc)}")
                continue
            with contextlib.suppress(FileNotFoundError):  # another process removed it first
                shutil.rmtree(self.directory / name)
            if written is not None:
                entries += 1
                rows += written
        if entries:
            log.info("spool: wrote %d held-back pass(es), %d reading(s)", entries, rows)
        return entries, rows

    def private_paths(self) -> list[Path]:
        """The spool folder and everything in it (entries, quarantine, journal), for `core.store.private_files.tighten`
        at start: a spool an older version (or a copy) left readable by others."""
        try:
            return [self.directory, *self.directory.rglob("*")] if self.directory.is_dir() else []
        except OSError as exc:  # a folder inside that cannot be listed: what can be reached is still tightened
            log.warning("could not look through %s to make it private: %s", self.directory, exc)
            return [self.directory]

    def _apply(
        self,
        store: Store,
        apply: Callable[[duckdb.DuckDBPyConnection, SpoolEntry], int],
        name: str,
        timeout_s: float | None,
    ) -> int | None:
        """Rows written by one entry, in one transaction; None when it had been written already (only its folder
        was left: it is read only when it has not)."""
        with store.transaction(timeout_s=timeout_s) as con:
            if con.execute("SELECT count(*) FROM spool_applied WHERE entry = ?", [name]).fetchall()[0][0]:
                return None
            written = apply(con, self.read(name))
            con.execute("INSERT INTO spool_applied (entry, applied_at) VALUES (?, now())", [name])
        return written

    def _quarantine(self, name: str, reason: str) -> None:
        """Move a damaged entry aside (nothing to do when another drainer, a `--once` beside the daemon, did it
        first); `StoreFault` when it cannot be moved: it stays, with the entries behind it, for a later drain."""
        what = f"spool entry {name} (a collection pass waiting to be written)"
        try:
            self.quarantine.hold_entry(self.directory / name, what, reason)
        except OSError as exc:
            words = os_error_words(exc)
            raise StoreFault(self.directory / name, f"damaged ({reason}) but cannot be moved aside: {words}") from exc

    def _remove_leftovers(self) -> None:
        """`tmp-*` directories are entries a crash interrupted before they were whole: nothing acknowledged them.
        Young ones may still be being written by another thread, so only stale ones go."""
        if not self.directory.is_dir():
            return
        stale_before = time.time() - LEFTOVER_AGE_S
        for path in self.directory.glob("tmp-*"):
            try:
                stale = path.stat().st_mtime < stale_before
            except FileNotFoundError:  # another drainer removed it between the listing and here
                continue
            if stale:
                shutil.rmtree(path, ignore_errors=True)


def _read_file(entry: Path, name: str) -> bytes:
    """One file of an entry, read within bounds; `DamagedEntry` when it is missing, not a file, too large or not
    ours to read. Other `OSError`s (I/O) pass through: they are not the entry's fault."""
    try:
        return read_bounded(entry / name, ENTRY_FILE_MAX_BYTES)
    except FileNotFoundError:
        raise DamagedEntry(f"{name} is missing (the entry is incomplete)") from None
    except PermissionError:
        raise DamagedEntry(f"{name} cannot be read: permission denied (another user's file?)") from None
    except NotAFile as exc:
        raise DamagedEntry(f"{name} {exc}, not a file this collector wrote") from None
    except TooLarge as exc:
        raise DamagedEntry(f"{name} {exc}: no pass this collector writes is that large") from None


def _read_readings(entry: Path) -> pl.DataFrame:
    data = _read_file(entry, READINGS_FILE)
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except (OSError, MemoryError):
        raise  # not the entry's fault
    except (Exception, pl.exceptions.PanicException) as exc:  # a damaged file can make the parquet reader panic
        raise DamagedEntry(f"{READINGS_FILE} cannot be read, it is truncated or damaged ({_plain(exc)})") from None
    if frame.schema not in (INGEST_SCHEMA, COVERAGE_SCHEMA):  # MQTT minutes carry their coverage
        raise DamagedEntry(
            f"{READINGS_FILE} has the columns {_columns(frame.schema)}; a spool entry's readings have"
            f" {_columns(INGEST_SCHEMA)}, and may have coverage"
        )
    return frame


def _deferred(path: Path, exc: BaseException) -> StoreFault:
    """A failure that is not the entry's: the entry, and those behind it, wait for a later drain."""
    return StoreFault(path, f"cannot be written for now: {fault_cause(exc) or _plain(exc)}")


def _columns(schema: pl.Schema) -> str:
    return "(" + ", ".join(f"{name} {dtype}" for name, dtype in schema.items()) + ")"


def _plain(exc: BaseException) -> str:
    """An exception in words: a missing key says so, others give their text (and their kind when it is empty)."""
    if isinstance(exc, KeyError):
        return f"a required field is missing from {META_FILE}: {exc}"
    text = str(exc).strip()
    return text or type(exc).__name__
