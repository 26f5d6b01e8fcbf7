"""Client-side quota enforcement: a call that would break a vendor limit is refused before it is sent.

Vendors punish overuse (SolarEdge blocks the key for the day; Enphase's Watt plan has 1,000 calls a month), so
every call, including tests and backfills, reserves its place first. Counters are kept per (provider, scope key,
period bucket) in UTC. This in-memory ledger serves one process; the collector persists the same counts (issue 4).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from core.providers.base import QuotaRule, RateLimited


def account_scope(credential: str) -> str:
    """The ledger's name for the vendor account a credential belongs to (a SolarEdge API key, an Enphase
    application API key): non-reversible, so ledgers and pages may show it; surrounding spaces do not count, as
    the pages strip what is typed. The one rule every client, the planner and API Health use."""
    return hashlib.sha256(credential.strip().encode()).hexdigest()[:16]


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC bucket containing `now` for a rule period."""
    now = now.astimezone(UTC)
    if period == "minute":
        start = now.replace(second=0, microsecond=0)
        return start, start + timedelta(minutes=1)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if period == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (start + timedelta(days=32)).replace(day=1)
        return start, following
    raise ValueError(f"unknown period {period!r}")


class QuotaLedger:
    """Counts calls and concurrency per scope; thread-safe."""

    def __init__(self, concurrency_wait_s: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str, datetime], int] = {}
        self._slots: dict[tuple[str, str, int], threading.BoundedSemaphore] = {}
        self._concurrency_wait_s = concurrency_wait_s

    def used(self, provider: str, scope_key: str, period: str, now: datetime) -> int:
        start, _ = period_bounds(period, now)
        with self._lock:
            return self._counts.get((provider, scope_key, period, start), 0)

    def reserve(self, provider: str, scope_keys: Mapping[str, str], rules: Sequence[QuotaRule], now: datetime) -> None:
        """Count one call against every counted rule, or raise `RateLimited` (counting nothing) if one is full."""
        counted = [r for r in rules if r.period != "concurrent" and r.scope in scope_keys]
        with self._lock:
            keys = []
            for rule in counted:
                start, end = period_bounds(rule.period, now)
                key = (provider, scope_keys[rule.scope], rule.period, start)
                if self._counts.get(key, 0) >= rule.limit:
                    raise RateLimited(
                        f"{provider} allows {rule.limit} calls per {rule.period} per {rule.scope}; "
                        f"that budget is used up until {end:%Y-%m-%d %H:%M} UTC.",
                        retry_at=end,
                    )
                keys.append(key)
            for key in keys:
                self._counts[key] = self._counts.get(key, 0) + 1

    @contextmanager
    def in_flight(self, provider: str, scope_keys: Mapping[str, str], rules: Sequence[QuotaRule]) -> Iterator[None]:
        """Hold a concurrency slot for each "concurrent" rule while the call runs (waits for a free one)."""
        slots = []
        with self._lock:
            for rule in rules:
                if rule.period == "concurrent" and rule.scope in scope_keys:
                    slot_key = (provider, scope_keys[rule.scope], rule.limit)
                    slots.append(self._slots.setdefault(slot_key, threading.BoundedSemaphore(rule.limit)))
        taken = []
        try:
            for slot in slots:
                if not slot.acquire(timeout=self._concurrency_wait_s):
                    retry_at = datetime.now(UTC) + timedelta(seconds=self._concurrency_wait_s)
                    raise RateLimited(f"{provider}: too many calls in flight; try again shortly.", retry_at=retry_at)
                taken.append(slot)
            yield
        finally:
            for slot in taken:
                slot.release()
