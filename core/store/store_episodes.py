"""What the collector says about the database being unavailable: once when an episode starts, once when it ends.

An episode is a stretch of time during which a file cannot be written: another program holds the database
(WARNING), or the file system refuses a file (ERROR: disk full, read-only, permission denied). A full disk can
last a weekend and the log may sit on that same disk, so a failing attempt says nothing more than the first one
did. Faults are told per cause: the database and its spool on one full disk are one episode, while a damaged spool
entry that cannot be moved aside is another, which may outlast the first. The write that shows the path that
started an episode works again ends it with one INFO line.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

from core.store.store import Store, StoreFault, StoreUnavailable

log = logging.getLogger("core.collect.collection")


class StoreEpisodes:
    """Shared by a process's polls, drains and alert evaluations (threads), so each episode is told once."""

    def __init__(
        self,
        store: Store,
        spool_directory: Path | None = None,
        *,
        going_on: str = "polling goes on with the configuration read last",
    ) -> None:
        self._spool_directory = spool_directory
        self._going_on = going_on  # what the process keeps doing while the file is held, in its log line
        # What a database write that went through shows to work: the file, its lock and its folder.
        self.database_paths = (store.path, store.lock_path, store.path.parent)
        self._lock = threading.Lock()
        self._held_since: datetime | None = None
        self._faults: dict[str, StoreFault] = {}  # ongoing, by cause (the first fault of each), oldest first

    @property
    def fault(self) -> StoreFault | None:
        """The oldest file-system fault going on (the one that started the trouble), if any."""
        with self._lock:
            return next(iter(self._faults.values()), None)

    def unavailable(self, exc: StoreUnavailable) -> None:
        if isinstance(exc, StoreFault):
            self.faulted(exc)
        else:
            self.held()

    def held(self) -> None:
        with self._lock:
            if self._held_since is not None:
                return
            self._held_since = datetime.now(UTC)
        log.warning(
            "another program holds the database: %s, and what cannot be written waits in the spool (%s)",
            self._going_on,
            self._spool_directory or "no spool: passes fail",
        )

    def faulted(self, fault: StoreFault) -> None:
        """The traceback, if any, is the caller's to log at DEBUG: the operator needs the path and the cause."""
        with self._lock:
            if fault.cause in self._faults:
                return
            self._faults[fault.cause] = fault
        log.error("cannot write %s: %s; what is fetched is kept and written once that is over", fault.path, fault.cause)

    def free(self, *paths: Path) -> None:
        """A write went through: the database (default) or `paths` work again; their hold or faults are over."""
        freed = paths or self.database_paths
        with self._lock:
            held_since = self._held_since if not paths else None
            if not paths:
                self._held_since = None
            over = [fault for fault in self._faults.values() if fault.path in freed]
            for fault in over:
                del self._faults[fault.cause]
        if held_since is not None:
            log.info("the database is free again after %d s", (datetime.now(UTC) - held_since).total_seconds())
        for fault in over:
            log.info("%s can be written again (after: %s)", fault.path, fault.cause)
