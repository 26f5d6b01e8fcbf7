"""Group commit (issue 14): polls hand their passes to one writer, which writes everything queued in one transaction,
at most once per gap and at once when idle; a held file still makes the spool take over, and nothing is lost or
written twice.

Real temporary DuckDB files, the simulator's vendor sites, a real outside process holding the file (tests/holder.py)
and the real collector. Commits are counted twice over: by the writer's own counter and in the file, where every
source of one commit gets the same `source_state.updated_at` (the newest `now` of the passes written together).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.catalog import catalog as cat
from core.catalog.vendor_sites import group_by_provider_site
from core.collect.collection import Collection
from core.collect.group_writer import GroupWriter
from core.collect.source_health import GroupKey
from core.config import Settings, load_settings
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.runtime import open_runtime
from core.store.crypto import SecretBox
from core.store.schema import migrate
from core.store.spool import Spool
from core.store.store import Store
from jobs.collector import Collector
from tests.holder import held

NOW = datetime(2026, 6, 21, 12, 2, tzinfo=UTC)
SITES = 12


def add_fleet(store: Store, sites: int) -> None:
    """`sites` simulator vendor sites, each with a PROD and a CONS source."""
    api = ApiSettings(use_api=True, api_provider=Provider.SIMULATOR)
    with store.transaction() as con:
        for n in range(sites):
            site_id = cat.insert_site(
                con, SiteIn(name=f"Site {n:02d}", latitude=50.0 + n / 10, longitude=4.0, timezone="Europe/Brussels")
            )
            for category, source_type in ((Category.PROD, "solar"), (Category.CONS, "load")):
                meter_id = cat.insert_meter(con, site_id, MeterIn(name=category.value, category=category))
                source = SourceIn(
                    name=f"{category.value} {n}",
                    source_type=source_type,
                    capacity_kw=10,
                    carbon_intensity_g_per_kwh=0,
                    cost_per_mwh=0,
                    api=api,
                )
                cat.insert_source(con, meter_id, source)


def fleet_store(path: Path, sites: int = SITES) -> Store:
    store = Store(path, lock_timeout_s=1)
    migrate(store)
    add_fleet(store, sites)
    return store


def keys(store: Store) -> list[GroupKey]:
    return sorted(group_by_provider_site(cat.load_catalog(store)))


def scalar(store: Store, sql: str) -> object:
    with store.connect(read_only=True) as con:
        return con.sql(sql).fetchall()[0][0]


@pytest.fixture
def context() -> ProviderContext:
    return ProviderContext(Settings(), QuotaLedger())


def poll_all(collection: Collection, sites: list[GroupKey], now: datetime) -> list:
    """Each site polled on its own thread, as the collector does; the futures of their writes."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        polled = list(
            pool.map(
                lambda k: collection.poll(now + timedelta(milliseconds=k[0]), only={k[1]}, shared_inputs=True),
                enumerate(sites),
            )
        )
    return [written for _, written in polled]


def test_many_sites_polled_together_are_written_in_one_transaction(
    tmp_path: Path, box: SecretBox, context: ProviderContext
) -> None:
    store = fleet_store(tmp_path / "fleet.duckdb")
    # A long gap: whatever is polled while the writer waits goes into the next commit, however slow the machine.
    collection = Collection(store, box, context, Spool.beside(store.path), commit_gap_s=10)
    sites = keys(store)
    assert len(collection.run(NOW).results) == SITES  # a month back for every site, written at once (idle)
    assert collection.writer.commits == 1

    written = poll_all(collection, sites, NOW + timedelta(minutes=15))
    reports = [w.result(timeout=120) for w in written]

    assert all(r.spooled is None and r.results[0].outcome == "ok" for r in reports)
    assert collection.writer.commits == 2  # every site's pass in one transaction
    assert collection.writer.items_committed == 1 + SITES
    assert scalar(store, "SELECT count(*) FROM collector_runs") == 2 * SITES * 2  # one row per source per pass
    # Every source got its state from the same commit: one `updated_at` over the whole fleet.
    assert scalar(store, "SELECT count(DISTINCT updated_at) FROM source_state") == 1
    assert (
        scalar(store, "SELECT count(*) FROM (SELECT source_id, ts FROM readings GROUP BY ALL HAVING count(*) > 1)") == 0
    )
    assert sum(r.rows_written for r in reports) > 0
    collection.close()


def test_a_pass_after_an_idle_gap_is_written_at_once_and_a_busy_one_waits_for_the_gap(
    tmp_path: Path, box: SecretBox, context: ProviderContext
) -> None:
    store = fleet_store(tmp_path / "fleet.duckdb", sites=2)
    gap_s = 10.0
    collection = Collection(store, box, context, Spool.beside(store.path), commit_gap_s=gap_s)
    first, second = keys(store)
    collection.run(NOW)  # idle before: written at once (the test would wait out `gap_s` otherwise)

    _, busy = collection.poll(NOW + timedelta(minutes=15), only={first}, shared_inputs=True)
    with pytest.raises(TimeoutError):  # a pass right after a commit waits for the gap
        busy.result(timeout=gap_s / 3)
    assert busy.result(timeout=gap_s * 3).spooled is None
    assert collection.writer.commits == 2

    quick = Collection(store, box, context, Spool.beside(store.path), commit_gap_s=gap_s)
    _, idle = quick.poll(NOW + timedelta(minutes=30), only={second}, shared_inputs=True)
    assert idle.result(timeout=gap_s / 2).rows_written > 0  # the writer had been idle: no wait for the gap
    collection.close()
    quick.close()


def readings(store: Store) -> set[tuple]:
    with store.connect(read_only=True) as con:
        return set(con.sql("SELECT source_id, ts, value, is_final FROM readings").fetchall())


def test_a_held_file_makes_the_spool_take_over_and_nothing_is_lost_or_duplicated(
    tmp_path: Path, box: SecretBox, context: ProviderContext
) -> None:
    store, free = fleet_store(tmp_path / "held.duckdb"), fleet_store(tmp_path / "free.duckdb")
    spool = Spool.beside(store.path)
    collection = Collection(store, box, context, spool, commit_gap_s=0.5)
    reference = Collection(free, box, context)
    sites = keys(store)
    collection.run(NOW)
    before = scalar(store, "SELECT count(*) FROM collector_runs")
    for minutes in (0, 15, 30):  # what the same passes write when nobody holds the file
        reference.run(NOW + timedelta(minutes=minutes))

    with held(store.path):
        reports = [w.result(timeout=120) for w in poll_all(collection, sites, NOW + timedelta(minutes=15))]
        assert all(r.spooled is not None and not r.in_memory for r in reports)
        assert spool.pending()
        later = [w.result(timeout=120) for w in poll_all(collection, sites, NOW + timedelta(minutes=30))]
        assert all(r.spooled is not None for r in later)  # behind the spooled ones, in order
        spooled = {r.spooled for r in reports + later}

    assert len(spooled) < 2 * SITES  # passes held together, as they would have been written
    written = collection.drain()
    assert written > 0 and spool.pending() == []
    assert scalar(store, "SELECT count(*) FROM collector_runs") == before + 2 * SITES * 2
    assert (
        scalar(store, "SELECT count(*) FROM (SELECT source_id, ts FROM readings GROUP BY ALL HAVING count(*) > 1)") == 0
    )
    assert readings(store) == readings(free)  # every reading fetched while held landed, as it would have
    with store.connect(read_only=True) as con, free.connect(read_only=True) as ref:
        bookmarks = "SELECT source_id, bookmark_ts FROM source_state ORDER BY source_id"
        assert con.sql(bookmarks).fetchall() == ref.sql(bookmarks).fetchall()
    collection.close()
    reference.close()


def test_the_collector_writes_what_its_polls_fetched_in_few_commits_and_before_it_stops(app_env: Path) -> None:
    settings = load_settings().model_copy(update={"seed_demo": False})
    runtime = open_runtime(settings)
    add_fleet(runtime.store, SITES)
    stop = threading.Event()
    stop.set()  # the first sync dispatches every site, then the collector stops at once
    collector = Collector(runtime, stop)
    collector.run()

    assert not collector.collection.writer.pending()
    assert scalar(runtime.store, "SELECT count(DISTINCT source_id) FROM collector_runs") == 2 * SITES
    assert scalar(runtime.store, "SELECT count(DISTINCT source_id) FROM readings") == 2 * SITES
    assert collector.collection.writer.items_committed == SITES
    assert collector.collection.writer.commits < SITES  # grouped, not one transaction per site
    assert collector.in_flight == set()


def test_a_failing_item_does_not_take_the_others_with_it_and_claims_keep_items_apart() -> None:
    committed: list[list[str]] = []
    release = threading.Event()

    def commit(items: Sequence[str]) -> list[str]:
        release.wait(30)
        if "bad" in items:
            raise ValueError("cannot write bad")
        committed.append(list(items))
        return [item.upper() for item in items]

    writer: GroupWriter[str, str] = GroupWriter(commit, lambda item: frozenset({item.rstrip("2")}), gap_s=0)
    futures = [writer.submit(item) for item in ("a", "b", "bad", "c", "a2", "d")]
    release.set()
    assert writer.flush(timeout_s=30)

    assert futures[0].result() == "A" and futures[5].result() == "D"
    with pytest.raises(ValueError, match="cannot write bad"):
        futures[2].result()
    assert [f.result() for f in futures if f is not futures[2]] == ["A", "B", "C", "A2", "D"]
    # "a" and "a2" claim the same thing: never in one commit; the order of submission holds throughout.
    assert all(not {"a", "a2"} <= set(group) for group in committed)
    assert [item for group in committed for item in group] == ["a", "b", "c", "a2", "d"]
    assert writer.close(timeout_s=30)
    with pytest.raises(RuntimeError):
        writer.submit("late")
