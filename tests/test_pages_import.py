"""The Import Readings page through AppTest: a file is checked, refused row by row, imported once."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.catalog import catalog as cat
from tests.crafting import app_store, open_page

PAGE = "pages/import_readings.py"


@pytest.fixture
def at(app_env: Path) -> AppTest:
    return open_page(PAGE)


def _stored(source_id: int) -> list[tuple]:
    with app_store().connect(read_only=True) as con:
        return con.execute(
            "SELECT strftime(ts, '%Y-%m-%d %H:%M'), value, interval_s FROM readings WHERE source_id = ? ORDER BY ts",
            [source_id],
        ).fetchall()


def _choose_load(at: AppTest) -> int:
    catalog = cat.load_catalog(app_store())
    load = next(s for s in catalog.sources if s.name == "Building Load")
    at.selectbox(key="import_source").set_value(load.id)
    return load.id


def test_a_valid_file_is_checked_then_imported_once_in_the_sites_zone(at: AppTest) -> None:
    source_id = _choose_load(at)
    at.selectbox(key="import_unit").set_value("kWh")
    csv = b"timestamp,value\n2026-11-01 00:00,0.5\n2026-11-01 00:15,0.25\n"
    at.file_uploader(key="import_file").set_value(("load.csv", csv, "text/csv"))
    at.run()
    at.button(key="import_check").click().run()
    assert not at.exception
    assert any("The file is valid: 2 row(s)" in i.value for i in at.info)
    assert _stored(source_id) == []  # a check writes nothing

    at.button(key="import_write").click().run()
    assert any("Imported 2 new reading(s)" in s.value for s in at.success)
    # Brussels is at +01:00 on 1 November; 0.5 kWh in 15 minutes is 2,000 W on average, 0.25 kWh is 1,000 W.
    assert _stored(source_id) == [("2026-10-31 23:00", 2000.0, 900), ("2026-10-31 23:15", 1000.0, 900)]

    at.button(key="import_write").click().run()
    assert any("Imported 0 new reading(s) of 2 row(s)" in s.value for s in at.success)
    assert len(_stored(source_id)) == 2


def test_a_bad_file_is_refused_with_row_numbers_and_writes_nothing(at: AppTest) -> None:
    source_id = _choose_load(at)
    csv = b"timestamp,value\n2026-11-01 00:00,12\n2026-11-01 00:15,twelve\n2026-03-29 02:30,5\n"
    at.file_uploader(key="import_file").set_value(("bad.csv", csv, "text/csv"))
    at.run()
    at.button(key="import_write").click().run()
    assert not at.exception
    assert any("Nothing was imported" in e.value for e in at.error)
    problems = at.text[0].value
    assert "twelve" in problems and "2026-03-29 02:30" in problems  # a bad number and a time DST skips
    assert _stored(source_id) == []


def test_a_file_that_is_not_utf8_gets_a_message(at: AppTest) -> None:
    _choose_load(at)
    at.file_uploader(key="import_file").set_value(("bad.csv", b"timestamp,value\n\xff\xfe,1\n", "text/csv"))
    at.run()
    at.button(key="import_check").click().run()
    assert not at.exception
    assert any("not UTF-8" in e.value for e in at.error)
