"""Every fixture file says where its shape comes from (issue 13, point 5).

A fixture is any file under a `fixtures` folder of `tests/` (at any depth). The `PROVENANCE.md` of the fixture's own
folder must name it in a line starting with a dash and the file name in backticks, then a colon and where the
shape comes from: a vendor document, a live capture published by others, or what it was made up to test. A line
may name several files before its colon. A listed file that no longer exists is reported too, so the listing cannot
drift from the folder.
"""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
LISTING = "PROVENANCE.md"
# The kinds of origin the listings use; a line's description must start with one of them.
ORIGINS = ("live", "documented", "spec", "constructed")
_NAMED = re.compile(r"`([^`]+)`")


def fixture_folders(root: Path) -> list[Path]:
    """Every folder inside a `fixtures` folder of `root` (the `fixtures` folders included) holding a file."""
    folders: set[Path] = set()
    for top in root.rglob("fixtures"):
        if not top.is_dir():
            continue
        for path in top.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                folders.add(path.parent)
    return sorted(folders)


def listed(listing: str) -> dict[str, str]:
    """File name -> its description, from the lines "- `name`[, `name` ...]: description" of a listing."""
    entries: dict[str, str] = {}
    for line in listing.splitlines():
        if not line.startswith("- `") or ":" not in line:
            continue
        names, description = line.split(":", 1)
        for name in _NAMED.findall(names):
            entries[name] = description.strip()
    return entries


def provenance_problems(root: Path) -> list[str]:
    """What is wrong with the provenance of the fixtures under `root`, one line each (empty when all is listed)."""
    problems = []
    for folder in fixture_folders(root):
        where = folder.relative_to(root)
        files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != LISTING)
        listing = folder / LISTING
        if not listing.is_file():
            problems.extend(f"{where}/{name}: no {LISTING} in its folder" for name in files)
            continue
        entries = listed(listing.read_text(encoding="utf-8"))
        for name in files:
            description = entries.get(name)
            if description is None:
                problems.append(f"{where}/{name}: not named in {where}/{LISTING}")
            elif not description.lower().startswith(ORIGINS):
                problems.append(f"{where}/{name}: its line does not say where the shape comes from ({ORIGINS})")
        problems.extend(
            f"{where}/{LISTING} names {name}, which is not in the folder" for name in entries if name not in files
        )
    return problems


def test_every_fixture_file_says_where_its_shape_comes_from() -> None:
    assert fixture_folders(TESTS), "no fixture folder found under tests/"
    assert provenance_problems(TESTS) == []


def test_the_check_catches_an_unlisted_file_a_vague_line_and_a_stale_line(tmp_path: Path) -> None:
    folder = tmp_path / "providers" / "fixtures" / "acme"
    folder.mkdir(parents=True)
    for name in ("listed.json", "shared_a.json", "shared_b.json", "vague.json", "forgotten.json"):
        (folder / name).write_text("{}")
    (folder / LISTING).write_text(
        "# Acme fixtures\n\n"
        "- `listed.json`: documented; Acme's API reference, section 4.\n"
        "- `shared_a.json`, `shared_b.json`: constructed; made up to test paging.\n"
        "- `vague.json`: a file.\n"
        "- `gone.json`: live; a capture published by others.\n"
    )
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "stray.csv").write_text("timestamp,value\n")

    assert provenance_problems(tmp_path) == [
        "fixtures/stray.csv: no PROVENANCE.md in its folder",
        "providers/fixtures/acme/forgotten.json: not named in providers/fixtures/acme/PROVENANCE.md",
        f"providers/fixtures/acme/vague.json: its line does not say where the shape comes from ({ORIGINS})",
        "providers/fixtures/acme/PROVENANCE.md names gone.json, which is not in the folder",
    ]
