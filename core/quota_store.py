"""Quota counts kept in the database, so a budget holds across restarts and across processes.

The dashboard's Test Connection and the collector spend the same vendor budget. Counting in memory would let each
process (and each restart) start from zero; here every reservation is a read-check-increment in one transaction
under the store's lock, so two processes cannot both take the last call. One short transaction per vendor call
costs ~20 ms, small beside the call itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from core.providers.base import QuotaRule, RateLimited
from core.providers.quota import QuotaLedger, period_bounds
from core.store import Store

_SELECT = "SELECT calls FROM quota_usage WHERE provider = ? AND scope_key = ? AND period = ? AND bucket_start = ?"
_INCREMENT = (
    "INSERT INTO quota_usage (provider, scope_key, period, bucket_start, calls) VALUES (?, ?, ?, ?, 1)"
    " ON CONFLICT (provider, scope_key, period, bucket_start) DO UPDATE SET calls = quota_usage.calls + 1"
)


class StoredQuotaLedger(QuotaLedger):
    """`QuotaLedger` whose counts live in `quota_usage`; concurrency slots stay per process (they are momentary)."""

    def __init__(self, store: Store, concurrency_wait_s: float = 60.0) -> None:
        super().__init__(concurrency_wait_s)
        self.store = store

    def used(self, provider: str, scope_key: str, period: str, now: datetime) -> int:
        start, _ = period_bounds(period, now)
        with self.store.connect(read_only=True) as con:
            rows = con.execute(_SELECT, [provider, scope_key, period, start]).fetchall()
        return int(rows[0][0]) if rows else 0

    def reserve(self, provider: str, scope_keys: Mapping[str, str], rules: Sequence[QuotaRule], now: datetime) -> None:
        counted = [r for r in rules if r.period != "concurrent" and r.scope in scope_keys]
        if not counted:
            return
        with self.store.transaction() as con:
            buckets = []
            for rule in counted:
                start, end = period_bounds(rule.period, now)
                key = [provider, scope_keys[rule.scope], rule.period, start]
                rows = con.execute(_SELECT, key).fetchall()
                if rows and rows[0][0] >= rule.limit:
                    raise RateLimited(
                        f"{provider} allows {rule.limit} calls per {rule.period} per {rule.scope}; "
                        f"that budget is used up until {end:%Y-%m-%d %H:%M} UTC.",
                        retry_at=end,
                    )
                buckets.append(key)
            for key in buckets:
                con.execute(_INCREMENT, key)
