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


# The layers of core/, lowest first, and what each may import (see each package's __init__ docstring). A module at
# core/'s top level is a shared leaf (config, models, roles, localtime, cadence, ...), except `core.runtime`, the
# wiring, which may import any layer.
LAYER_MAY_IMPORT: dict[str, set[str]] = {
    "leaf": {"leaf"},
    "providers": {"leaf", "providers"},
    "store": {"leaf", "providers", "store"},
    "catalog": {"leaf", "providers", "store", "catalog"},
    "collect": {"leaf", "providers", "store", "catalog", "collect"},
    "analytics": {"leaf", "providers", "store", "catalog", "analytics"},  # never collect
    "runtime": {"leaf", "providers", "store", "catalog", "collect", "analytics"},
}
LAYER_PACKAGES = {"providers", "store", "catalog", "collect", "analytics"}
NEVER_IMPORTED_BY_CORE = {"pages", "ui", "jobs", "bench", "tests", "app"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    path = ROOT / Path(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imported_names(source: str, package: str) -> set[str]:
    """Every module `source` (a module of `package`) imports, anywhere in it (inside functions and TYPE_CHECKING
    blocks too), as dotted names; `from package import name` yields `package.name` when that is a module."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base)
    return names


def layer_of(module: str) -> str | None:
    """The core layer of a dotted module name, or None outside core."""
    parts = module.split(".")
    if parts[0] != "core":
        return None
    if parts[1:2] == ["runtime"]:
        return "runtime"
    return parts[1] if parts[1:2] and parts[1] in LAYER_PACKAGES else "leaf"


def layer_violations(modules: dict[str, tuple[str, str]]) -> list[str]:
    """`importer -> imported` for each import against the layers; `modules` maps a module to (its package, source)."""
    offenders = []
    for importer, (package, source) in sorted(modules.items()):
        allowed = LAYER_MAY_IMPORT[layer_of(importer) or "leaf"]
        for imported in sorted(imported_names(source, package)):
            layer = layer_of(imported)
            if imported.split(".")[0] in NEVER_IMPORTED_BY_CORE or (layer is not None and layer not in allowed):
                offenders.append(f"{importer} -> {imported}")
    return offenders


def core_modules() -> dict[str, tuple[str, str]]:
    modules = {}
    for path in (ROOT / "core").rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        modules[name] = (package, path.read_text())
    return modules


def test_core_imports_follow_the_layers() -> None:
    offenders = layer_violations(core_modules())
    assert offenders == [], "imports against the layers:\n" + "\n".join(offenders)


def test_the_layer_check_sees_imports_inside_functions_and_relative_ones() -> None:
    leaky = {
        "core.analytics.leaky": (
            "core.analytics",
            "from ..collect import gaps\nfrom core.store import store\n\n"
            "def f():\n    from core.collect.pass_inputs import window_for\n    import jobs.cli\n",
        ),
        "core.store.leaky": ("core.store", "from core.catalog import catalog as cat\n"),
        "core.localtime_leaky": ("core", "from .analytics import kpis\n"),
        "core.runtime": ("core", "from core.collect import collection\nfrom ui import context\n"),
    }
    assert layer_violations(leaky) == [
        "core.analytics.leaky -> core.collect.gaps",
        "core.analytics.leaky -> core.collect.pass_inputs",
        "core.analytics.leaky -> jobs.cli",
        "core.localtime_leaky -> core.analytics.kpis",
        "core.runtime -> ui.context",
        "core.store.leaky -> core.catalog.catalog",
    ]


DOCUMENTS = ("README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md"))))
_PATH = re.compile(r"`((?:core|jobs|pages|ui|tests|bench|docs)/[\w./-]*)`")


def test_every_path_the_documents_name_exists() -> None:
    """A file moved or renamed without its documentation fails here (the tree was reshaped in issue 13)."""
    missing = [
        f"{doc}: {name}"
        for doc in DOCUMENTS
        for name in _PATH.findall((ROOT / doc).read_text())
        if "*" not in name and not (ROOT / name.rstrip("/")).exists()
    ]
    assert missing == []


def test_the_architecture_names_every_core_module() -> None:
    """docs/architecture.md answers "where does X live?" for every module of core/."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    unnamed = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "core").rglob("*.py"))
        if p.name != "__init__.py" and p.name not in text
    ]
    assert unnamed == []
