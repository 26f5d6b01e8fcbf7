"""The design's boundaries and the README's promises, checked so they cannot drift silently."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from core.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_neither_streamlit_nor_schedule() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "core").rglob("*.py")
        if {"streamlit", "schedule"} & imported_modules(p)
    ]
    assert offenders == []


def test_jobs_do_not_import_streamlit() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "jobs").rglob("*.py") if "streamlit" in imported_modules(p)]
    assert offenders == []


def test_pages_do_not_open_the_database_or_the_network() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted({"duckdb", "httpx"} & imported_modules(p))
        for folder in ("pages", "ui")
        for p in (ROOT / folder).glob("*.py")
        if {"duckdb", "httpx"} & imported_modules(p)
    }
    assert offenders == {}


def test_pages_build_no_sql() -> None:
    sql = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b\s+\S+\s+(FROM|INTO|SET)\b")
    offenders = [p.name for p in (ROOT / "pages").glob("*.py") if sql.search(p.read_text())]
    assert offenders == []


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [f"DATACONN_{name.upper()}" for name in Settings.model_fields if f"DATACONN_{name.upper()}" not in readme]
    assert missing == []


def test_readme_starts_with_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```", 2)[1]
    assert "make run" in first_block and "make test" in first_block
