"""Client-side quota enforcement: a call that would break a vendor limit waits its turn or is refused before it is
sent.

Vendors punish overuse (SolarEdge blocks the key for the day; Enphase's Watt plan has 1,000 calls a month), so
every call, including tests and backfills, reserves its place first. Day and month budgets are counted per
(provider, scope key, period bucket) in UTC and a call over one is refused at once; this in-memory ledger serves one
process, and `core.store.quota_store` keeps the same counts in the database across processes.

In a ledger with a `queue_wait_s` (the collector's, issue 14), per-minute limits are paced instead: each (provider,
account) has a queue, and a call takes the next free turn in it, first come first served, so the sites sharing an
account take turns; it then waits for that turn (`Pacer`). Only a call whose turn is further away than `queue_wait_s`
is refused (`RateLimited` with the time of that turn), counting nothing; but within one poll (`one_poll`), a call
after the poll's first waits up to `FOLLOW_ON_WAIT_S`, since refusing it would throw away the answers the poll has
already been given, and their calls, for nothing. Without one (0: the dashboard, whose pages
must not hang, and one-off tools) a per-minute limit is counted in UTC minute buckets like the budgets and a call
over it is refused at once until the minute ends, as before queues existed. The pacing is per process: the
dashboard's few calls and the collector's share the vendor's minute, and a vendor's 429 says so like any refusal.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.providers.base import QuotaRule, RateLimited

PACED_PERIOD = "minute"  # rules of this period are paced by queues; "concurrent" ones hold slots; others are counted
WINDOW_S = 60.0
# A call reaches the vendor some time after its turn (waiting for a pooled connection and for a thread of a busy
# process, then network and server latency), and the vendor counts it when it arrives: turns
# (WINDOW_S + ARRIVAL_SPREAD_S) / limit apart stay within the limit in every vendor minute as long as no two calls'
# delays differ by more than ARRIVAL_SPREAD_S. Measured with bench/bench_fleet.py: turns exactly 60 / limit apart put
# 11 calls in a SolarEdge minute of 10 (70-800 ms latencies alone); 1 s more was enough at 300 sites but not with
# the machine overloaded by the full mode's 3,334 (again 11). 6 s costs a tenth of each account's rate (9.1 calls a
# minute instead of 10 for SolarEdge) and keeps a vendor's block away.
ARRIVAL_SPREAD_S = 6.0
# A poll's later calls (its other endpoints, a gap re-read) may wait this long for their turn. It stays bounded: a
# poll is admitted only when its first turn is within `queue_wait_s`, so the calls queued ahead of a later one are
# those of the few polls admitted before it (at 10 a minute and 15 s, about 3 polls of up to 4 calls: 75 s).
FOLLOW_ON_WAIT_S = 120.0
WAIT_HISTORY_S = 15 * 60.0  # the waits API Health's percentiles cover
WAIT_HISTORY_MAX = 10_000  # per account: bounded memory whatever the call rate


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


class Clock:
    """Monotonic seconds and a sleep: the real ones. Tests pass a faster clock (a multiple of the real one) so that
    minutes of pacing take a fraction of a second with real threads."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class QueueFigures:
    """One account's queue as API Health shows it: calls waiting for their turn now, and the waits of the calls of
    the last `WAIT_HISTORY_S` seconds (None when there were none)."""

    provider: str
    scope_key: str
    queued: int
    calls: int
    wait_p50_s: float | None
    wait_p95_s: float | None


class Pacer:
    """One turn every `(WINDOW_S + ARRIVAL_SPREAD_S) / limit` seconds (6.6 s at 10 a minute), handed out in the order
    they are asked for: a token bucket holding a single token, refilled a little slower than limit/60 per second.

    Why one token rather than a bucket holding `limit`: SolarEdge V2 counts a fixed wall-clock minute
    (docs/solaredge-v2.md) and Enphase answers a 429 with the minute's `period_start`/`period_end`
    (docs/enphase-v4.md), i.e. fixed windows. A bucket of `limit` tokens lets a full bucket go out at the end of one
    vendor minute and the refill in the next: up to 2 x limit - 1 calls in one vendor minute. A count per minute of
    our own clock is right only if our minute starts where the vendor's does. Turns at least `WINDOW_S / limit` apart
    put at most `limit` calls in any 60 s, so in any vendor minute wherever it starts. And every call but the first
    waits in line, so a site asking again after its turn goes behind the sites already waiting: the account's sites
    take turns. The price is that a lone site's poll of 3 calls takes 13 s more at 10 a minute; the collector has the
    threads to wait with, and the rate over a minute is the vendor's either way.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.interval = (WINDOW_S + ARRIVAL_SPREAD_S) / limit
        self._turns: deque[float] = deque(maxlen=limit)  # the last turns handed out (clock seconds), in order
        self.waits: deque[tuple[float, float]] = deque(maxlen=WAIT_HISTORY_MAX)  # (turn, seconds waited)
        self.waiting = 0  # calls given a turn that has not come yet
        self._gone: deque[float] = deque(maxlen=limit)  # when the last `limit` calls actually went (clock seconds)

    def free_at(self, now: float) -> float:
        """When the next call may go: `limit` calls may leave in any `interval x limit` seconds. Turns already
        keep that, as long as each call leaves when its turn comes; a thread of a process far past its ceiling may
        leave its turn's wait seconds late, next to calls whose turns came after it (the full fleet benchmark saw 12
        of one key within 60 s), so this second gate counts the moments calls really go."""
        if len(self._gone) < self.limit:
            return now
        return max(now, self._gone[0] + self.interval * self.limit)

    def went(self, at: float) -> None:
        self._gone.append(at)

    def next_turn(self, now: float) -> float:
        return max(now, self._turns[-1] + self.interval) if self._turns else now

    def take(self, turn: float, asked: float) -> None:
        self._turns.append(turn)
        self.waits.append((turn, turn - asked))

    def give_back(self, turn: float) -> None:
        """A turn taken by a call that was then refused (a day or month budget): free it if it is still known."""
        if turn in self._turns:
            self._turns.remove(turn)


class QuotaLedger:
    """Counts calls per scope, paces per-minute limits and holds concurrency slots; thread-safe."""

    def __init__(
        self, concurrency_wait_s: float = 60.0, *, queue_wait_s: float = 0.0, clock: Clock | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str, datetime], int] = {}
        self._slots: dict[tuple[str, str, int], threading.BoundedSemaphore] = {}
        self._pacers: dict[tuple[str, str, int], Pacer] = {}
        self._concurrency_wait_s = concurrency_wait_s
        self.queue_wait_s = queue_wait_s  # how long a call may wait for its turn under a per-minute limit
        self.clock = clock or Clock()
        self._poll = threading.local()  # `paced`: this thread's poll has had a turn (see `one_poll`)

    def used(self, provider: str, scope_key: str, period: str, now: datetime) -> int:
        start, _ = period_bounds(period, now)
        with self._lock:
            return self._counts.get((provider, scope_key, period, start), 0)

    def reserve(self, provider: str, scope_keys: Mapping[str, str], rules: Sequence[QuotaRule], now: datetime) -> None:
        """Count one call against every day and month rule (and minute rule, without a queue) and, with a queue, wait
        for its turn under every per-minute rule; or raise `RateLimited` (counting nothing) if a budget is used up
        or the turn is more than `queue_wait_s` away."""
        applying = [r for r in rules if r.period != "concurrent" and r.scope in scope_keys]
        paced = [r for r in applying if r.period == PACED_PERIOD] if self.queue_wait_s > 0 else []
        counted = [r for r in applying if r not in paced]
        turn = self._take_turn(provider, scope_keys, paced, now)
        try:
            self.count(provider, scope_keys, counted, now)
        except BaseException:
            self._give_back(turn)
            raise
        self._wait_for(turn)

    def count(self, provider: str, scope_keys: Mapping[str, str], counted: Sequence[QuotaRule], now: datetime) -> None:
        """Count one call against every rule of `counted` (budgets, and minutes when not paced), or refuse it
        counting nothing."""
        with self._lock:
            keys = []
            for rule in counted:
                start, end = period_bounds(rule.period, now)
                key = (provider, scope_keys[rule.scope], rule.period, start)
                if self._counts.get(key, 0) >= rule.limit:
                    raise budget_used_up(provider, rule, end)
                keys.append(key)
            for key in keys:
                self._counts[key] = self._counts.get(key, 0) + 1

    def close(self) -> None:
        """At the process's end: nothing to give back here (the stored ledger returns its leases)."""

    @contextmanager
    def one_poll(self) -> Iterator[None]:
        """The calls this thread makes inside are one poll's: once the first has had its turn, the later ones wait
        for theirs up to `FOLLOW_ON_WAIT_S` instead of `queue_wait_s` (see the module docstring)."""
        self._poll.paced = False
        try:
            yield
        finally:
            del self._poll.paced

    # --- per-minute queues -------------------------------------------------------------------------------------

    def _take_turn(
        self, provider: str, scope_keys: Mapping[str, str], paced: Sequence[QuotaRule], now: datetime
    ) -> list[tuple[Pacer, float]]:
        if not paced:
            return []
        with self._lock:
            asked = self.clock.now()
            pacers = [self._pacers.setdefault((provider, scope_keys[r.scope], r.limit), Pacer(r.limit)) for r in paced]
            turn = max(p.next_turn(asked) for p in pacers)
            follow_on = getattr(self._poll, "paced", False)
            if turn - asked > (max(self.queue_wait_s, FOLLOW_ON_WAIT_S) if follow_on else self.queue_wait_s):
                rule = paced[0]
                wait = math.ceil(turn - asked)
                raise RateLimited(
                    f"{provider} allows {rule.limit} calls per minute per {rule.scope}; the next free turn is in"
                    f" {wait} s.",
                    retry_at=now.astimezone(UTC) + timedelta(seconds=wait),
                )
            for pacer in pacers:
                pacer.take(turn, asked)
                pacer.waiting += 1
            if hasattr(self._poll, "paced"):
                self._poll.paced = True
            return [(pacer, turn) for pacer in pacers]

    def _give_back(self, turn: list[tuple[Pacer, float]]) -> None:
        with self._lock:
            for pacer, moment in turn:
                pacer.give_back(moment)
                pacer.waiting -= 1

    def _wait_for(self, turn: list[tuple[Pacer, float]]) -> None:
        if not turn:
            return
        try:
            while (left := turn[0][1] - self.clock.now()) > 0:
                self.clock.sleep(left)
            while True:  # the send-time gate (`Pacer.free_at`): checked and recorded under the lock, just before going
                with self._lock:
                    now = self.clock.now()
                    free = max(pacer.free_at(now) for pacer, _ in turn)
                    if free <= now:
                        for pacer, _ in turn:
                            pacer.went(now)
                        break
                self.clock.sleep(free - now)
        finally:
            with self._lock:
                for pacer, _ in turn:
                    pacer.waiting -= 1

    def queue_figures(self) -> list[QueueFigures]:
        """Each account's queue now (accounts that paced a call in the last `WAIT_HISTORY_S` seconds)."""
        with self._lock:
            now = self.clock.now()
            figures = []
            for (provider, scope_key, _), pacer in self._pacers.items():
                waits = sorted(w for at, w in pacer.waits if at >= now - WAIT_HISTORY_S)
                if not waits and not pacer.waiting:
                    continue  # idle for a quarter of an hour: nothing to show
                figures.append(
                    QueueFigures(
                        provider, scope_key, pacer.waiting, len(waits), percentile(waits, 50), percentile(waits, 95)
                    )
                )
            return figures

    # --- concurrency -------------------------------------------------------------------------------------------

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


def budget_used_up(provider: str, rule: QuotaRule, end: datetime) -> RateLimited:
    return RateLimited(
        f"{provider} allows {rule.limit} calls per {rule.period} per {rule.scope}; "
        f"that budget is used up until {end:%Y-%m-%d %H:%M} UTC.",
        retry_at=end,
    )


def percentile(ordered: Sequence[float], pct: int) -> float | None:
    """The nearest-rank percentile of sorted values; None for none."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))]
