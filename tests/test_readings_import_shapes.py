"""CSV import of the files people have: delimiters, decimal commas, columns chosen by name, cumulative counters.

Each file goes the user's way (bytes -> decode_csv -> import_readings) into a real temporary DuckDB file, and the
stored rows are read back; the CLI runs as a real subprocess against its own database.
"""

from __future__ import annotations

import codecs
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.collect.readings_csv import detect_decimal, detect_delimiter, guess_columns
from core.collect.readings_import import ImportOptions, ImportRefused, decode_csv, import_readings
from core.models import Category
from core.store.store import Store
from tests.crafting import SourceSpec, craft_site
from tests.processes import operator_env, run_module

NOW = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def source(store: Store) -> int:
    _, ids = craft_site(store, [SourceSpec(Category.CONS, "grid", name="Meter")])  # Europe/Brussels
    return ids["Meter"]


def stored(store: Store) -> list[tuple[str, float | None]]:
    """(UTC interval start, W) of every stored reading, in time order."""
    with store.connect(read_only=True) as con:
        return con.execute(
            "SELECT strftime(ts AT TIME ZONE 'UTC', '%m-%d %H:%M'), value FROM readings ORDER BY ts"
        ).fetchall()


def imported(store: Store, source: int, data: bytes, options: ImportOptions) -> list[tuple[str, float | None]]:
    import_readings(store, source, decode_csv(data), options, NOW)
    return stored(store)


def refused(store: Store, source: int, data: bytes, options: ImportOptions) -> list[str]:
    with pytest.raises(ImportRefused) as refusal:
        import_readings(store, source, decode_csv(data), options, NOW)
    assert stored(store) == []  # all or nothing
    return refusal.value.lines()


# --- layout: delimiter, decimal mark, columns ---------------------------------------------------------------


def test_a_european_excel_export_with_semicolons_and_decimal_commas_imports(store: Store, source: int) -> None:
    # Excel (German locale) "CSV UTF-8": a BOM, semicolons, decimal commas, CRLF line ends, a trailing delimiter.
    data = codecs.BOM_UTF8 + b"timestamp;value;\r\n2026-06-01 00:00;1234,5;\r\n2026-06-01 00:15;-0,25;\r\n"
    # 15 minutes: kWh x 4 = average kW. Brussels is at +02:00 on 1 June.
    assert imported(store, source, data, ImportOptions(unit="kWh")) == [
        ("05-31 22:00", 4_938_000.0),
        ("05-31 22:15", -1000.0),
    ]


def test_a_tab_separated_file_with_an_energy_wh_column_imports(store: Store, source: int) -> None:
    data = b"time\tenergy_wh\tstatus\n2026-06-01 00:00\t250\tok\n2026-06-01 00:15\t\tmissing\n"
    assert imported(store, source, data, ImportOptions(unit="Wh")) == [("05-31 22:00", 1000.0), ("05-31 22:15", None)]


def test_columns_chosen_by_name_win_over_the_guess(store: Store, source: int) -> None:
    data = "Datum;Leistung (kW);Zählerstand\n2026-06-01 00:00;1,5;10\n2026-06-01 00:15;2,5;11\n".encode()
    options = ImportOptions(unit="kW", time_column="datum", value_column="Leistung (kW)")  # case aside
    assert imported(store, source, data, options) == [("05-31 22:00", 1500.0), ("05-31 22:15", 2500.0)]


def test_a_column_name_the_header_lacks_is_refused(store: Store, source: int) -> None:
    data = b"timestamp;value\n2026-06-01 00:00;1\n"
    assert refused(store, source, data, ImportOptions(value_column="power")) == [
        "row 1: the header row has no column 'power' (found: 'timestamp', 'value')"
    ]


def test_given_delimiter_and_decimal_mark_override_detection(store: Store, source: int) -> None:
    data = b"timestamp;value\n2026-06-01 00:00;7,5\n"
    assert refused(store, source, data, ImportOptions(decimal=".")) == [
        "row 2: value '7,5' is not a number with the decimal mark '.': write it without thousands separators"
        " (e.g. 1234.5), or choose the decimal mark ','"
    ]
    assert refused(store, source, data, ImportOptions(delimiter=",")) == [
        "row 1: the header row lacks the column(s) value (found: 'timestamp;value'): the first row must name the"
        " columns, e.g. timestamp,value"
    ]
    assert imported(store, source, data, ImportOptions(delimiter=";", decimal=",")) == [("05-31 22:00", 7.5)]


@pytest.mark.parametrize(
    ("data", "options", "problems"),
    [
        pytest.param(
            b"timestamp;value\n2026-06-01 00:00;1,5\n2026-06-01 00:15;1.234,5\n2026-06-01 00:30;1.234\n",
            ImportOptions(),
            [
                "row 3: value '1.234,5' is not a number with the decimal mark ',': write it without thousands"
                " separators (e.g. 1234,5), or choose the decimal mark '.'",
                "row 4: value '1.234' is not a number with the decimal mark ',': write it without thousands"
                " separators (e.g. 1234,5), or choose the decimal mark '.'",
            ],
            id="thousands-point-with-decimal-comma",
        ),
        pytest.param(
            b"timestamp;value\n2026-06-01 00:00;1.5\n2026-06-01 00:15;1,234\n2026-06-01 00:30;1 234.5\n",
            ImportOptions(),
            [
                "row 3: value '1,234' is not a number with the decimal mark '.': write it without thousands"
                " separators (e.g. 1234.5), or choose the decimal mark ','",
                "row 4: value '1 234.5' is not a number with the decimal mark '.': write it without thousands"
                " separators (e.g. 1234.5)",
            ],
            id="thousands-comma-and-space-with-decimal-point",
        ),
        pytest.param(
            b"timestamp,value\n2026-06-01 00:00,1234,5\n",
            ImportOptions(),
            [
                "row 2: 3 fields where the header names 2: a comma inside a value? Quote that value, or use another"
                " delimiter"
            ],
            id="unquoted-decimal-comma-in-a-comma-file",
        ),
    ],
)
def test_ambiguous_numbers_are_refused_by_row_never_guessed(
    store: Store, source: int, data: bytes, options: ImportOptions, problems: list[str]
) -> None:
    assert refused(store, source, data, options) == problems


def test_a_file_whose_values_read_both_ways_needs_the_decimal_mark(store: Store, source: int) -> None:
    data = b"timestamp;value\n2026-06-01 00:00;1.250\n2026-06-01 00:15;2.500\n"  # 1250 and 2500, or 1.25 and 2.5?
    assert refused(store, source, data, ImportOptions()) == [
        "row 2: value '1.250' reads as two different numbers with a decimal point or a decimal comma, and no value in"
        " the file tells which it uses: choose the decimal mark"
    ]
    assert imported(store, source, data, ImportOptions(decimal=".")) == [("05-31 22:00", 1.25), ("05-31 22:15", 2.5)]


def test_detection_rules() -> None:
    assert detect_delimiter("timestamp;value") == ";"
    assert detect_delimiter("time\tenergy_wh") == "\t"
    assert detect_delimiter('"Energy, kWh";"Time";"x"') == ";"  # commas inside quotes do not count
    assert detect_delimiter("timestamp") == ","
    assert detect_decimal(enumerate(["", "12", "1.234,5", "7.5"])) == (",", None, "")  # the first telling value
    assert detect_decimal(enumerate(["1.250", "0.125"])) == (".", None, "")  # 1.250 does not tell, 0.125 does
    assert detect_decimal(enumerate(["12", "3"])) == (".", None, "")  # whole numbers read the same either way
    assert detect_decimal(enumerate(["7", "12,500", "1.250"])) == (None, 1, "12,500")  # nothing tells
    assert guess_columns(["Date/Time", "Status", "energy_wh"]) == (0, 2)
    assert guess_columns(["ts", "Power (kW)"]) == (0, 1)
    assert guess_columns(["time", "watts"]) == (0, None)  # "watts" is none of the words: the user chooses


# --- cumulative counters ----------------------------------------------------------------------------------------

COUNTER = (
    "time;meter_kwh\n"
    "2026-06-01 00:00;99998,5\n"  # row 2
    "2026-06-01 00:15;99999,5\n"  # row 3: +1 kWh
    "2026-06-01 00:30;0,5\n"  # row 4: rolls over at 100,000: +1 kWh
    "2026-06-01 00:45;2,5\n"  # row 5: +2 kWh
    "2026-06-01 01:00;0,01\n"  # row 6: reset (meter replaced): unknown
    "2026-06-01 01:15;0,51\n"  # row 7: +0.5 kWh
    "2026-06-01 02:00;1,51\n"  # row 8: two readings missing: the gap's 1 kWh is not spread
)


def test_a_kwh_counter_becomes_interval_energy_with_rollover_and_reset_reported_by_row(
    store: Store, source: int
) -> None:
    report = import_readings(store, source, decode_csv(COUNTER.encode()), ImportOptions(unit="kWh", counter=True), NOW)
    assert [(ts, None if w is None else round(w, 6)) for ts, w in stored(store)] == [
        ("05-31 22:00", 4000.0),  # 1 kWh in 15 minutes = 4 kW
        ("05-31 22:15", 4000.0),  # across the rollover
        ("05-31 22:30", 8000.0),
        ("05-31 22:45", None),  # the reset's interval: no data, never negative
        ("05-31 23:00", 2000.0),
    ]
    assert report.notes == (
        "row 4: the counter rolled over at 100,000 kWh (from 99999,5 to 0,5): 1 kWh counted",
        "row 6: the counter was reset (from 2,5 to 0,01): that interval's energy is unknown and stored as no data",
        "row 8: 2 interval(s) without a reading since row 7: the 1 kWh counted across them are not stored",
    )


def test_a_wh_counter_that_falls_without_reset_or_rollover_is_refused(store: Store, source: int) -> None:
    data = b"timestamp,value\n2026-06-01 00:00,5000\n2026-06-01 00:15,5100\n2026-06-01 00:30,4000\n"
    assert refused(store, source, data, ImportOptions(unit="Wh", counter=True)) == [
        "row 4: the counter falls from 5100 (row 3) to 4000: neither a reset to near zero nor a rollover at a power"
        " of ten; fix the reading"
    ]


def test_a_counter_that_falls_across_a_gap_stores_nothing_for_the_gap(store: Store, source: int) -> None:
    data = b"timestamp,value\n2026-06-01 00:00,5000\n2026-06-01 00:15,5100\n2026-06-01 01:00,20\n2026-06-01 01:15,70\n"
    report = import_readings(store, source, decode_csv(data), ImportOptions(unit="Wh", counter=True), NOW)
    assert stored(store) == [("05-31 22:00", 400.0), ("05-31 23:00", 200.0)]
    assert report.notes == (
        "row 4: 2 interval(s) without a reading since row 3: the counter falls across them (from 5100 to 20):"
        " nothing is stored",
    )


def test_counter_options_and_readings_are_checked(store: Store, source: int) -> None:
    data = b"timestamp,value\n2026-06-01 00:00,5\n2026-06-01 00:15,-1\n"
    assert refused(store, source, data, ImportOptions(unit="kW", counter=True, label="end")) == [
        "a cumulative counter counts energy: its unit is Wh or kWh, not kW",
        "a counter reading is taken at the instant its timestamp names: the label does not apply",
    ]
    assert refused(store, source, data, ImportOptions(unit="Wh", counter=True)) == [
        "row 3: value '-1' is not a counter reading: a register is never negative or infinite"
    ]
    one = b"timestamp,value\n2026-06-01 00:00,5\n"
    assert refused(store, source, one, ImportOptions(unit="Wh", counter=True)) == [
        "a counter file needs at least two readings: an interval's energy is their difference"
    ]


# --- empty files and summaries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param(b"", "the file is empty: it needs a header row (timestamp,value) and data rows", id="empty"),
        pytest.param(codecs.BOM_UTF8 + b"\r\n", "the file is empty: it needs a header row", id="bom-only"),
        pytest.param(b";;\r\n;;\r\n", "the file is empty: it needs a header row", id="only-delimiters"),
        pytest.param(b"timestamp;energy_wh\r\n", "the file has no data rows (only a header)", id="header-only"),
        pytest.param(b"timestamp;energy_wh\r\n\r\n\r\n", "the file has no data rows (only a header)", id="blanks"),
    ],
)
def test_an_empty_file_is_called_empty_and_a_header_alone_has_no_rows(
    store: Store, source: int, data: bytes, problem: str
) -> None:
    with pytest.raises(ImportRefused) as refusal:
        import_readings(store, source, decode_csv(data), ImportOptions(unit="Wh"), NOW)
    assert len(refusal.value.problems) == 1 and refusal.value.problems[0].startswith(problem)


def test_the_summary_gives_the_sites_time_and_utc(store: Store, source: int) -> None:
    text = "timestamp,value\n2026-10-25 01:00+02:00,1\n2026-10-25 02:00+01:00,2\n"  # across the autumn change
    report = import_readings(store, source, text, ImportOptions(interval_minutes=60), NOW)
    assert report.utc_span() == "from 2026-10-24 23:00 to 2026-10-25 01:00 UTC"
    assert report.site_span() == "from 2026-10-25 01:00 to 2026-10-25 02:00 site time (Europe/Brussels)"


# --- the real CLI -----------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = operator_env(tmp_path / "db" / "dataconn.duckdb", tmp_path / "secret.key")
    assert run_module("jobs.cli", "init", env=env).returncode == 0
    return env


def test_the_cli_reads_a_semicolon_file_a_counter_and_says_what_it_did(cli_env: dict[str, str], tmp_path: Path) -> None:
    store = Store(Path(cli_env["DATACONN_DB_PATH"]))
    _, ids = craft_site(store, [SourceSpec(Category.CONS, "grid", name="Meter")])
    european, counter, empty = tmp_path / "export.csv", tmp_path / "register.csv", tmp_path / "empty.csv"
    european.write_text("Zeit;Status;Arbeit\n2026-06-01 00:00;ok;0,25\n2026-06-01 00:15;ok;0,5\n", encoding="utf-8")
    counter.write_text(COUNTER.replace("2026-06-01", "2026-06-02"), encoding="utf-8")
    empty.write_text("", encoding="utf-8")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_module("jobs.cli", "import-readings", str(ids["Meter"]), *args, env=cli_env)

    done = cli(str(european), "--unit", "kWh", "--time-column", "Zeit", "--value-column", "Arbeit")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        "export.csv: 2 row(s) from 2026-05-31 22:00 to 2026-05-31 22:15 UTC; wrote 2 reading(s) (rows already stored"
        " as final are kept)",
        "  from 2026-06-01 00:00 to 2026-06-01 00:15 site time (Europe/Brussels)",
    ]
    counted = cli(str(counter), "--unit", "kWh", "--counter", "--delimiter", "semicolon", "--decimal", "comma")
    assert counted.returncode == 0, counted.stderr
    lines = counted.stdout.splitlines()
    assert lines[0].startswith("register.csv: 5 row(s) from 2026-06-01 22:00 to 2026-06-01 23:00 UTC; wrote 5")
    assert [line.split(":")[0] for line in lines[2:]] == ["  row 4", "  row 6", "  row 8"]
    assert "rolled over" in lines[2] and "reset" in lines[3]

    refused = cli(str(empty))
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.splitlines() == [
        "nothing was imported:",
        "the file is empty: it needs a header row (timestamp,value) and data rows",
    ]
    wrong = cli(str(european), "--value-column", "Energie")
    assert wrong.returncode == 1 and "row 1: the header row has no column 'Energie'" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT count(*), count(value) FROM readings").fetchone() == (7, 6)
