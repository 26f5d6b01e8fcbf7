"""A durable on-disk spool for collection passes that could not be written because the database was held.

An analyst's `duckdb` CLI session can hold the file for as long as it stays open. The collector must keep polling
(vendor data is only kept so long, and the quota spent on a call is gone either way), so a pass it cannot write
goes here and is written once the file is free. Nothing is ever dropped and nothing is written twice:

- An entry is a directory `<spool>/pass-<utc time>-<random>/` holding `readings.parquet` (the pass's readings,
  in `core.readings_store.INGEST_SCHEMA` order) and `pass.json` (everything else the pass would have written).
  It is written under a temporary name, fsynced, then renamed: a crash leaves either a whole entry or a
  `tmp-*` directory that is ignored and cleaned up, never half an entry.
- Applying an entry records its name in `spool_applied` in the same transaction as its rows; the directory is
  removed only after that commits. A crash between the two leaves a directory whose name is already recorded,
  and the next drain just removes it.

The spool lives beside the database (`<db file>.spool/`), like the lock file.
"""

from __future__ import annotations

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

from core.store import Store

log = logging.getLogger(__name__)

READINGS_FILE = "readings.parquet"
META_FILE = "pass.json"
LEFTOVER_AGE_S = 600


@dataclass(frozen=True)
class SpoolEntry:
    name: str
    meta: dict[str, Any]
    readings: pl.DataFrame


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def beside(cls, db_path: Path) -> Spool:
        return cls(db_path.with_name(db_path.name + ".spool"))

    def put(self, meta: dict[str, Any], readings: pl.DataFrame) -> str:
        """Write one entry durably; returns its name. `meta` must be JSON-serialisable."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"pass-{stamp}-{uuid.uuid4().hex[:8]}"
        tmp = self.directory / f"tmp-{name}"
        tmp.mkdir()
        readings.write_parquet(tmp / READINGS_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
        for file in (READINGS_FILE, META_FILE):
            _fsync_file(tmp / file)
        _fsync_dir(tmp)
        os.rename(tmp, self.directory / name)
        _fsync_dir(self.directory)
        return name

    def pending(self) -> list[str]:
        """Names of whole entries, oldest first (names sort by time)."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir() and p.name.startswith("pass-"))

    def read(self, name: str) -> SpoolEntry:
        path = self.directory / name
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        return SpoolEntry(name, meta, pl.read_parquet(path / READINGS_FILE))

    def drain(
        self,
        store: Store,
        apply: Callable[[duckdb.DuckDBPyConnection, SpoolEntry], int],
        *,
        timeout_s: float | None = None,
    ) -> tuple[int, int]:
        """Write every pending entry, each in its own transaction, oldest first. Returns (entries, rows written).

        Raises `StoreBusy` when the file is still held; what was applied before stays applied.
        """
        self._remove_leftovers()
        entries = rows = 0
        for name in self.pending():
            entry = self.read(name)
            with store.transaction(timeout_s=timeout_s) as con:
                done = con.execute("SELECT count(*) FROM spool_applied WHERE entry = ?", [name]).fetchall()[0][0]
                if not done:
                    rows += apply(con, entry)
                    con.execute("INSERT INTO spool_applied (entry, applied_at) VALUES (?, now())", [name])
            shutil.rmtree(self.directory / name)
            entries += 0 if done else 1
        if entries:
            log.info("spool: wrote %d held-back pass(es), %d reading(s)", entries, rows)
        return entries, rows

    def _remove_leftovers(self) -> None:
        """`tmp-*` directories are entries a crash interrupted before they were whole: nothing acknowledged them.
        Young ones may still be being written by another thread, so only stale ones go."""
        if not self.directory.is_dir():
            return
        stale_before = time.time() - LEFTOVER_AGE_S
        for path in self.directory.glob("tmp-*"):
            if path.stat().st_mtime < stale_before:
                shutil.rmtree(path, ignore_errors=True)
