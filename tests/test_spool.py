"""Passes go on while an outside program holds the file: readings wait in the spool and land once, in order."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core.catalog.demo import seed_demo
from core.collect.collection import Collection
from core.collect.pass_write import apply_entry
from core.config import Settings
from core.providers.base import QuotaRule, RateLimited
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.store import spool as spool_module
from core.store.crypto import SecretBox
from core.store.quota_store import StoredQuotaLedger
from core.store.schema import migrate
from core.store.spool import Spool
from core.store.store import Store
from tests.holder import held

NOW = datetime(2026, 6, 21, 12, 2, tzinfo=UTC)
COLUMNS = "source_id, ts, interval_s, value, is_final"


def demo_store(path: Path) -> Store:
    store = Store(path, lock_timeout_s=1)
    migrate(store)
    seed_demo(store)
    return store


def table(store: Store, sql: str) -> list[tuple]:
    with store.connect(read_only=True) as con:
        return con.sql(sql).fetchall()


@pytest.fixture
def context() -> ProviderContext:
    return ProviderContext(Settings(), QuotaLedger())


def test_a_held_file_spools_passes_and_they_land_once_in_order(
    tmp_path: Path, box: SecretBox, context: ProviderContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="core")
    held_store, free_store = demo_store(tmp_path / "held.duckdb"), demo_store(tmp_path / "free.duckdb")
    spool = Spool.beside(held_store.path)
    collection = Collection(held_store, box, context, spool)
    reference = Collection(free_store, box, context)
    passes = [NOW + timedelta(minutes=5 * k) for k in range(4)]

    assert collection.run(passes[0]).spooled is None
    with held(held_store.path):
        during = [collection.run(moment) for moment in passes[1:3]]
    assert all(report.spooled for report in during)
    assert len(spool.pending()) == 2 and all(r.outcome == "ok" for p in during for r in p.results)
    assert "spooled (database held)" in during[0].summary()

    after = collection.run(passes[3])  # the file is free: the spool goes first, then this pass
    assert after.spooled is None and spool.pending() == []
    for moment in passes:
        reference.run(moment)

    query = f"SELECT {COLUMNS} FROM readings ORDER BY source_id, ts"
    assert table(held_store, query) == table(free_store, query)  # exactly what an unheld collector stored
    assert table(held_store, "SELECT count(*) FROM collector_runs") == [(24,)]  # 4 passes x 6 sources
    assert table(held_store, "SELECT count(*) FROM spool_applied") == [(2,)]
    held_lines = [r for r in caplog.records if "holds the database" in r.getMessage()]
    free_lines = [r for r in caplog.records if "free again" in r.getMessage()]
    assert [r.levelname for r in held_lines + free_lines] == ["WARNING", "INFO"]  # the hold, once each way
    rollups = "SELECT source_id, bucket, energy_wh FROM readings_hourly ORDER BY ALL"
    assert table(held_store, rollups) == table(free_store, rollups)


def test_a_read_only_holder_still_lets_the_pass_read_then_spools_its_write(
    tmp_path: Path, box: SecretBox, context: ProviderContext
) -> None:
    store = demo_store(tmp_path / "ro.duckdb")
    spool = Spool.beside(store.path)
    with held(store.path, read_only=True):
        report = Collection(store, box, context, spool).run(NOW)  # no inputs kept yet: they are read
    assert report.spooled and [r.outcome for r in report.results] == ["ok"]
    Collection(store, box, context, spool).drain()
    assert spool.pending() == []
    assert table(store, "SELECT count(DISTINCT source_id), count(*) = count(DISTINCT (source_id, ts)) FROM readings")[
        0
    ] == (6, True)


def test_a_crash_after_the_commit_does_not_write_the_entry_twice(
    tmp_path: Path, box: SecretBox, context: ProviderContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = demo_store(tmp_path / "crash.duckdb")
    spool = Spool.beside(store.path)
    collection = Collection(store, box, context, spool)
    collection.run(NOW)
    with held(store.path):
        collection.run(NOW + timedelta(minutes=5))
    real_rmtree = spool_module.shutil.rmtree

    def crash(*args: object, **kwargs: object) -> None:
        raise SystemExit("killed between the commit and the clean-up")

    monkeypatch.setattr(spool_module.shutil, "rmtree", crash)
    with pytest.raises(SystemExit):
        spool.drain(store, apply_entry)
    monkeypatch.setattr(spool_module.shutil, "rmtree", real_rmtree)
    before = table(store, "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM collector_runs)")
    assert spool.drain(store, apply_entry) == (0, 0)  # recorded as applied: only the directory goes
    assert spool.pending() == []
    assert table(store, "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM collector_runs)") == before


def test_a_torn_entry_is_ignored_and_cleaned_up(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    (spool.directory / "tmp-pass-interrupted").mkdir(parents=True)
    assert spool.pending() == []
    spool_module.LEFTOVER_AGE_S = -1
    try:
        store = Store(tmp_path / "x.duckdb", lock_timeout_s=1)
        migrate(store)
        assert spool.drain(store, apply_entry) == (0, 0)
    finally:
        spool_module.LEFTOVER_AGE_S = 600
    assert list(spool.directory.iterdir()) == []


RULES = (QuotaRule("account", "day", 3),)
SCOPE = {"account": "key-1"}


def test_calls_are_counted_in_a_journal_while_the_file_is_held(store: Store) -> None:
    journal = store.path.with_name("journal.jsonl")
    ledger = StoredQuotaLedger(store, journal=journal)
    ledger.reserve("solaredge", SCOPE, RULES, NOW)  # seen with the file free: 1 of 3
    with held(store.path):
        ledger.reserve("solaredge", SCOPE, RULES, NOW)
        ledger.reserve("solaredge", SCOPE, RULES, NOW)
        with pytest.raises(RateLimited, match="3 calls per day"):
            ledger.reserve("solaredge", SCOPE, RULES, NOW)  # the budget holds without the database
        with pytest.raises(RateLimited, match="cannot be checked"):
            ledger.reserve("solaredge", {"account": "key-2"}, RULES, NOW)  # never seen: refused, not guessed
        assert len(journal.read_text().splitlines()) == 2
    fresh = StoredQuotaLedger(store, journal=journal)  # a restart: the journal is read back
    with pytest.raises(RateLimited):
        fresh.reserve("solaredge", SCOPE, RULES, NOW)
    assert fresh.used("solaredge", "key-1", "day", NOW) == 3 and journal.read_text() == ""


def test_a_poll_result_survives_the_spool_unchanged() -> None:
    from core.collect.poll_result import GroupResult
    from core.providers.exchange import Exchange

    batch = pl.DataFrame(
        {
            "source_id": [7, 8],
            "ts": [NOW, NOW],
            "interval_s": [900, 900],
            "value": [1.5, None],
            "is_final": [True, False],
        }
    ).cast({"ts": pl.Datetime("us", "UTC"), "interval_s": pl.Int32})
    result = GroupResult(
        [7, 8],
        "solaredge",
        NOW,
        duration_ms=12.5,
        outcome="rate_limited",
        error="SolarEdge allows 10 calls per minute",
        retry_at=NOW + timedelta(minutes=1),
        gap_window=(NOW - timedelta(days=2), NOW - timedelta(days=1)),
        http_status=429,
        quota_used=10,
        quota_remaining=1990,
        exchanges=[Exchange("sites/1/power?x=1", NOW, 429, '{"detail": "slow down"}', 3.25)],
        batch=batch,
    )
    back = GroupResult.from_json(json.loads(json.dumps(result.to_json())), batch)
    assert back.batch is not None and back.batch.equals(batch)
    assert back == GroupResult(**{**result.__dict__, "batch": back.batch})
