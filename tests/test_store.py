"""The store against real DuckDB files: migrations, transactions, and several processes on one file."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from core.catalog import catalog as cat
from core.models import SiteIn
from core.store.schema import LATEST_VERSION, migrate, schema_version
from core.store.store import Store, StoreBusy


def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    store = Store(tmp_path / "new.duckdb")
    assert schema_version(store) == 0
    assert migrate(store) == list(range(1, LATEST_VERSION + 1))
    assert migrate(store) == []
    assert schema_version(store) == LATEST_VERSION
    with store.connect(read_only=True) as con:
        tables = {r[0] for r in con.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
        versions = con.sql("SELECT count(*) FROM schema_migrations").fetchall()[0][0]
    assert {"sites", "meters", "energy_sources", "source_secrets", "app_state", "schema_migrations"} <= tables
    assert versions == LATEST_VERSION


def test_transaction_rolls_back_everything_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as con:
        con.execute("INSERT INTO sites (name, latitude, longitude, timezone) VALUES ('A', 1, 2, 'UTC')")
        raise RuntimeError("boom")
    assert cat.load_catalog(store).sites == []


def test_connections_use_utc(store: Store) -> None:
    with store.connect(read_only=True) as con:
        assert con.sql("SELECT current_setting('TimeZone')").fetchall()[0][0] == "UTC"


def _create_sites(path: str, prefix: str, count: int, result: multiprocessing.Queue) -> None:
    store = Store(path, lock_timeout_s=30)
    errors = []
    for i in range(count):
        try:
            cat.create_site(store, SiteIn(name=f"{prefix} {i}", latitude=1, longitude=2, timezone="UTC"))
            cat.load_catalog(store)
        except Exception as exc:  # collected so the parent can assert on them
            errors.append(f"{type(exc).__name__}: {exc}")
    result.put(errors)


def test_two_processes_write_and_read_at_once_without_errors(store: Store) -> None:
    ctx = multiprocessing.get_context("spawn")
    result: multiprocessing.Queue = ctx.Queue()
    workers = [ctx.Process(target=_create_sites, args=(str(store.path), p, 25, result)) for p in ("North", "South")]
    for worker in workers:
        worker.start()
    outcomes = [result.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert outcomes == [[], []]
    names = {s.name for s in cat.load_catalog(store).sites}
    assert len(names) == 50


HOLD_SCRIPT = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def _hold_file(path: Path, seconds: float) -> subprocess.Popen:
    """An outside program (like the duckdb CLI) that opens the file without our lock."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(path), str(seconds)], stdout=subprocess.PIPE)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == b"holding"
    return holder


def test_waits_for_an_outside_holder_then_succeeds(store: Store) -> None:
    holder = _hold_file(store.path, 1.0)
    try:
        site = cat.create_site(store, SiteIn(name="After lock", latitude=0, longitude=0, timezone="UTC"))
    finally:
        holder.wait(timeout=30)
    assert cat.load_catalog(store).site(site.id).name == "After lock"


def test_gives_a_clear_message_when_the_file_stays_locked(store: Store) -> None:
    impatient = Store(store.path, lock_timeout_s=0.5)
    holder = _hold_file(store.path, 20.0)
    try:
        with pytest.raises(StoreBusy) as info:
            cat.create_site(impatient, SiteIn(name="Blocked", latitude=0, longitude=0, timezone="UTC"))
        still_holding = holder.poll() is None  # bounded: it gave up while the file was still held
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert still_holding
    assert "is busy" in str(info.value) and "duckdb CLI" in str(info.value)
    assert cat.load_catalog(store).sites == []


def test_read_only_connection_refuses_writes(store: Store) -> None:
    with store.connect(read_only=True) as con, pytest.raises(duckdb.Error):
        con.execute("INSERT INTO app_state (key, value) VALUES ('x', 'y')")
