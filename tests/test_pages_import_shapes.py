"""The Import Readings page through AppTest with the files people have: semicolons and decimal commas, tabs,
columns picked in drop-downs after the upload, cumulative counters, empty files; summaries in site time and UTC."""

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


def choose_load(at: AppTest) -> int:
    load = next(s for s in cat.load_catalog(app_store()).sources if s.name == "Building Load")
    at.selectbox(key="import_source").set_value(load.id)
    return load.id


def upload(at: AppTest, name: str, data: bytes) -> None:
    at.file_uploader(key="import_file").set_value((name, data, "text/csv"))
    at.run()
    assert not at.exception


def stored(source_id: int) -> list[tuple[str, float | None]]:
    with app_store().connect(read_only=True) as con:
        return con.execute(
            "SELECT strftime(ts AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M'), value FROM readings WHERE source_id = ?"
            " ORDER BY ts",
            [source_id],
        ).fetchall()


def test_a_semicolon_export_with_decimal_commas_imports_with_its_columns_proposed(at: AppTest) -> None:
    source_id = choose_load(at)
    upload(
        at, "export.csv", b"Status;timestamp;energy_wh\r\nok;2026-11-01 00:00;1234,5\r\nok;2026-11-01 00:15;10,25\r\n"
    )
    time_column, value_column = at.selectbox(key="import_time_column"), at.selectbox(key="import_value_column")
    assert time_column.options == value_column.options == ["Status", "timestamp", "energy_wh"]
    assert (time_column.value, value_column.value) == ("timestamp", "energy_wh")  # the documented guess
    assert at.selectbox(key="import_delimiter").options[0] == "Detect (semicolon)"
    at.selectbox(key="import_unit").set_value("Wh")
    at.button(key="import_write").click().run()
    assert not at.exception
    [success] = at.success
    # Brussels is at +01:00 on 1 November: the summary gives both clocks.
    assert success.value.startswith(
        "Imported 2 new reading(s) of 2 row(s) from 2026-11-01 00:00 to 2026-11-01 00:15 site time (Europe/Brussels);"
        " from 2026-10-31 23:00 to 2026-10-31 23:15 UTC."
    )
    assert stored(source_id) == [("2026-10-31 23:00", 4938.0), ("2026-10-31 23:15", 41.0)]


def test_a_tab_separated_file_imports_with_the_columns_picked_by_name(at: AppTest) -> None:
    source_id = choose_load(at)
    upload(at, "logger.tsv", b"Zeitpunkt\tLeistung\tZaehler\n2026-11-01 00:00\t1,5\t7\n2026-11-01 00:15\t2,5\t8\n")
    assert at.selectbox(key="import_delimiter").options[0] == "Detect (tab)"
    assert at.selectbox(key="import_time_column").value is None  # no name fits the guess: the user picks
    at.button(key="import_check").click().run()
    assert any("the header row lacks the column(s) timestamp, value" in t.value for t in at.text)

    at.selectbox(key="import_time_column").set_value("Zeitpunkt")
    at.selectbox(key="import_value_column").set_value("Leistung")
    at.selectbox(key="import_unit").set_value("kW")
    at.button(key="import_write").click().run()
    assert not at.exception and not at.error
    assert stored(source_id) == [("2026-10-31 23:00", 1500.0), ("2026-10-31 23:15", 2500.0)]

    # Another file: its own header in the drop-downs, the choice from the first file dropped for the new guess.
    upload(at, "next.csv", b"time,power_w\n2026-11-01 00:30,5\n")
    assert at.selectbox(key="import_value_column").options == ["time", "power_w"]
    assert at.selectbox(key="import_value_column").value == "power_w"


def test_a_kwh_counter_with_a_rollover_and_a_reset_is_imported_and_reported_by_row(at: AppTest) -> None:
    source_id = choose_load(at)
    counter = (
        "timestamp;register_kwh\n"
        "2026-11-01 00:00;99999,0\n"
        "2026-11-01 00:15;99999,5\n"
        "2026-11-01 00:30;0,5\n"  # row 4: rolls over at 100,000
        "2026-11-01 00:45;0,001\n"  # row 5: reset
        "2026-11-01 01:00;0,251\n"
    )
    upload(at, "register.csv", counter.encode())
    at.checkbox(key="import_counter").check().run()
    assert at.radio(key="import_label").disabled  # a reading is taken at an instant
    at.button(key="import_write").click().run()
    assert [e.value for e in at.error] == ["Nothing was imported. Fix these problems and upload the file again:"]
    assert at.text[0].value == "a cumulative counter counts energy: its unit is Wh or kWh, not W"

    at.selectbox(key="import_unit").set_value("kWh")
    at.button(key="import_write").click().run()
    assert any(s.value.startswith("Imported 4 new reading(s) of 4 row(s)") for s in at.success)
    assert at.text[0].value.splitlines() == [
        "row 4: the counter rolled over at 100,000 kWh (from 99999,5 to 0,5): 1 kWh counted",
        "row 5: the counter was reset (from 0,5 to 0,001): that interval's energy is unknown and stored as no data",
    ]
    assert [(ts, None if w is None else round(w, 6)) for ts, w in stored(source_id)] == [
        ("2026-10-31 23:00", 2000.0),
        ("2026-10-31 23:15", 4000.0),
        ("2026-10-31 23:30", None),
        ("2026-10-31 23:45", 1000.0),
    ]


def test_an_empty_file_is_called_empty_and_a_header_alone_has_no_rows(at: AppTest) -> None:
    source_id = choose_load(at)
    upload(at, "empty.csv", b"")
    at.button(key="import_check").click().run()
    assert [e.value for e in at.error] == [
        "Nothing was imported: the file is empty: it needs a header row (timestamp,value) and data rows."
    ]
    upload(at, "header.csv", b"timestamp;value\r\n")
    at.button(key="import_check").click().run()
    assert [e.value for e in at.error] == ["Nothing was imported. Fix these problems and upload the file again:"]
    assert at.text[0].value == "the file has no data rows (only a header)"  # plain text, not a code block
    assert not at.code
    assert stored(source_id) == []


def test_row_problems_are_plain_text_shown_as_written(at: AppTest) -> None:
    choose_load(at)
    upload(at, "bad.csv", b"timestamp;value\n2026-11-01 00:00;*1_000*\n2026-11-01 00:15;1.234,5\n")
    at.button(key="import_check").click().run()
    assert not at.code
    assert at.text[0].value.splitlines() == [
        "row 2: value '*1_000*' is not a number",  # no markdown: the asterisks and underscore stay
        "row 3: value '1.234,5' is not a number with the decimal mark ',': write it without thousands separators"
        " (e.g. 1234,5), or choose the decimal mark '.'",
    ]
