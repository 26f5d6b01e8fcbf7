"""The DuckDB file opens in analysts' tools: created in the format of the DuckDB 1.5 line, a file in DuckDB 2.0's own
format converted once by `init` (copy, counts checked, atomic swap, backup kept), read by a real DuckDB 1.5, and
`make sql` printing rounded numbers.

The DuckDB 1.5 reader is the real one: a throwaway virtualenv with the 1.5 wheel (a few seconds with pip's cache;
it needs the package index, as installing the project does), never skipped."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from core.models import Category
from core.store.file_format import converting_path, file_storage_version
from core.store.store import STORAGE_COMPATIBILITY, Store
from tests.crafting import SourceSpec, craft_site, write_readings
from tests.holder import held
from tests.processes import operator_env, run_module

NEWER_FORMAT = "v2.0.0"  # DuckDB 2.0's own storage format, which files created before this change are in
START = datetime(2026, 11, 1, tzinfo=UTC)

# Counts every table and view of the file, read-only; run by our DuckDB and by DuckDB 1.5 alike.
COUNT_ALL = """
import json, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
names = con.sql(
    "SELECT table_name FROM duckdb_tables() WHERE NOT internal UNION ALL "
    "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
).fetchall()
counts = {name: con.sql(f'SELECT count(*) FROM "{name}"').fetchall()[0][0] for (name,) in names}
energy = con.sql("SELECT round(sum(value), 6) FROM readings").fetchall()[0][0]
print(json.dumps({"version": duckdb.__version__, "counts": counts, "energy": energy}))
"""


def counts_by(python: str, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-c", COUNT_ALL, str(db)], capture_output=True, text=True, timeout=120)


def read_with(python: str, db: Path) -> dict:
    result = counts_by(python, db)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def duckdb_1_5(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Python of a fresh virtualenv holding only DuckDB 1.5 (the line of the newest packaged DuckDB CLI)."""
    venv = tmp_path_factory.mktemp("duckdb-1.5") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = str(venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check"]
    installed = subprocess.run(
        [*pip, "install", "--quiet", "duckdb>=1.5,<1.6"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, f"could not install DuckDB 1.5 for the reader test: {installed.stderr}"
    return python


def operator(tmp_path: Path, **more: str) -> dict[str, str]:
    return operator_env(tmp_path / "dataconn.duckdb", tmp_path / "secret.key", demo=True, **more)


def initialised_with_readings(tmp_path: Path) -> Path:
    """A database as `init` makes it, with the demo site and a day of readings of a crafted site (rollups too)."""
    env = operator(tmp_path)
    result = run_module("jobs.cli", "init", env=env)
    assert result.returncode == 0, result.stderr
    db = tmp_path / "dataconn.duckdb"
    store = Store(db)
    _, ids = craft_site(store, [SourceSpec(Category.PROD, "solar")])
    write_readings(store, ids["PROD solar"], START, [100.0 + i * 0.25 for i in range(96)])
    return db


def rewrite_in_newer_format(db: Path) -> None:
    """The file as DuckDB 2.0 wrote it before new files were created in the compatible format."""
    newer = db.with_name("newer.duckdb")
    con = duckdb.connect(str(db))
    try:
        name = con.sql("SELECT current_database()").fetchall()[0][0]
        con.execute(f"ATTACH '{newer}' AS newer (STORAGE_VERSION '{NEWER_FORMAT}')")
        con.execute(f'COPY FROM DATABASE "{name}" TO newer')
        con.execute("DETACH newer")
    finally:
        con.close()
    os.replace(newer, db)
    assert file_storage_version(Store(db)) == NEWER_FORMAT


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backups(db: Path) -> list[Path]:
    return sorted(p for p in db.parent.glob(f"{db.name}.*-backup*") if p.suffix != ".lock")


def conversion_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "core.store.file_format" in line]


def test_a_new_file_is_in_the_format_of_the_duckdb_1_5_line(store: Store) -> None:
    _, ids = craft_site(store, [SourceSpec(Category.CONS, "grid")])
    write_readings(store, ids["CONS grid"], START, [1.0] * 96)
    with store.connect() as con:
        con.execute("CHECKPOINT")  # written to the file itself, not only to its WAL
    assert file_storage_version(store) == STORAGE_COMPATIBILITY == "v1.5.0"
    rewrite_in_newer_format(store.path)  # and the query tells the formats apart
    assert file_storage_version(store) == NEWER_FORMAT


def test_init_converts_a_newer_file_once_keeping_the_original_as_a_backup(tmp_path: Path) -> None:
    db = initialised_with_readings(tmp_path)
    before = read_with(sys.executable, db)
    assert before["counts"]["readings"] == 96 and before["counts"]["readings_15min"] > 0
    rewrite_in_newer_format(db)

    result = run_module("jobs.cli", "init", env=operator(tmp_path))
    assert result.returncode == 0, result.stderr
    said = conversion_lines(result.stderr)
    assert len(said) == 1 and said[0].startswith("INFO "), result.stderr
    assert f"from storage format {NEWER_FORMAT} to {STORAGE_COMPATIBILITY}" in said[0]

    assert file_storage_version(Store(db)) == STORAGE_COMPATIBILITY
    assert read_with(sys.executable, db) == before
    [backup] = backups(db)
    assert backup.name == f"dataconn.duckdb.{NEWER_FORMAT}-format-backup" and str(backup) in said[0]
    assert file_storage_version(Store(backup)) == NEWER_FORMAT
    assert read_with(sys.executable, backup) == before
    for path in (db, backup):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not converting_path(db).exists()

    # The sequences went along: new rows get new ids, and the file stays in the compatible format.
    store = Store(db)
    with store.connect(read_only=True) as con:
        newest_site = con.sql("SELECT max(id) FROM sites").fetchall()[0][0]
    site_id, _ = craft_site(store, [SourceSpec(Category.PROD, "solar")], name="After conversion")
    assert site_id > newest_site
    assert file_storage_version(store) == STORAGE_COMPATIBILITY

    again = run_module("jobs.cli", "init", env=operator(tmp_path))
    assert again.returncode == 0, again.stderr
    assert conversion_lines(again.stderr) == []
    assert backups(db) == [backup]


@pytest.mark.parametrize("read_only", [False, True], ids=["held for writing", "held for reading"])
def test_a_held_file_is_left_as_it_is_with_one_line(tmp_path: Path, read_only: bool) -> None:
    db = initialised_with_readings(tmp_path)
    rewrite_in_newer_format(db)
    original = digest(db)
    with held(db, read_only=read_only):
        result = run_module("jobs.cli", "init", env=operator(tmp_path, DATACONN_LOCK_TIMEOUT_S="1"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert "busy" in line and "dataconn.duckdb" in line, line
    assert digest(db) == original
    assert backups(db) == [] and not converting_path(db).exists()
    assert file_storage_version(Store(db)) == NEWER_FORMAT


def test_a_copy_left_by_an_interrupted_conversion_is_discarded(tmp_path: Path) -> None:
    db = initialised_with_readings(tmp_path)
    before = read_with(sys.executable, db)
    rewrite_in_newer_format(db)
    # A crash mid-copy leaves a partial new file (and maybe its WAL) beside the untouched original.
    partial = converting_path(db)
    partial.write_bytes(b"half a database")
    partial.with_name(partial.name + ".wal").write_bytes(b"half a log")

    result = run_module("jobs.cli", "init", env=operator(tmp_path))
    assert result.returncode == 0, result.stderr
    assert len(conversion_lines(result.stderr)) == 1
    assert read_with(sys.executable, db) == before
    assert not partial.exists() and not partial.with_name(partial.name + ".wal").exists()


def test_duckdb_1_5_reads_new_and_converted_files_and_refuses_the_newer_format(tmp_path: Path, duckdb_1_5: str) -> None:
    fresh = initialised_with_readings(tmp_path / "fresh")
    ours = read_with(sys.executable, fresh)
    theirs = read_with(duckdb_1_5, fresh)
    assert theirs["version"].startswith("1.5.")
    assert theirs["counts"] == ours["counts"] and theirs["energy"] == ours["energy"]
    assert theirs["counts"]["readings"] == 96 and theirs["counts"]["v_kpi_daily"] > 0

    converted = initialised_with_readings(tmp_path / "converted")
    rewrite_in_newer_format(converted)
    refused = counts_by(duckdb_1_5, converted)  # the reader is a real 1.5: it refuses what it cannot read
    assert refused.returncode != 0 and "version number" in refused.stderr
    assert run_module("jobs.cli", "init", env=operator(tmp_path / "converted")).returncode == 0
    assert read_with(duckdb_1_5, converted)["counts"] == read_with(sys.executable, converted)["counts"]


def test_make_sql_prints_numbers_rounded(app_env: Path) -> None:
    assert run_module("jobs.cli", "init").returncode == 0
    result = run_module(
        "jobs.sql",
        "-c",
        "SELECT 1234.56789::DOUBLE AS power_w, 0.000123456::DOUBLE AS ratio, 2.50::DOUBLE AS kwh,"
        " 0.0::DOUBLE AS zero, 12.30::DECIMAL(5, 2) AS price, 96 AS n, 'x' AS label",
    )
    assert result.returncode == 0, result.stderr
    header, _, row, _ = result.stdout.splitlines()
    assert row.split() == ["1234.568", "0.000123", "2.5", "0", "12.30", "96", "x"]
    assert header.index("power_w") + len("power_w") == row.index("1234.568") + len("1234.568")  # aligned right


def test_the_first_look_at_a_current_file_needs_no_write_access(tmp_path: Path) -> None:
    db = initialised_with_readings(tmp_path)
    with held(db, read_only=True):  # a reader holds it: a writing connection would have to wait
        result = run_module("jobs.cli", "init", env=operator(tmp_path, DATACONN_LOCK_TIMEOUT_S="1"))
    # init's migration has nothing to do either, so it succeeds beside the reader
    assert result.returncode == 0, result.stderr
    assert conversion_lines(result.stderr) == []


def test_the_readme_notebook_snippet_reads_a_polars_frame(tmp_path: Path) -> None:
    db = initialised_with_readings(tmp_path)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    [snippet] = re.findall(r"```python\n(import duckdb\n.*?)```", readme, flags=re.DOTALL)
    assert "duckdb -readonly data/dataconn.duckdb" in readme
    names: dict[str, object] = {}
    # the crafted site holds the readings (the demo's come with a collection pass)
    exec(snippet.replace('"data/dataconn.duckdb"', repr(str(db))).replace("'Demo Rooftop'", "'Plant'"), names)
    daily = names["daily"]
    assert isinstance(daily, pl.DataFrame) and daily.height > 0 and "e_prod_kwh" in daily.columns
