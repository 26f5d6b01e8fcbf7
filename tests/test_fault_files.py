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
import shutil
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from core.config import Settings
from core.runtime import open_runtime
from core.store import Store, StoreFault
from jobs.collector import Collector
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


def one_line_failure(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The run failed with exit 1 and one line (besides log lines) that holds every needle; no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert "unexpected error" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if all(n in line for n in needles)]
    assert len(lines) >= 1, result.stderr
    return lines[0]


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
    line = one_line_failure(run(env, "jobs.cli", "config", "import", str(config)), "read-only")
    assert str(tmpfs) in line
    one_line_failure(run(env, "jobs.collector", "--once"), "read-only", str(tmpfs))
    assert count(db) == stored


# --- a full disk ---------------------------------------------------------------------------------------------------


def test_a_full_disk_fails_one_pass_in_one_line_and_damages_nothing(tmpfs: Path, tmp_path: Path) -> None:
    db = tmpfs / "dataconn.duckdb"
    env = env_for(db, tmp_path / "secret.key")
    assert run(env, "jobs.cli", "init").returncode == 0
    filler = fill(tmpfs)

    one_line_failure(run(env, "jobs.collector", "--once"), "disk is full")
    config = tmp_path / "site.yaml"
    config.write_text(run(env, "jobs.cli", "config", "export").stdout.replace("Demo Rooftop", "Annex"), "utf-8")
    one_line_failure(run(env, "jobs.cli", "config", "import", str(config)), "disk is full", str(tmpfs))
    assert count(db) == 0
    assert count(db, "sites") == 1  # the import wrote nothing, and the file still opens

    filler.unlink()
    again = run(env, "jobs.collector", "--once")
    assert again.returncode == 0, again.stderr
    assert count(db) > 1000  # the demo's month of history, written once there was room
    assert run(env, "jobs.cli", "config", "import", str(config)).returncode == 0
    assert count(db, "sites") == 2


def test_the_collector_keeps_a_pass_through_a_full_disk_and_writes_it_once_there_is_room(
    tmpfs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(db_path=tmpfs / "dataconn.duckdb", key_file=tmp_path / "secret.key", lock_timeout_s=2)
    runtime = open_runtime(settings)
    collector = Collector(runtime)
    try:
        collector.collection.run(datetime.now(UTC))  # the demo's first month, written
        stored = count(settings.db_path)
        filler = fill(tmpfs)
        caplog.set_level(logging.INFO)
        later = datetime.now(UTC) + timedelta(hours=2)
        first = collector.collection.run(later)
        second = collector.collection.run(later + timedelta(minutes=15))
        held = sum(r.batch.height for report in (first, second) for r in report.results if r.batch is not None)
        assert first.spooled and second.spooled and held > 0
        assert "disk is full" in first.summary()
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]  # one ERROR for the episode, not one a pass
        assert "disk is full" in errors[0].getMessage() and errors[0].exc_info is None
        assert count(settings.db_path) == stored

        collector.sync()  # the fault lasts: nothing raises, nothing more is logged at ERROR
        assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
        filler.unlink()
        collector.sync()  # the minute's sync after the space came back
        assert count(settings.db_path) > stored
        assert any("can be written again" in r.getMessage() for r in caplog.records)
        with runtime.store.connect(read_only=True) as con:
            newest, rows, keys = con.sql(
                "SELECT max(ts), count(*), count(DISTINCT (source_id, ts, interval_s)) FROM readings"
            ).fetchall()[0]
        assert newest >= later  # the held passes' intervals are in
        assert rows == keys  # and none twice
    finally:
        collector.executor.shutdown(wait=True)


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
        one_line_failure(run(env, module, *args, prefix=no_bypass), "permission denied", str(db.parent))
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
        one_line_failure(run(env, module, *args), needle, str(db))
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
