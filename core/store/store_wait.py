"""Waiting out a database that another program holds: since when it is held, and whether it is free again.

The dashboard shows "another program holds it since HH:MM" and looks again by itself every few seconds. The time
is the first moment any page saw the file held in this episode, so every page, tab and rerun shows the same one;
`HeldSince` keeps it for one database, shared by every session of the process (thread-safe). An episode ends when
a look finds the file free, or when nobody has seen it held for `forget_after_s` (every page that waits looks
every few seconds, so such a gap means nobody was waiting: a later hold is a new episode).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import duckdb

from core.store.store import Store, StoreBusy, StoreError


class HeldSince:
    """Since when one database has been seen held."""

    def __init__(
        self,
        *,
        forget_after_s: float = 30.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.forget_after_s = forget_after_s
        self._now, self._monotonic = now, monotonic
        self._lock = threading.Lock()
        self._since: datetime | None = None
        self._last_seen = 0.0

    def seen_held(self) -> datetime:
        """Note that the file is held now; the moment it was first seen held in this episode."""
        with self._lock:
            moment = self._monotonic()
            if self._since is None or moment - self._last_seen > self.forget_after_s:
                self._since = self._now()
            self._last_seen = moment
            return self._since

    def seen_free(self) -> None:
        """The file could be opened: the episode is over."""
        with self._lock:
            self._since = None

    @property
    def since(self) -> datetime | None:
        with self._lock:
            return self._since


def still_held(store: Store, wait_s: float = 0.0) -> bool:
    """Whether another program still holds the file: one attempt (after `wait_s` at most) to open it for reading.

    Only "held" counts: any other failure (the file gone, a fault of the disk) says False, so the caller goes back
    to its real work, which reports that failure in its own words."""
    try:
        with store.connect(read_only=True, timeout_s=wait_s):
            return False
    except StoreBusy:
        return True
    except (StoreError, duckdb.Error):  # not "held": the caller's own run meets it and says what it is
        return False
