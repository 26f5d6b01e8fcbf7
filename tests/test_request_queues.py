"""Queued requests (issue 14): per-minute limits pace calls through a per-account queue, fairly across the account's
sites; day and month budgets still refuse; leased blocks of calls never let two processes exceed a budget; API Health
shows each account's queue.

Real ledgers, real threads and real DuckDB files. Pacing minutes would take minutes, so the ledgers get a clock that
runs `RATE` times faster than the real one (real seconds and real sleeps, scaled)."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from streamlit.testing.v1 import AppTest

from core.analytics.api_accounts import ledger_scope, read_queues
from core.analytics.api_health_display import wait_text
from core.catalog import catalog as cat
from core.config import load_settings
from core.models import ApiSettings, Category, MeterIn, Provider, SourceIn, UpdateFrequency
from core.providers.base import QuotaRule, RateLimited
from core.providers.quota import Clock, QuotaLedger
from core.providers.registry import spec_of
from core.runtime import open_runtime
from core.store.quota_store import StoredQuotaLedger
from core.store.secret_store import put_secret
from core.store.store import Store

RATE = 50.0  # the ledgers' clock runs 50 times faster: a 6 s turn is 120 ms of real time
NOW = datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
APP = str(Path(__file__).resolve().parents[1] / "app.py")
PER_MINUTE = QuotaRule("account", "minute", 10)
MONTH = QuotaRule("account", "month", 2_000)


class FastClock(Clock):
    def now(self) -> float:
        return time.monotonic() * RATE

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds / RATE)


def _poll_sites(
    ledger: QuotaLedger, sites: list[str], calls: int, provider: str = "SolarEdge", account: str = "key"
) -> tuple[list[tuple[str, float]], list[Exception]]:
    """Each site's thread makes `calls` calls one after the other, as a poll does; (site, clock at grant) in the
    order granted, and what was refused."""
    granted: list[tuple[str, float]] = []
    refused: list[Exception] = []
    lock = threading.Lock()
    start = threading.Barrier(len(sites))

    def poll(site: str) -> None:
        start.wait()
        for _ in range(calls):
            try:
                ledger.reserve(provider, {"account": account, "site": site}, (PER_MINUTE, MONTH), NOW)
            except RateLimited as exc:
                with lock:
                    refused.append(exc)
                continue
            with lock:
                granted.append((site, ledger.clock.now()))

    threads = [threading.Thread(target=poll, args=(site,)) for site in sites]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return granted, refused


def test_thirty_calls_of_three_sites_are_paced_fairly_and_none_refused() -> None:
    ledger = QuotaLedger(queue_wait_s=120, clock=FastClock())
    # A call just made: every site's first call waits too, so none can ask again before the others first asked.
    began = ledger.clock.now()
    ledger.reserve("SolarEdge", {"account": "key", "site": "d"}, (PER_MINUTE, MONTH), NOW)
    granted, refused = _poll_sites(ledger, ["a", "b", "c"], 10)

    assert refused == [] and len(granted) == 30
    # Interleaved: at every point, no site is more than one call ahead of another.
    made = {"a": 0, "b": 0, "c": 0}
    for site, _ in granted:
        made[site] += 1
        assert max(made.values()) - min(made.values()) <= 1, [s for s, _ in granted]
    # Paced: 10 a minute is one turn every 6 s (so no 60 s holds more than 10): the 31st call's turn came 180 s after
    # the first call's.
    assert granted[-1][1] - began >= 30 * 6
    (figures,) = ledger.queue_figures()
    assert figures.queued == 0 and figures.calls == 31
    assert figures.wait_p95_s is not None and 12 <= figures.wait_p95_s <= 24  # behind the two other sites: 18 s


def test_a_turn_further_away_than_the_bounded_wait_is_refused_counting_nothing() -> None:
    ledger = QuotaLedger(queue_wait_s=5, clock=FastClock())
    ledger.reserve("SolarEdge", {"account": "key"}, (PER_MINUTE, MONTH), NOW)
    with pytest.raises(RateLimited, match="10 calls per minute") as info:
        ledger.reserve("SolarEdge", {"account": "key"}, (PER_MINUTE, MONTH), NOW)  # its turn is 6.6 s away
    assert info.value.retry_at is not None and NOW < info.value.retry_at <= NOW.replace(second=7)
    assert ledger.used("SolarEdge", "key", "month", NOW) == 1


def test_within_one_poll_a_later_call_waits_rather_than_throw_the_first_away() -> None:
    ledger = QuotaLedger(queue_wait_s=5, clock=FastClock())
    site = {"account": "key", "site": "a"}
    with ledger.one_poll():
        ledger.reserve("SolarEdge", site, (PER_MINUTE, MONTH), NOW)  # the poll's first call: its turn is now
        began = ledger.clock.now()
        # Its second call's turn is 6.6 s away, past the 5 s a first call may wait: refusing it now would waste the
        # first call's answer, so it waits.
        ledger.reserve("SolarEdge", site, (PER_MINUTE, MONTH), NOW)
        assert ledger.clock.now() - began >= 6.0
    for poll in (contextlib.nullcontext(), ledger.one_poll()):  # a first call still is refused
        with poll, pytest.raises(RateLimited, match="next free turn"):
            ledger.reserve("SolarEdge", site, (PER_MINUTE, MONTH), NOW)
    assert ledger.used("SolarEdge", "key", "month", NOW) == 2


def test_calls_that_leave_their_turn_late_still_never_crowd_a_minute() -> None:
    """On a machine far past its ceiling a thread may leave its turn's wait many seconds late, next to calls whose
    turns came after it. The send-time gate keeps any 11 calls of a key 66 s apart however late they leave."""
    ledger = QuotaLedger(queue_wait_s=300, clock=FastClock())
    scope = {"account": "key"}
    turns = [ledger._take_turn("SolarEdge", scope, (PER_MINUTE,), NOW) for _ in range(11)]  # 6.6 s apart
    ledger.clock.sleep(turns[-1][0][1] - ledger.clock.now() + 1)  # every thread held up past all eleven turns
    gone = []
    for turn in turns:
        ledger._wait_for(turn)  # each leaves as soon as it may
        gone.append(ledger.clock.now())
    assert gone[9] - gone[0] < 2  # ten may go together: at most the limit in any 60 s
    assert gone[10] - gone[0] >= 66 - 0.5  # the eleventh waits until the first is 66 s old
    assert gone[10] - turns[10][0][1] > 5  # instead of going at once, as its late turn alone would have let it


def test_without_a_queue_the_minute_is_refused_at_once_as_before() -> None:
    ledger = QuotaLedger()  # the dashboard's: a page must not hang
    for _ in range(10):
        ledger.reserve("SolarEdge", {"account": "key"}, (PER_MINUTE,), NOW)
    with pytest.raises(RateLimited) as info:
        ledger.reserve("SolarEdge", {"account": "key"}, (PER_MINUTE,), NOW)
    assert info.value.retry_at == NOW.replace(minute=31)


def test_day_and_month_budgets_still_refuse_in_a_queued_leasing_ledger(store: Store) -> None:
    ledger = StoredQuotaLedger(store, queue_wait_s=120, lease_calls=20, clock=FastClock())
    rules = (QuotaRule("account", "minute", 1_000), QuotaRule("account", "month", 5))
    for _ in range(5):
        ledger.reserve("Enphase", {"account": "app"}, rules, NOW)
    with pytest.raises(RateLimited, match="5 calls per month") as info:
        ledger.reserve("Enphase", {"account": "app"}, rules, NOW)
    assert info.value.retry_at == datetime(2026, 12, 1, tzinfo=UTC)
    ledger.close()
    assert StoredQuotaLedger(store).used("Enphase", "app", "month", NOW) == 5
    day = (QuotaRule("site", "day", 3),)
    for _ in range(3):
        ledger.reserve("SolarEdge V1", {"site": "7"}, day, NOW)
    with pytest.raises(RateLimited, match="3 calls per day"):
        ledger.reserve("SolarEdge V1", {"site": "7"}, day, NOW)


def test_a_lease_is_counted_up_front_and_its_unused_part_given_back(store: Store) -> None:
    leasing = StoredQuotaLedger(store, lease_calls=20)
    rules = (QuotaRule("account", "month", 1_000),)  # a lease is at most 1/50 of it: 20
    for _ in range(7):
        leasing.reserve("Enphase", {"account": "app"}, rules, NOW)
    dashboard = StoredQuotaLedger(store)
    assert dashboard.used("Enphase", "app", "month", NOW) == 20  # never room that is not there
    assert leasing.used("Enphase", "app", "month", NOW) == 7  # its own unused calls are not used
    leasing.flush_journal()  # the collector's every-minute sync
    assert dashboard.used("Enphase", "app", "month", NOW) == 7
    leasing.reserve("Enphase", {"account": "app"}, rules, NOW)
    leasing.close()  # at shutdown
    assert dashboard.used("Enphase", "app", "month", NOW) == 8


def _spend_leased(path: str, count: int, result: multiprocessing.Queue) -> None:
    ledger = StoredQuotaLedger(Store(path, lock_timeout_s=30), lease_calls=20)
    granted = 0
    for _ in range(count):
        try:
            ledger.reserve("Enphase", {"account": "app"}, (QuotaRule("account", "month", 1_000),), NOW)
            granted += 1
        except RateLimited:
            pass
    ledger.close()
    result.put(granted)


def test_two_processes_leasing_never_exceed_a_month_budget(store: Store) -> None:
    ctx = multiprocessing.get_context("spawn")
    result: multiprocessing.Queue = ctx.Queue()
    workers = [ctx.Process(target=_spend_leased, args=(str(store.path), 700, result)) for _ in range(2)]
    for worker in workers:
        worker.start()
    granted = [result.get(timeout=240) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    # At most one lease's calls can sit unused in one process while the other is refused.
    assert 1_000 - 20 < sum(granted) <= 1_000
    assert StoredQuotaLedger(store).used("Enphase", "app", "month", NOW) == sum(granted)


def test_queue_figures_are_published_while_calls_wait(store: Store) -> None:
    ledger = StoredQuotaLedger(store, queue_wait_s=120, clock=FastClock())
    slow = (QuotaRule("account", "minute", 1),)  # the second call's turn is a minute away: 1.2 s here
    ledger.reserve("SolarEdge", {"account": "key"}, slow, NOW)
    waiting = threading.Thread(target=ledger.reserve, args=("SolarEdge", {"account": "key"}, slow, NOW))
    waiting.start()
    time.sleep(0.3)
    ledger.publish_queues()
    with store.connect(read_only=True) as con:
        during = read_queues(con, datetime.now(UTC))
    waiting.join(timeout=10)
    ledger.flush_journal()  # the collector's every-minute sync publishes too
    with store.connect(read_only=True) as con:
        after = read_queues(con, datetime.now(UTC))
    assert during[("SolarEdge", "key")][0] == 1
    queued, p95 = after[("SolarEdge", "key")]
    # A minute after the first call; less the time the first call took to publish (a transaction on the file).
    assert queued == 0 and p95 is not None and 30 <= p95 <= 66


def test_wait_text() -> None:
    assert [wait_text(s) for s in (None, 0.0, 0.4, 12.0, 95.0)] == ["-", "none", "0.4 s", "12 s", "1 min"]


def test_api_health_shows_each_accounts_queue(seeded_env: Path) -> None:
    key = "queue-page-v2-key-4Rt8"
    runtime = open_runtime(load_settings(), prepare=False)
    with runtime.store.transaction() as con:
        site = cat.read_catalog(con).sites[0]
        meter = cat.insert_meter(con, site.id, MeterIn(name="SolarEdge PV", category=Category.PROD))
        api = ApiSettings(
            use_api=True, api_provider=Provider.SOLAREDGE, system_id="3066774", update_frequency=UpdateFrequency.HOUR1
        )
        source = SourceIn(
            name="Roof V2", source_type="solar", capacity_kw=20, carbon_intensity_g_per_kwh=0, cost_per_mwh=0, api=api
        )
        put_secret(con, runtime.box, cat.insert_source(con, meter, source), "api_key", key)
    scope = ledger_scope(Provider.SOLAREDGE, {"api_key": SecretStr(key)})
    vendor = spec_of(Provider.SOLAREDGE).vendor
    assert scope is not None and vendor is not None
    ledger = StoredQuotaLedger(runtime.store, queue_wait_s=120, clock=FastClock())  # the collector's
    granted, refused = _poll_sites(ledger, ["1", "2", "3"], 1, vendor, scope)  # at once: 0, 6 and 12 s of wait
    assert len(granted) == 3 and not refused
    ledger.close()

    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("pages/api_health.py").run()
    assert not app.exception
    accounts = app.dataframe[0].value.set_index("Account")
    assert accounts.loc["SolarEdge (V2) account 1", "Queued"] == 0
    assert accounts.loc["SolarEdge (V2) account 1", "Wait p95"] in {"12 s", "13 s"}  # the third call's 13.2 s
    assert accounts.loc["Simulator (built-in)", "Wait p95"] == "-"  # no queue: no per-minute limit
