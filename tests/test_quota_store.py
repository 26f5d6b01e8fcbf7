"""Quota budgets kept in the database hold across ledgers (processes, restarts) and refuse the call past the limit."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime

import pytest

from core.providers.base import QuotaRule, RateLimited
from core.store.quota_store import StoredQuotaLedger
from core.store.store import Store

NOW = datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
DAILY = (QuotaRule("site", "day", 5), QuotaRule("account", "day", 300))


def test_a_restart_does_not_reset_the_budget(store: Store) -> None:
    for _ in range(3):
        StoredQuotaLedger(store).reserve("SolarEdge V1", {"site": "1", "account": "k"}, DAILY, NOW)
    restarted = StoredQuotaLedger(store)
    restarted.reserve("SolarEdge V1", {"site": "1", "account": "k"}, DAILY, NOW)
    restarted.reserve("SolarEdge V1", {"site": "1", "account": "k"}, DAILY, NOW)
    with pytest.raises(RateLimited) as info:
        restarted.reserve("SolarEdge V1", {"site": "1", "account": "k"}, DAILY, NOW)
    assert info.value.retry_at == datetime(2026, 11, 28, tzinfo=UTC)
    assert restarted.used("SolarEdge V1", "1", "day", NOW) == 5
    assert restarted.used("SolarEdge V1", "k", "day", NOW) == 5  # the refused call counted nowhere
    restarted.reserve("SolarEdge V1", {"site": "2", "account": "k"}, DAILY, NOW)  # another site has its own budget


def _spend(path: str, count: int, result: multiprocessing.Queue) -> None:
    ledger = StoredQuotaLedger(Store(path, lock_timeout_s=30))
    granted = 0
    for _ in range(count):
        try:
            ledger.reserve("Enphase", {"account": "app"}, (QuotaRule("account", "month", 25),), NOW)
            granted += 1
        except RateLimited:
            pass
    result.put(granted)


def test_two_processes_share_one_budget(store: Store) -> None:
    ctx = multiprocessing.get_context("spawn")
    result: multiprocessing.Queue = ctx.Queue()
    workers = [ctx.Process(target=_spend, args=(str(store.path), 20, result)) for _ in range(2)]
    for worker in workers:
        worker.start()
    granted = [result.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert sum(granted) == 25
    assert StoredQuotaLedger(store).used("Enphase", "app", "month", NOW) == 25
