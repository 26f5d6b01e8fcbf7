"""`python -m jobs.sql` (`make sql`): read-only statements, one short connection each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.config import load_settings
from core.runtime import open_runtime
from jobs.sql import statements

ROOT = Path(__file__).resolve().parents[1]


def sql(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs.sql", *args],
        cwd=ROOT,
        env=os.environ.copy(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_statements_split_on_semicolons_outside_quotes_and_comments() -> None:
    assert statements("SELECT 'a;b'; SELECT 2;\n") == ["SELECT 'a;b'", "SELECT 2"]
    assert statements("-- don't split here; please\nSELECT 3;") == ["-- don't split here; please\nSELECT 3"]


def test_one_off_statements_print_tables_and_writes_are_refused(app_env: Path) -> None:
    open_runtime(load_settings())  # migrated and seeded, as `make sql` does with `jobs.cli init`
    result = sql("-c", "SELECT site, source FROM v_sources ORDER BY source LIMIT 2; SELECT 'a;b' AS s")
    assert result.returncode == 0, result.stderr
    assert "site" in result.stdout and "Battery" in result.stdout and "(2 rows)" in result.stdout
    assert "a;b" in result.stdout
    refused = sql("-c", "DELETE FROM readings")
    assert refused.returncode == 1 and "read-only" in refused.stdout and "Traceback" not in refused.stderr


def test_the_interactive_session_reads_statements_over_lines(app_env: Path) -> None:
    open_runtime(load_settings())
    result = sql(stdin=".tables\nSELECT count(*)\n  AS sources FROM v_sources;\n.quit\n")
    assert result.returncode == 0, result.stderr
    assert "v_energy_daily" in result.stdout and "readings" in result.stdout
    assert "sources" in result.stdout and "5" in result.stdout


def test_no_database_says_what_to_do(app_env: Path) -> None:
    result = sql("-c", "SELECT 1")
    assert result.returncode == 1 and "run `python -m jobs.cli init` first" in result.stderr
