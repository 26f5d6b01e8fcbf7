"""What the ingest service saw per Push source, for API Health: requests accepted and refused (with the latest
reason) over the last `WINDOW_S`, readings taken, and when. Counted in memory at every answer; written to
`push_activity` every `PUBLISH_EVERY_S` (one small transaction; skipped while the file is held, the figures wait in
memory). A refusal's reason is the problem's title, never anything the request carried but its source id: no token,
no body."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from core.store.store import Store, StoreError

log = logging.getLogger(__name__)

WINDOW_S = 15 * 60
PUBLISH_EVERY_S = 5.0


@dataclass
class _Source:
    events: deque[tuple[float, bool, int]] = field(default_factory=deque)  # (epoch s, accepted, readings)
    last_request_at: datetime | None = None
    last_refused_at: datetime | None = None
    last_refusal: str | None = None


class PushActivity:
    """Thread-safe counters per source id."""

    def __init__(self, window_s: int = WINDOW_S) -> None:
        self.window_s = window_s
        self._sources: dict[int, _Source] = {}
        self._lock = threading.Lock()
        self._published = -float("inf")

    def accepted(self, source_id: int, readings: int, now: datetime) -> None:
        self._record(source_id, now, accepted=True, readings=readings)

    def refused(self, source_id: int, status: int, reason: str, now: datetime) -> None:
        self._record(source_id, now, accepted=False, reason=f"{status}: {reason}")

    def _record(self, source_id: int, now: datetime, *, accepted: bool, readings: int = 0, reason: str = "") -> None:
        with self._lock:
            source = self._sources.setdefault(source_id, _Source())
            source.events.append((now.timestamp(), accepted, readings))
            source.last_request_at = now
            if not accepted:
                source.last_refused_at, source.last_refusal = now, reason[:300]
            self._prune(source, now.timestamp())

    def _prune(self, source: _Source, now_s: float) -> None:
        while source.events and source.events[0][0] < now_s - self.window_s:
            source.events.popleft()

    def rows(self, now: datetime) -> pl.DataFrame:
        """One row per source seen, as `push_activity` holds them."""
        with self._lock:
            rows = []
            for source_id, source in self._sources.items():
                self._prune(source, now.timestamp())
                accepted = [e for e in source.events if e[1]]
                rows.append(
                    {
                        "source_id": source_id,
                        "window_s": self.window_s,
                        "accepted": len(accepted),
                        "refused": len(source.events) - len(accepted),
                        "readings": sum(e[2] for e in accepted),
                        "last_request_at": source.last_request_at,
                        "last_refused_at": source.last_refused_at,
                        "last_refusal": source.last_refusal,
                        "updated_at": now,
                    }
                )
        return pl.DataFrame(rows, schema=SCHEMA)

    def publish(self, store: Store, *, force: bool = False) -> bool:
        """Write the figures if `PUBLISH_EVERY_S` passed (or `force`); False when skipped or the file was held."""
        if not force and time.monotonic() - self._published < PUBLISH_EVERY_S:
            return False
        self._published = time.monotonic()
        frame = self.rows(datetime.now(UTC))
        if frame.is_empty():
            return False
        try:
            with store.transaction(timeout_s=0.5) as con:
                con.register("push_activity_now", frame)
                con.execute("INSERT OR REPLACE INTO push_activity SELECT * FROM push_activity_now")
                con.unregister("push_activity_now")
        except StoreError as exc:
            log.debug("push figures not written now: %s", exc)
            return False
        return True


SCHEMA = pl.Schema(
    [
        ("source_id", pl.Int64()),
        ("window_s", pl.Int32()),
        ("accepted", pl.Int32()),
        ("refused", pl.Int32()),
        ("readings", pl.Int32()),
        ("last_request_at", pl.Datetime("us", "UTC")),
        ("last_refused_at", pl.Datetime("us", "UTC")),
        ("last_refusal", pl.String()),
        ("updated_at", pl.Datetime("us", "UTC")),
    ]
)
