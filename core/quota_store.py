"""Quota counts kept in the database, so a budget holds across restarts and across processes.

The dashboard's Test Connection and the collector spend the same vendor budget. Counting in memory would let each
process (and each restart) start from zero; here every reservation is a read-check-increment in one transaction
under the store's lock, so two processes cannot both take the last call. One short transaction per vendor call
costs ~20 ms, small beside the call itself.

While an outside program holds the file, the collector keeps polling (its readings go to the spool), so calls are
still counted: against the last counts this process saw plus its own calls since, each appended durably to a
journal file that the next reservation with the file free adds to `quota_usage`. A crash between that commit and
the journal's truncation counts those calls twice, which errs on the safe side. A budget this process has never
seen cannot be checked, so such a call is refused until the file is free.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from core.providers.base import QuotaRule, RateLimited
from core.providers.quota import QuotaLedger, period_bounds
from core.store import Store, StoreBusy

_SELECT = "SELECT calls FROM quota_usage WHERE provider = ? AND scope_key = ? AND period = ? AND bucket_start = ?"
_INCREMENT = (
    "INSERT INTO quota_usage (provider, scope_key, period, bucket_start, calls) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (provider, scope_key, period, bucket_start) DO UPDATE SET calls = quota_usage.calls + excluded.calls"
)
BucketKey = tuple[str, str, str, datetime]
DB_WAIT_S = 2.0  # how long a reservation waits for the file before counting offline
OFFLINE_RETRY = timedelta(minutes=5)


class StoredQuotaLedger(QuotaLedger):
    """`QuotaLedger` whose counts live in `quota_usage`; concurrency slots stay per process (they are momentary)."""

    def __init__(self, store: Store, concurrency_wait_s: float = 60.0, journal: Path | None = None) -> None:
        super().__init__(concurrency_wait_s)
        self.store = store
        self.journal = journal
        self._seen: dict[BucketKey, int] = {}  # the newest count of each bucket this process knows of

    def used(self, provider: str, scope_key: str, period: str, now: datetime) -> int:
        """Calls counted so far; while the file is held, the count this process knows (with a journal)."""
        key: BucketKey = (provider, scope_key, period, period_bounds(period, now)[0])
        try:
            with self.store.connect(read_only=True, timeout_s=DB_WAIT_S if self.journal else None) as con:
                return _count(con, key) + self._journalled(key)
        except StoreBusy:
            if self.journal is None:
                raise
            with self._lock:
                return self._seen.get(key, 0)

    def reserve(self, provider: str, scope_keys: Mapping[str, str], rules: Sequence[QuotaRule], now: datetime) -> None:
        counted = [r for r in rules if r.period != "concurrent" and r.scope in scope_keys]
        if not counted:
            return
        try:
            self.flush_journal()
            with self.store.transaction(timeout_s=DB_WAIT_S if self.journal else None) as con:
                keys = self._check(provider, scope_keys, counted, now, lambda key: _count(con, key))
                for key in keys:
                    con.execute(_INCREMENT, [*key, 1])
        except StoreBusy:
            if self.journal is None:
                raise
            self._reserve_offline(provider, scope_keys, counted, now)
            return
        with self._lock:
            for key in keys:
                self._seen[key] = self._seen.get(key, 0) + 1

    def _check(
        self,
        provider: str,
        scope_keys: Mapping[str, str],
        counted: Sequence[QuotaRule],
        now: datetime,
        count: Callable[[BucketKey], int],
    ) -> list[BucketKey]:
        """The buckets one more call would count in, or `RateLimited` if one is full (counting nothing)."""
        keys: list[BucketKey] = []
        for rule in counted:
            start, end = period_bounds(rule.period, now)
            key: BucketKey = (provider, scope_keys[rule.scope], rule.period, start)
            calls = count(key)
            self._seen[key] = calls
            if calls >= rule.limit:
                raise RateLimited(
                    f"{provider} allows {rule.limit} calls per {rule.period} per {rule.scope}; "
                    f"that budget is used up until {end:%Y-%m-%d %H:%M} UTC.",
                    retry_at=end,
                )
            keys.append(key)
        return keys

    def _reserve_offline(
        self, provider: str, scope_keys: Mapping[str, str], counted: Sequence[QuotaRule], now: datetime
    ) -> None:
        assert self.journal is not None
        with self._lock:
            buckets: list[BucketKey] = [
                (provider, scope_keys[r.scope], r.period, period_bounds(r.period, now)[0]) for r in counted
            ]
            unknown = [key for key in buckets if key not in self._seen]
            if unknown:
                self._read_counts(unknown)  # a read-only holder (`duckdb -readonly`) still lets us read them
                unknown = [key for key in buckets if key not in self._seen]
            if unknown:
                raise RateLimited(
                    f"{provider}: the call budget cannot be checked while another program holds the database; "
                    "polling resumes when it is free.",
                    retry_at=now + OFFLINE_RETRY,
                )
            keys = self._check(provider, scope_keys, counted, now, lambda key: self._seen[key])
            with _locked(self.journal) as handle:
                for key in keys:
                    handle.write(json.dumps([key[0], key[1], key[2], key[3].isoformat()]) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            for key in keys:
                self._seen[key] += 1

    def _read_counts(self, keys: list[BucketKey]) -> None:
        with contextlib.suppress(StoreBusy), self.store.connect(read_only=True, timeout_s=DB_WAIT_S) as con:
            for key in keys:
                self._seen[key] = _count(con, key) + self._journalled(key)

    def _journal_empty(self) -> bool:
        """Checked without locking: the usual case (the file was never held) costs one stat, not a file lock."""
        return self.journal is None or not self.journal.exists() or self.journal.stat().st_size == 0

    def _journalled(self, key: BucketKey) -> int:
        """Calls of this bucket already in the journal (counted by an earlier run while the file was held)."""
        if self._journal_empty():
            return 0
        assert self.journal is not None
        with _locked(self.journal) as handle:
            handle.seek(0)
            return sum(1 for line in handle.read().splitlines() if _journal_key(line) == key)

    def flush_journal(self) -> None:
        """Add the calls counted while the file was held to `quota_usage`, then empty the journal."""
        if self._journal_empty():
            return
        assert self.journal is not None
        with _locked(self.journal) as handle:
            handle.seek(0)
            totals: dict[BucketKey, int] = {}
            for line in handle.read().splitlines():
                key = _journal_key(line)
                if key is not None:
                    totals[key] = totals.get(key, 0) + 1
            with self.store.transaction(timeout_s=DB_WAIT_S) as con:
                for key, calls in totals.items():
                    con.execute(_INCREMENT, [*key, calls])
            handle.seek(0)
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())


def _journal_key(line: str) -> BucketKey | None:
    """None for a line torn by a crash: that call was never acknowledged, so never made."""
    try:
        provider, scope, period, start = json.loads(line)
        return (provider, scope, period, datetime.fromisoformat(start))
    except (ValueError, TypeError):
        return None


def _count(con: duckdb.DuckDBPyConnection, key: BucketKey) -> int:
    rows = con.execute(_SELECT, list(key)).fetchall()
    return int(rows[0][0]) if rows else 0


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[io.TextIOWrapper]:
    """The journal opened for append and read, under an exclusive flock (the dashboard may share it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
