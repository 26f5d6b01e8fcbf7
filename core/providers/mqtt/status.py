"""What API Health shows about a broker connection and the sources on it (docs/real-time.md).

`BrokerActivity` is written by the connection's network thread and read by anyone (a lock guards it); `snapshot()`
gives an immutable `BrokerStatus`. Message rates are counted in one-second buckets over the last minute, so memory
stays constant however many messages arrive. Nothing here ever holds a password: a broker is named by host and port.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

RATE_WINDOW_S = 60


class ConnectionState(StrEnum):
    CONNECTING = "connecting"  # not connected yet, or lost: retrying with backoff (`reason` says what failed)
    CONNECTED = "connected"
    REFUSED = "refused"  # the broker answered and said no (user name or password, not authorised): retrying slowly
    STOPPED = "stopped"


class RateWindow:
    """Events per minute, counted in one-second buckets."""

    def __init__(self) -> None:
        self._buckets = [0] * RATE_WINDOW_S
        self._seconds = [-1] * RATE_WINDOW_S  # which second each bucket counts

    def hit(self, at: float) -> None:
        second = int(at)
        slot = second % RATE_WINDOW_S
        if self._seconds[slot] != second:
            self._seconds[slot], self._buckets[slot] = second, 0
        self._buckets[slot] += 1

    def per_minute(self, now: float) -> int:
        newest = int(now)
        return sum(n for n, s in zip(self._buckets, self._seconds, strict=True) if newest - s < RATE_WINDOW_S)


@dataclass(frozen=True)
class SourceStatus:
    """One source's messages: when the last one came, how many in the last minute, payload errors."""

    last_message_at: datetime | None
    messages_per_minute: int
    payload_errors: int
    last_payload_error: str  # "" when none yet


@dataclass(frozen=True)
class BrokerStatus:
    broker: str  # host:port
    state: ConnectionState
    reason: str  # why not connected; "" when connected
    since: datetime  # when this state began
    subscribed: tuple[str, ...]  # the topic filters the broker accepted on the current connection, sorted
    last_message_at: datetime | None
    messages_per_minute: int
    payload_errors: int
    last_payload_error: str  # with the topic it came on; "" when none yet
    sources: dict[Hashable, SourceStatus]


@dataclass
class _SourceActivity:
    last_message_at: float | None = None
    rate: RateWindow = field(default_factory=RateWindow)
    payload_errors: int = 0
    last_payload_error: str = ""


class BrokerActivity:
    """The connection state and message counts of one broker connection (thread-safe)."""

    def __init__(self, broker: str) -> None:
        self._broker = broker
        self._lock = threading.Lock()
        self._state = ConnectionState.CONNECTING
        self._reason = ""
        self._since = datetime.now(UTC)
        self._subscribed: set[str] = set()
        self._last_message_at: float | None = None
        self._rate = RateWindow()
        self._payload_errors = 0
        self._last_payload_error = ""
        self._sources: dict[Hashable, _SourceActivity] = {}

    def set_state(self, state: ConnectionState, reason: str = "") -> bool:
        """Record the state; True when it or its reason changed (worth a log line)."""
        with self._lock:
            if (state, reason) == (self._state, self._reason):
                return False
            if state != self._state:
                self._since = datetime.now(UTC)
            self._state, self._reason = state, reason
            if state != ConnectionState.CONNECTED:
                self._subscribed.clear()
            return True

    @property
    def state(self) -> ConnectionState:
        with self._lock:
            return self._state

    def subscribed(self, topics: list[str]) -> None:
        with self._lock:
            self._subscribed.update(topics)

    def unsubscribed(self, topics: list[str]) -> None:
        with self._lock:
            self._subscribed.difference_update(topics)

    def message(self, source: Hashable, at: float) -> None:
        with self._lock:
            self._last_message_at = at
            self._rate.hit(at)
            activity = self._sources.setdefault(source, _SourceActivity())
            activity.last_message_at = at
            activity.rate.hit(at)

    def payload_error(self, source: Hashable, topic: str, reason: str) -> bool:
        """Count a payload error; True when the source's reason changed (worth a log line)."""
        with self._lock:
            self._payload_errors += 1
            self._last_payload_error = f"{topic}: {reason}"
            activity = self._sources.setdefault(source, _SourceActivity())
            activity.payload_errors += 1
            changed = activity.last_payload_error != reason
            activity.last_payload_error = reason
            return changed

    def keep_only(self, sources: set[Hashable]) -> None:
        """Forget the counts of sources no longer subscribed."""
        with self._lock:
            self._sources = {key: value for key, value in self._sources.items() if key in sources}

    def snapshot(self, now: float) -> BrokerStatus:
        with self._lock:
            return BrokerStatus(
                broker=self._broker,
                state=self._state,
                reason=self._reason,
                since=self._since,
                subscribed=tuple(sorted(self._subscribed)),
                last_message_at=_instant(self._last_message_at),
                messages_per_minute=self._rate.per_minute(now),
                payload_errors=self._payload_errors,
                last_payload_error=self._last_payload_error,
                sources={
                    key: SourceStatus(
                        last_message_at=_instant(activity.last_message_at),
                        messages_per_minute=activity.rate.per_minute(now),
                        payload_errors=activity.payload_errors,
                        last_payload_error=activity.last_payload_error,
                    )
                    for key, activity in self._sources.items()
                },
            )


def _instant(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, UTC)
