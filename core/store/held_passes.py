"""Passes the database cannot take now, kept in order until it can (see docs/robustness.md, "Keeping what was
fetched").

A pass that cannot be written (another program holds the file, or the file system refuses it) goes to the spool
on disk (`core.store.spool`), durable and ordered. When the spool cannot be written either (it sits on the same full or
read-only disk), the pass waits in memory, and later passes queue behind it there, so the order holds. Memory is
bounded by a number of passes; once it is full the collector pauses polling (`full`), and since bookmarks in the
database move only when a pass is written, nothing is skipped: the next polls read the same range again. A
one-shot process (`--once`) has no memory to speak of (capacity 0): what the spool cannot take fails the pass.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import polars as pl

from core.store.spool import Spool, SpoolEntry
from core.store.store import Store, StoreFault, StoreUnavailable, fault_cause
from core.store.store_episodes import StoreEpisodes

log = logging.getLogger("core.collect.collection")

# A 15-minute pass of a 1,000-source fleet is ~14,000 readings (~1 MB): 100 passes are a day of the slowest
# schedule, a few hundred MB at most. Past that, polling pauses rather than grow or drop data.
MEMORY_CAPACITY = 100

Apply = Callable[[duckdb.DuckDBPyConnection, SpoolEntry], int]


@dataclass(frozen=True)
class Held:
    """Where a pass went: a spool entry, or memory."""

    name: str
    in_memory: bool


class HeldPasses:
    """The spool and, behind it, memory. Callers serialize `hold` and `drain` (the collection's write lock)."""

    def __init__(self, spool: Spool, episodes: StoreEpisodes, memory_capacity: int = MEMORY_CAPACITY) -> None:
        self.spool = spool
        self.episodes = episodes
        self.memory_capacity = memory_capacity
        self._memory: deque[SpoolEntry] = deque()
        self._full_said = False
        self._lock = threading.Lock()

    def waiting(self) -> bool:
        """Whether passes wait (new passes then queue behind them). A spool folder that cannot be listed is a
        fault, said once; it then counts as empty, so the database is tried first."""
        if self._memory:
            return True
        try:
            return bool(self.spool.pending())
        except OSError as exc:
            self.episodes.faulted(self._spool_fault(exc))
            return False

    def full(self) -> bool:
        """Memory holds all it may: polls should pause (said once when it starts, once when it ends)."""
        full = bool(self.memory_capacity) and len(self._memory) >= self.memory_capacity
        with self._lock:
            changed, self._full_said = full != self._full_said, full
        if changed and full:
            log.warning(
                "%d passes wait in memory for the disk: polling pauses until the database or its spool can be"
                " written again (nothing is skipped: the next polls read the same range)",
                len(self._memory),
            )
        elif changed:
            log.info("polling resumes: the passes held in memory were written")
        return full

    def hold(self, meta: dict[str, Any], readings: pl.DataFrame) -> Held:
        """Keep a pass: in the spool, else in memory; `StoreFault` when neither can take it (it is lost, and its
        range is read again by the next poll, since no bookmark moved)."""
        if not self._memory:  # once passes wait in memory, later ones queue behind them there
            try:
                return Held(self.spool.put(meta, readings), in_memory=False)
            except (OSError, pl.exceptions.PolarsError) as exc:  # Polars reports a full disk as a ComputeError
                fault = self._spool_fault(exc)
                self.episodes.faulted(fault)
                if not self.memory_capacity:  # the database's fault, said first, is the one the user acts on
                    raise (self.episodes.fault or fault) from exc
        if len(self._memory) >= self.memory_capacity:
            raise StoreFault(self.spool.directory, "the spool cannot be written and memory holds all it may")
        entry = SpoolEntry(f"memory-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}", meta, readings)
        self._memory.append(entry)
        return Held(entry.name, in_memory=True)

    def drain(self, store: Store, apply: Apply, *, timeout_s: float) -> int:
        """Write every held pass, oldest first: the spool's entries, then memory's (which came once the spool could
        not be written, so they are younger). Returns the readings written; raises `StoreUnavailable` when the
        database still refuses (what was written stays written)."""
        try:
            _, rows = self.spool.drain(store, apply, timeout_s=timeout_s)
        except OSError as exc:  # the spool's folder itself (removing an applied entry on a read-only disk)
            raise self._spool_fault(exc) from exc
        while self._memory:
            entry = self._memory[0]
            try:
                with store.transaction(timeout_s=timeout_s) as con:
                    rows += apply(con, entry)
            except StoreUnavailable:
                raise
            except Exception:  # not the file's fault: the pass itself cannot be applied
                self._memory.popleft()
                self._set_aside(entry)
                continue
            self._memory.popleft()
        return rows

    def _set_aside(self, entry: SpoolEntry) -> None:
        """A held pass the database refuses for its content goes where a damaged spool entry goes: the spool,
        whose next drain moves it to the quarantine with a note. Where even that fails, it is dropped (said at
        ERROR): its range is read again, since no bookmark moved."""
        log.debug("held pass %s cannot be applied", entry.name, exc_info=True)
        try:
            self.spool.put(entry.meta, entry.readings)
        except (OSError, pl.exceptions.PolarsError):
            log.error("a pass held in memory (%s) cannot be written nor spooled: dropped", entry.name)

    def _spool_fault(self, exc: BaseException) -> StoreFault:
        return StoreFault(self.spool.directory, fault_cause(exc) or str(exc).splitlines()[0])
