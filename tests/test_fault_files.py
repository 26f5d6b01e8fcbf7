"""File-system faults under the database, made for real: a tmpfs remounted read-only, a tmpfs filled to the last
byte, a process without the capability to bypass file permissions, a directory or a foreign file at the database
path. Each command says one line naming the path and the cause (exit 1, no traceback), reading works on a
read-only location, the collector keeps what it fetched and writes it once the fault is gone, and nothing already
stored is damaged (checked by reopening and counting).

Mounting needs root (CI runs as root); without it these tests are reported as skipped, and CI fails on that.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from core.catalog import catalog as cat
from core.collect.collection import Collection
from core.config import Settings
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn
from core.runtime import Runtime, open_runtime
from core.store.secret_store import put_secret
from core.store.spool import Spool
from core.store.store import Store, StoreFault
from jobs.collector import Collector, collection_for, open_waiting
from tests.fakes import solaredge_v1
from tests.fakes.server import serve
from tests.processes import operator_env, run_module

SETPRIV = shutil.which("setpriv")


def _mount(path: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small file system of its own (16 MB), unmounted after the test."""
    mount = tmp_path / "fs"
    _mount(mount, "16m")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def env_for(db: Path, key_file: Path, *, demo: bool = True) -> dict[str, str]:
    return operator_env(db, key_file, demo=demo, DATACONN_LOCK_TIMEOUT_S="2")


def run(env: dict[str, str], module: str, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return run_module(module, *args, env=env, prefix=prefix)


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d [\d:,]+ )?(DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def one_line_failure(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The run failed with exit 1 and exactly one line besides its log lines, holding every needle; no traceback,
    no unexplained failure. Returns that line."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert "cannot explain" not in result.stderr
    said = [line for line in result.stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]
    said = [line.removeprefix("collector: ").removeprefix("sql: ") for line in said]
    assert len(said) == 1, result.stderr
    assert all(needle in said[0] for needle in needles), said[0]
    return said[0]


def count(db: Path, table: str = "readings") -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return int(con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0])
    finally:
        con.close()


def fill(directory: Path) -> Path:
    """Write zeros until the file system says it is full; returns the filler file to remove later."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 1):  # then the last partial blocks
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)
    assert shutil.disk_usage(directory).free < 4096
    return filler


# --- a read-only location ---------------------------------------------------------------------------------------


def test_a_read_only_location_reads_and_refuses_writes_in_one_line(tmpfs: Path, tmp_path: Path) -> None:
    db = tmpfs / "dataconn.duckdb"
    env = env_for(db, tmp_path / "secret.key")
    assert run(env, "jobs.cli", "init").returncode == 0
    assert run(env, "jobs.collector", "--once").returncode == 0
    stored = count(db)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)

    exported = run(env, "jobs.cli", "config", "export")
    assert exported.returncode == 0, exported.stderr
    assert "Demo Rooftop" in exported.stdout
    sql = run(env, "jobs.sql", "-c", "SELECT count(*) AS n FROM readings;")
    assert sql.returncode == 0, sql.stderr
    assert str(stored) in sql.stdout
    assert run(env, "jobs.cli", "init").returncode == 0  # already current: nothing to write

    # The dashboard's start and reads: the runtime opens, and the catalog and readings are there.
    runtime = open_runtime(Settings(db_path=db, key_file=tmp_path / "secret.key"))
    with runtime.store.connect(read_only=True) as con:
        assert con.sql("SELECT count(*) FROM readings").fetchall()[0][0] == stored

    config = tmp_path / "site.yaml"
    config.write_text(exported.stdout.replace("Demo Rooftop", "Second Roof"), encoding="utf-8")
    line = one_line_failure(run(env, "jobs.cli", "config", "import", str(config)))
    assert line.startswith(f"{db}: the location is read-only (reading works there"), line
    line = one_line_failure(run(env, "jobs.collector", "--once"))
    assert line.startswith(f"{db}: the location is read-only"), line
    assert count(db) == stored


# --- a full disk ---------------------------------------------------------------------------------------------------


def test_a_full_disk_fails_one_pass_in_one_line_and_damages_nothing(tmpfs: Path, tmp_path: Path) -> None:
    db = tmpfs / "dataconn.duckdb"
    env = env_for(db, tmp_path / "secret.key")
    assert run(env, "jobs.cli", "init").returncode == 0
    filler = fill(tmpfs)

    assert one_line_failure(run(env, "jobs.collector", "--once")).startswith(f"{db}: the disk is full")
    config = tmp_path / "site.yaml"
    config.write_text(run(env, "jobs.cli", "config", "export").stdout.replace("Demo Rooftop", "Annex"), "utf-8")
    line = one_line_failure(run(env, "jobs.cli", "config", "import", str(config)))
    assert line.startswith(f"{db}: the disk is full (free some space"), line
    assert count(db) == 0
    assert count(db, "sites") == 1  # the import wrote nothing, and the file still opens

    filler.unlink()
    again = run(env, "jobs.collector", "--once")
    assert again.returncode == 0, again.stderr
    assert count(db) > 1000  # the demo's month of history, written once there was room
    assert run(env, "jobs.cli", "config", "import", str(config)).returncode == 0
    assert count(db, "sites") == 2


class Fault:
    """A fault of the database's file system that a test starts and ends: a full disk, or a read-only remount."""

    def __init__(self, kind: str, mount: Path) -> None:
        self.kind, self.mount = kind, mount
        self.cause = {"full": "the disk is full", "read-only": "the location is read-only"}[kind]
        self._filler: Path | None = None

    def start(self) -> None:
        if self.kind == "full":
            self._filler = fill(self.mount)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(self.mount)], check=True)

    def end(self) -> None:
        if self._filler is not None:
            self._filler.unlink()
        else:
            subprocess.run(["mount", "-o", "remount,rw", str(self.mount)], check=True)


def errors_in(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_the_collector_keeps_its_passes_through_a_fault_and_writes_them_once_it_is_over(
    tmpfs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    settings = Settings(db_path=tmpfs / "dataconn.duckdb", key_file=tmp_path / "secret.key", lock_timeout_s=2)
    runtime = open_runtime(settings)
    collector = Collector(runtime)
    # The demo site counts as scheduled already, so a sync only drains and never dispatches a poll to a worker
    # thread: what is written is the held passes alone, whatever the machine's load.
    collector.intervals[("simulator", "site:1")] = 15
    fault = Fault(kind, tmpfs)
    try:
        collector.collection.run(datetime.now(UTC))  # the demo's first month, written
        stored = count(settings.db_path)
        fault.start()
        caplog.set_level(logging.INFO)
        later = datetime.now(UTC) + timedelta(hours=2)
        first = collector.collection.run(later)
        second = collector.collection.run(later + timedelta(minutes=15))
        sizes = [sum(r.batch.height for r in report.results if r.batch is not None) for report in (first, second)]
        assert first.in_memory and second.in_memory and sizes[0] > 0
        assert first.summary().endswith(f"reading(s) kept in memory ({fault.cause})")
        # The second pass reads on from the first (not again from the stored bookmark, which did not move).
        assert sizes[1] < sizes[0]
        errors = errors_in(caplog)
        assert len(errors) == 1, [r.getMessage() for r in errors]  # one ERROR for the episode, not one a pass
        assert errors[0].getMessage().startswith(f"cannot write {settings.db_path}: {fault.cause}")
        assert errors[0].exc_info is None
        assert count(settings.db_path) == stored

        collector.sync()  # the fault lasts: nothing raises, nothing more is logged at ERROR
        assert len(errors_in(caplog)) == 1
        fault.end()
        collector.sync()  # the minute's sync after the fault went away
        assert count(settings.db_path) > stored
        assert any(f"can be written again (after: {fault.cause})" in r.getMessage() for r in caplog.records)
        with runtime.store.connect(read_only=True) as con:
            newest, rows, keys = con.sql(
                "SELECT max(ts), count(*), count(DISTINCT (source_id, ts, interval_s)) FROM readings"
            ).fetchall()[0]
        assert newest >= later  # the held passes' intervals are in
        assert rows == keys  # and none twice
    finally:
        collector.executor.shutdown(wait=True)


def test_polling_pauses_when_memory_holds_all_it_may_and_resumes_after(
    tmpfs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(db_path=tmpfs / "dataconn.duckdb", key_file=tmp_path / "secret.key", lock_timeout_s=2)
    runtime = open_runtime(settings)
    collection = Collection(
        runtime.store, runtime.box, runtime.providers, Spool.beside(settings.db_path), memory_capacity=1
    )
    collection.run(datetime.now(UTC))
    filler = fill(tmpfs)
    caplog.set_level(logging.INFO)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert collection.run(later).in_memory
    paused = [collection.run(later + timedelta(minutes=15 * k)) for k in (1, 2)]
    assert all(not report.results and report.deferred for report in paused)  # no vendor polled, none thrown away
    said = [r.getMessage() for r in caplog.records]
    assert sum("polling pauses" in line for line in said) == 1
    assert len(errors_in(caplog)) == 1

    filler.unlink()
    resumed = collection.run(later + timedelta(minutes=45))
    assert resumed.results and not resumed.deferred and resumed.rows_written > 0
    assert sum("polling resumes" in r.getMessage() for r in caplog.records) == 1


def test_a_vendor_whose_budget_cannot_be_counted_is_not_called_during_a_fault(
    tmpfs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every vendor call first counts itself in the database (budgets hold across processes): on a full disk the
    call is not made at all, and the site is tried again once the fault is over."""
    fake = solaredge_v1.sandbox_state()
    with serve(solaredge_v1.create_app(fake)) as url:
        settings = Settings(
            db_path=tmpfs / "dataconn.duckdb",
            key_file=tmp_path / "secret.key",
            lock_timeout_s=2,
            seed_demo=False,
            solaredge_v1_base_url=url,
        )
        runtime = open_runtime(settings)
        add_vendor_source(runtime)
        collection = collection_for(runtime)
        assert [r.outcome for r in collection.run(datetime.now(UTC)).results] == ["ok"]
        calls = sum(fake.calls_served.values())
        filler = fill(tmpfs)
        caplog.set_level(logging.INFO)
        during = collection.run(datetime.now(UTC) + timedelta(minutes=15))
        assert not during.results and len(during.deferred) == 1
        assert sum(fake.calls_served.values()) == calls  # no call made, so none unaccounted for
        assert len(errors_in(caplog)) == 1 and all(r.exc_info is None for r in caplog.records)
        filler.unlink()
        after = collection.run(datetime.now(UTC) + timedelta(minutes=30))
        assert [r.outcome for r in after.results] == ["ok"] and not after.deferred


def add_vendor_source(runtime: Runtime) -> None:
    site = cat.create_site(runtime.store, SiteIn(name="Roof", latitude=50.8, longitude=4.3, timezone="Europe/Brussels"))
    meter = cat.create_meter(runtime.store, site.id, MeterIn(name="PV", category=Category.PROD))
    api = ApiSettings(use_api=True, api_provider=Provider.SOLAREDGE_V1, system_id=solaredge_v1.SANDBOX_SITE_ID)
    source = SourceIn(
        name="Array", source_type="solar", capacity_kw=8, carbon_intensity_g_per_kwh=0, cost_per_mwh=0, api=api
    )
    with runtime.store.transaction() as con:
        put_secret(con, runtime.box, cat.insert_source(con, meter.id, source), "api_key", solaredge_v1.SANDBOX_API_KEY)


def test_a_database_reached_through_a_link_or_dot_dot_is_named_as_given(tmpfs: Path, tmp_path: Path) -> None:
    """DuckDB prints the path with links and ".." resolved: the fault is still recognised, and named as given."""
    (tmp_path / "link").symlink_to(tmpfs)
    db = tmp_path / "link" / "dataconn.duckdb"
    env = env_for(db, tmp_path / "secret.key")
    assert run(env, "jobs.cli", "init").returncode == 0
    filler = fill(tmpfs)
    assert one_line_failure(run(env, "jobs.collector", "--once")).startswith(f"{db}: the disk is full")
    filler.unlink()
    dotted = tmp_path / "link" / ".." / "link" / "other.duckdb"
    (tmpfs / "other.duckdb").write_text("not a database", encoding="utf-8")
    line = one_line_failure(run(env_for(dotted, tmp_path / "secret.key"), "jobs.cli", "config", "export"))
    assert line.startswith(f"{dotted}: it is not a DuckDB database file"), line


def test_the_collector_waits_at_start_for_a_fault_to_go_away(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "dataconn.duckdb"
    db.mkdir()  # a directory where the database should be
    settings = Settings(db_path=db, key_file=tmp_path / "secret.key", lock_timeout_s=2)
    caplog.set_level(logging.INFO)
    stop = threading.Event()
    opened: list[object] = []
    waiting = threading.Thread(target=lambda: opened.append(open_waiting(settings, wait=True, stop=stop, retry_s=0.1)))
    waiting.start()
    try:
        deadline = time.monotonic() + 30
        while not errors_in(caplog) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # several more tries
        assert waiting.is_alive()
        db.rmdir()
        waiting.join(timeout=60)
    finally:
        stop.set()
    assert opened and opened[0] is not None  # it started once the path was free
    errors = errors_in(caplog)
    assert len(errors) == 1 and errors[0].getMessage().startswith(f"{db}: it is a directory")
    assert any("can be used: starting" in r.getMessage() for r in caplog.records)


# --- permission denied, a directory, a foreign file -------------------------------------------------------------


@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is needed to drop the capability")
def test_permission_denied_is_one_line_for_every_command(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to drop the capability that lets root read any file (CI runs as root)")
    db = tmp_path / "db" / "dataconn.duckdb"
    env = env_for(db, tmp_path / "secret.key")
    assert run(env, "jobs.cli", "init").returncode == 0
    stored = count(db, "sites")
    for path in (db, db.with_name(db.name + ".lock")):
        path.chmod(0)
    # As root without the capability to bypass file permissions: the kernel then refuses root like anybody.
    no_bypass = (SETPRIV or "setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")
    for module, args in (
        ("jobs.cli", ("config", "export")),
        ("jobs.cli", ("init",)),
        ("jobs.sql", ("-c", "SELECT 1;")),
        ("jobs.collector", ("--once",)),
    ):
        line = one_line_failure(run(env, module, *args, prefix=no_bypass), "permission denied")
        assert line.startswith((f"{db}: ", f"{db}.lock: ")), line  # readers open the file, writers its lock first
    db.chmod(0o600)
    assert count(db, "sites") == stored


@pytest.mark.parametrize("what", ["directory", "foreign file"])
def test_something_else_at_the_database_path_is_one_line(tmp_path: Path, what: str) -> None:
    db = tmp_path / "dataconn.duckdb"
    if what == "directory":
        db.mkdir()
        needle = "is a directory"
    else:
        db.write_text("name,value\nnot,a database\n", encoding="utf-8")
        needle = "not a DuckDB database"
    env = env_for(db, tmp_path / "secret.key")
    for module, args in (
        ("jobs.cli", ("init",)),
        ("jobs.cli", ("config", "export")),
        ("jobs.sql", ("-c", "SELECT 1;")),
        ("jobs.collector", ("--once",)),
    ):
        assert one_line_failure(run(env, module, *args), needle).startswith(f"{db}: ")
    if what == "foreign file":
        assert db.read_text(encoding="utf-8") == "name,value\nnot,a database\n"  # untouched


def test_a_query_error_is_not_taken_for_a_fault_of_the_database(store: Store, tmp_path: Path) -> None:
    """`read_csv` of a missing file is the analyst's error, not the database's: it stays a query error."""
    with pytest.raises(duckdb.Error) as raised, store.connect(read_only=True) as con:
        con.sql(f"SELECT * FROM read_csv('{tmp_path / 'missing.csv'}')").fetchall()
    assert not isinstance(raised.value, StoreFault)


# --- private files ----------------------------------------------------------------------------------------------


def test_new_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    db = tmp_path / "db" / "dataconn.duckdb"
    env = env_for(db, tmp_path / "keys" / "secret.key")
    # A usual shell umask: new files would be world-readable.
    result = run_module("jobs.cli", "init", env=env, preexec_fn=lambda: os.umask(0o022))
    assert result.returncode == 0, result.stderr
    for path in (db, db.with_name(db.name + ".lock"), tmp_path / "keys" / "secret.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_store_makes_the_file_it_creates_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "new.duckdb")
        with store.transaction() as con:
            con.execute("CREATE TABLE t (x INTEGER)")
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.lock_path.stat().st_mode) == 0o600


def test_existing_files_are_tightened_at_start_with_one_info_line(tmp_path: Path) -> None:
    db = tmp_path / "dataconn.duckdb"
    env = env_for(db, tmp_path / "secret.key", demo=False)
    assert run(env, "jobs.cli", "init").returncode == 0
    lax = [db, db.with_name(db.name + ".lock"), tmp_path / "secret.key"]
    for path in lax:
        path.chmod(0o644)
    result = run(env, "jobs.cli", "init")
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "made private" in line]
    assert len(said) == 1 and said[0].startswith("INFO"), result.stderr
    for path in lax:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert str(path) in said[0]


# --- converting the file format on a full disk -------------------------------------------------------------------


def test_a_conversion_the_disk_cannot_hold_leaves_the_file_in_use_and_is_tried_again(tmpfs: Path) -> None:
    from tests.test_file_format import backups, digest, rewrite_in_newer_format

    db, key = tmpfs / "dataconn.duckdb", tmpfs / "secret.key"
    env = env_for(db, key)
    assert run_module("jobs.cli", "init", env=env).returncode == 0
    rewrite_in_newer_format(db)  # as DuckDB 2.0 wrote files before
    before = digest(db)
    filler = fill(tmpfs)
    os.truncate(filler, filler.stat().st_size - 64 * 1024)  # room to open the file, not for a copy of it

    full = run_module("jobs.cli", "init", env=env)

    assert full.returncode == 0, full.stderr  # the dashboard and the collector still start on it
    assert "could not convert the file (the disk is full); it is unchanged; it stays in use" in full.stderr
    assert "Traceback" not in full.stderr and digest(db) == before and backups(db) == []
    assert sorted(p.name for p in tmpfs.iterdir() if "converting" in p.name) == []
    filler.unlink()
    again = run_module("jobs.cli", "init", env=env)
    assert again.returncode == 0 and len(backups(db)) == 1  # converted once there is room
