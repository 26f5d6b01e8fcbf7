"""Fault injection for the CSV import of readings: hostile files get one row-numbered message and write nothing.

Each hostile file goes through the same path as a user's (bytes -> decode_csv -> import_readings) against a real
temporary DuckDB file that already holds readings, and the row counts of `readings` and of every rollup table are
compared before and after. A few go through the real CLI as a subprocess, and the snap option through the page.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.catalog import catalog as cat
from core.collect.readings_import import (
    DEFAULT_LIMITS,
    MAX_ABS_W,
    ImportOptions,
    ImportRefused,
    ReadingsFileLimits,
    decode_csv,
    import_readings,
    parse_readings,
)
from core.models import Category
from core.store.rollups import ROLLUPS
from core.store.store import Store
from tests.crafting import SourceSpec, app_store, craft_site, open_page
from tests.processes import operator_env, run_module

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 1, tzinfo=UTC)  # the Brussels site is at +01:00 on that day
TABLES = ("readings", *(table for table, _, _ in ROLLUPS))
OUT_OF_RANGE = "is out of range: a reading is at most 1 TW (1e12 W) either way"
TOO_EARLY = "is before 1990-01-01, the earliest date imported (DATACONN_READINGS_IMPORT_EARLIEST)"
TOO_LATE = "is more than 1 day(s) in the future (after 2026-11-02 00:00 UTC; DATACONN_READINGS_IMPORT_FUTURE_DAYS)"
FIELD_TOO_LONG = (
    'a field is longer than 131,072 characters: this is not a readings file, or a quote (") is never closed;'
    " the rows after it were not checked"
)
HEADER = "timestamp,value\n"


def a_source(store: Store) -> int:
    _, ids = craft_site(store, [SourceSpec(Category.CONS, "grid", name="Meter")])
    return ids["Meter"]


def counts(store: Store) -> dict[str, int]:
    with store.connect(read_only=True) as con:
        return {table: con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] for table in TABLES}


@pytest.fixture
def source(store: Store) -> int:
    """A source that already holds a day of readings, so that "nothing was written" is not "nothing exists"."""
    source_id = a_source(store)
    day = "".join(f"2026-06-01 {h:02d}:{m:02d},{100 + h}\n" for h in range(24) for m in (0, 15, 30, 45))
    import_readings(store, source_id, HEADER + day, ImportOptions(), NOW)
    assert counts(store)["readings"] == 96
    return source_id


HOSTILE = [
    pytest.param(
        HEADER + "2026-06-02 00:00,1e308\n",
        ImportOptions(unit="kW"),
        [f"row 2: value '1e308' kW {OUT_OF_RANGE}"],
        id="1e308-kW-overflows-after-conversion",
    ),
    pytest.param(
        HEADER + "2026-06-02 00:00,1e308\n", ImportOptions(), [f"row 2: value '1e308' W {OUT_OF_RANGE}"], id="1e308-W"
    ),
    pytest.param(
        HEADER + "2026-06-02 00:00,-1e308\n", ImportOptions(), [f"row 2: value '-1e308' W {OUT_OF_RANGE}"], id="-1e308"
    ),
    pytest.param(
        HEADER + "2026-06-02 00:00,1.0000001e12\n",
        ImportOptions(),
        [f"row 2: value '1.0000001e12' W {OUT_OF_RANGE}"],
        id="just-over-1-TW",
    ),
    pytest.param(
        HEADER + "2026-06-02 00:00,1e9\n",  # 1 TWh in 15 minutes is 4 TW
        ImportOptions(unit="kWh"),
        [f"row 2: value '1e9' kWh {OUT_OF_RANGE}"],
        id="energy-over-1-TW",
    ),
    pytest.param(
        HEADER + "2026-06-02 00:00,nan\n2026-06-02 00:15,inf\n2026-06-02 00:30,-Infinity\n",
        ImportOptions(),
        [
            "row 2: value 'nan' is not a finite number",
            "row 3: value 'inf' is not a finite number",
            "row 4: value '-Infinity' is not a finite number",
        ],
        id="nan-and-inf-text",
    ),
    pytest.param(
        HEADER + "2026-06-02 00:00," + "9" * 5000 + "\n",
        ImportOptions(),
        [f"row 2: value '{'9' * 40}'... (5,000 characters) W {OUT_OF_RANGE}"],
        id="5000-digit-number",
    ),
    pytest.param(
        HEADER + "2026-06-02 00:00,1\n2026-06-02 00:15," + "7" * 140_000 + "\n2026-06-02 00:30,x\n",
        ImportOptions(),
        [f"row 3: {FIELD_TOO_LONG}"],
        id="field-over-128-KB",
    ),
    pytest.param(
        HEADER + "0001-01-01 00:00,1\n0001-01-01T00:00:00-12:00,1\n",
        ImportOptions(),
        [f"row 2: 0001-01-01 00:00 {TOO_EARLY}", f"row 3: 0001-01-01T00:00:00-12:00 {TOO_EARLY}"],
        id="year-1",
    ),
    pytest.param(
        HEADER + "9999-12-31 23:45,1\n9999-12-31T23:45:00+14:00,1\n",
        ImportOptions(label="end"),
        [f"row 2: 9999-12-31 23:45 {TOO_LATE}", f"row 3: 9999-12-31T23:45:00+14:00 {TOO_LATE}"],
        id="year-9999",
    ),
    pytest.param(
        # Midnight of 1 January 1990 in Brussels is 23:00 UTC the day before: the earliest start accepted.
        HEADER + "1990-01-01 00:00,1\n1989-12-31 23:45,1\n1989-06-01T12:00:00Z,1\n",
        ImportOptions(),
        [f"row 3: 1989-12-31 23:45 {TOO_EARLY}", f"row 4: 1989-06-01T12:00:00Z {TOO_EARLY}"],
        id="1989",
    ),
    pytest.param(
        # 01:00 in Brussels on 2 November is exactly now + 1 day; two days after tomorrow is not.
        HEADER + "2026-11-02 01:00,1\n2026-11-02 01:15,1\n2026-11-04 00:00,1\n",
        ImportOptions(),
        [f"row 3: 2026-11-02 01:15 {TOO_LATE}", f"row 4: 2026-11-04 00:00 {TOO_LATE}"],
        id="tomorrow-plus-2-days",
    ),
    pytest.param(
        HEADER + "2026-06-02 10:00,1\n2026-06-02 10:07,2\n2026-06-02T10:15:30+02:00,3\n",
        ImportOptions(),
        [
            "row 3: 2026-06-02 10:07 is off the 15-minute grid (from midnight): fix it, or snap times to the grid",
            "row 4: 2026-06-02T10:15:30+02:00 is off the 15-minute grid (from midnight): fix it, or snap times to"
            " the grid",
        ],
        id="off-grid-without-snap",
    ),
    pytest.param(
        HEADER + "2026-06-02 10:00,1\n2026-06-02 10:05,2\n2026-06-02 10:22:30,3\n2026-06-02 10:29,4\n",
        ImportOptions(snap=True),
        [
            "row 3: 2026-06-02 10:05 snaps into the same interval as row 2 (2026-06-02 08:00 UTC)",
            "row 5: 2026-06-02 10:29 snaps into the same interval as row 4 (2026-06-02 08:30 UTC)",
        ],
        id="two-rows-snap-together",
    ),
    pytest.param(
        HEADER + "2026-03-29 01:55,1\n",  # snaps to 02:00, which the spring change skips in Brussels
        ImportOptions(snap=True),
        [
            "row 2: 2026-03-29 01:55 (snapped to 02:00) is skipped by a daylight-saving change in Europe/Brussels:"
            " give it an offset"
        ],
        id="snap-into-dst-gap",
    ),
    pytest.param(
        "2026-06-02 00:00,5\n",
        ImportOptions(),
        [
            "row 1: the header row lacks the column(s) timestamp, value (found: '2026-06-02 00:00', '5'): the first"
            " row must name the columns, e.g. timestamp,value"
        ],
        id="no-header",
    ),
    pytest.param(HEADER, ImportOptions(), ["the file has no data rows (only a header)"], id="header-only"),
    pytest.param(
        HEADER + "\n2026-06-02 00:00,x\n",
        ImportOptions(),
        ["row 3: value 'x' is not a number"],  # row numbers are the file's lines, blank ones included
        id="row-numbers-are-lines",
    ),
    pytest.param(
        HEADER,
        ImportOptions(interval_minutes=7),
        ["interval_minutes must divide a day (1440 minutes), e.g. 5, 10, 15, 30 or 60"],
        id="interval-not-dividing-a-day",
    ),
]


@pytest.mark.parametrize(("text", "options", "problems"), HOSTILE)
def test_a_hostile_file_gets_row_numbered_messages_and_writes_nothing(
    store: Store, source: int, text: str, options: ImportOptions, problems: list[str]
) -> None:
    before = counts(store)
    with pytest.raises(ImportRefused) as refused:
        import_readings(store, source, decode_csv(text.encode()), options, NOW)
    assert refused.value.problems == problems
    assert counts(store) == before


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param(b"", "the file is empty: it needs a header row (timestamp,value) and data rows", id="empty"),
        pytest.param(
            b" \r\n\n", "the file is empty: it needs a header row (timestamp,value) and data rows", id="blank"
        ),
        pytest.param(
            b"PK\x03\x04\x14\x00\x06\x00timestamp,value",
            "the file holds binary data (NUL bytes), not CSV text: export the readings as CSV",
            id="zip-spreadsheet",
        ),
        pytest.param(
            b"timestamp,value\n2026-06-02 00:00,1\n\x89PNG\r\n\x1a\n\xff\xd8",
            "the file is not UTF-8 text (line 3): save it as CSV UTF-8, or if it is a spreadsheet or another binary"
            " file, export the readings as CSV",
            id="binary-garbage",
        ),
        pytest.param(
            "timestamp,value\n".encode("utf-16"), "the file is UTF-16 text: save it as CSV UTF-8", id="utf-16"
        ),
    ],
)
def test_a_file_that_is_not_csv_text_is_refused_before_parsing(data: bytes, problem: str) -> None:
    with pytest.raises(ImportRefused) as refused:
        decode_csv(data)
    assert refused.value.problems == [problem]


def test_a_file_over_the_size_limit_is_refused() -> None:
    limits = ReadingsFileLimits(DEFAULT_LIMITS.earliest, DEFAULT_LIMITS.future_days, max_bytes=1_000_000)
    data = (HEADER + "2026-06-02 00:00,1\n" * 60_000).encode()
    with pytest.raises(ImportRefused) as refused:
        decode_csv(data, limits)
    assert refused.value.problems == [
        "the file is larger than 1 MB, the import limit (DATACONN_READINGS_IMPORT_MAX_MB): split it into smaller files"
    ]
    assert decode_csv(data[:1_000_000], limits).startswith(HEADER)  # at the limit it is read


def test_the_list_of_problems_stays_bounded() -> None:
    text = HEADER + "".join(f"2026-06-02 00:00,bad{i}\n" for i in range(5000))
    with pytest.raises(ImportRefused) as refused:
        parse_readings(text, ImportOptions(), "Europe/Brussels", now=NOW)
    assert len(refused.value.problems) == 20 and refused.value.more == 4980
    assert refused.value.lines()[-1] == "... and 4980 more"
    assert str(refused.value).count("\n") == 21  # "nothing was imported:", 20 rows, "... and 4980 more"


def test_snapping_moves_times_to_the_nearest_grid_point(store: Store, source: int) -> None:
    text = HEADER + "2026-06-02 10:07,1\n2026-06-02 10:07:30,2\n2026-06-02T10:52:00+02:00,3\n2026-06-02 23:59,4\n"
    report = import_readings(store, source, text, ImportOptions(snap=True), NOW)
    assert report.written == 4
    with store.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT strftime(ts AT TIME ZONE 'UTC', '%m-%d %H:%M'), value FROM readings"
            " WHERE ts >= '2026-06-02 00:00+00' ORDER BY ts"
        ).fetchall()
    # 10:07 -> 10:00; exactly half-way (10:07:30) -> the later 10:15; 10:52+02:00 -> 10:45; 23:59 -> next midnight.
    assert rows == [("06-02 08:00", 1.0), ("06-02 08:15", 2.0), ("06-02 08:45", 3.0), ("06-02 22:00", 4.0)]


def test_a_half_hour_zone_has_its_grid_from_its_own_midnight(store: Store) -> None:
    _, ids = craft_site(store, [SourceSpec(Category.CONS, "grid", name="Mumbai")], timezone="Asia/Kolkata")
    text = HEADER + "2026-06-02 00:00,1\n2026-06-02T01:00:00+05:30,2\n2026-06-01T20:30:00Z,3\n"
    with pytest.raises(ImportRefused) as refused:
        import_readings(store, ids["Mumbai"], text, ImportOptions(interval_minutes=60), NOW)
    # The grid is the time as written: 20:30Z is the top of a local hour but not of a UTC one.
    assert refused.value.problems == [
        "row 4: 2026-06-01T20:30:00Z is off the 60-minute grid (from midnight): fix it, or snap times to the grid"
    ]
    report = import_readings(
        store,
        ids["Mumbai"],
        text.replace("20:30:00Z", "20:30:00+00:00"),
        ImportOptions(interval_minutes=60, snap=True),
        NOW,
    )
    assert report.written == 3


def test_values_at_the_bound_are_stored_and_their_rollups_stay_finite(store: Store) -> None:
    source_id = a_source(store)
    # A local day at +1 TW, the next at -1 TW (the bound is inclusive, both ways).
    days = [f"2026-06-0{d} {h:02d}:00,{sign * MAX_ABS_W:g}\n" for d, sign in ((2, 1), (3, -1)) for h in range(24)]
    import_readings(store, source_id, HEADER + "".join(days), ImportOptions(interval_minutes=60), NOW)
    with store.connect(read_only=True) as con:
        for table in TABLES[1:]:
            finite = f"SELECT count(*) FROM {table} WHERE isfinite(avg_value) AND isfinite(energy_wh)"
            assert con.execute(finite).fetchone() == (con.execute(f"SELECT count(*) FROM {table}").fetchone()), table
        daily = con.execute("SELECT energy_wh FROM readings_daily ORDER BY bucket").fetchall()
    assert daily == [(24e12,), (-24e12,)]


# --- the real CLI ----------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = operator_env(tmp_path / "db" / "dataconn.duckdb", tmp_path / "secret.key")
    assert cli(env, "init").returncode == 0
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_module("jobs.cli", *args, env=env)


def assert_refused(result: subprocess.CompletedProcess[str], *lines: str) -> None:
    """Exit 1, nothing on stdout, exactly these lines on stderr: no traceback, no unexplained failure."""
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert result.stderr.splitlines() == list(lines)


def test_the_cli_refuses_hostile_files_in_one_line_and_writes_nothing(cli_env: dict[str, str], tmp_path: Path) -> None:
    store = Store(Path(cli_env["DATACONN_DB_PATH"]))
    source = str(a_source(store))
    files = {
        "huge.csv": HEADER + "2026-06-02 00:00,1e308\n",
        "year1.csv": HEADER + "0001-01-01 00:00,1\n",
        "year9999.csv": HEADER + "9999-12-31 23:45,1\n",
        "field.csv": HEADER + "2026-06-02 00:00," + "7" * 140_000 + "\n",
        "digits.csv": HEADER + "2026-06-02 00:00," + "1" * 5000 + "\n",
        "future.csv": HEADER + f"{datetime.now(UTC) + timedelta(days=3):%Y-%m-%d} 00:00,1\n",
        "offgrid.csv": HEADER + "2026-06-02 10:07,1\n",
        "empty.csv": "",
        "header.csv": HEADER,
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "garbage.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xd8\xff\xe0")
    (tmp_path / "folder.csv").mkdir()

    def refused(name: str, *options: str) -> subprocess.CompletedProcess[str]:
        return cli(cli_env, "import-readings", source, str(tmp_path / name), "--timezone", "UTC", *options)

    nothing = "nothing was imported:"
    assert_refused(refused("huge.csv", "--unit", "kW"), nothing, f"row 2: value '1e308' kW {OUT_OF_RANGE}")
    assert_refused(refused("year1.csv"), nothing, f"row 2: 0001-01-01 00:00 {TOO_EARLY}")
    latest = refused("year9999.csv")
    assert latest.stderr.startswith(f"{nothing}\nrow 2: 9999-12-31 23:45 is more than 1 day(s) in the future")
    assert len(latest.stderr.splitlines()) == 2 and latest.returncode == 1
    assert_refused(refused("field.csv"), nothing, f"row 2: {FIELD_TOO_LONG}")
    digits = refused("digits.csv")
    assert digits.returncode == 1 and len(digits.stderr) < 200 and "(5,000 characters)" in digits.stderr
    assert "in the future" in refused("future.csv").stderr
    assert_refused(
        refused("offgrid.csv"),
        nothing,
        "row 2: 2026-06-02 10:07 is off the 15-minute grid (from midnight): fix it, or snap times to the grid",
    )
    assert_refused(
        refused("empty.csv"), nothing, "the file is empty: it needs a header row (timestamp,value) and data rows"
    )
    assert_refused(refused("header.csv"), nothing, "the file has no data rows (only a header)")
    assert_refused(
        refused("garbage.csv"),
        nothing,
        "the file is not UTF-8 text (line 1): save it as CSV UTF-8, or if it is a spreadsheet or another binary"
        " file, export the readings as CSV",
    )
    assert_refused(refused("folder.csv"), f"{tmp_path / 'folder.csv'}: is a directory; give the path of a CSV file")
    assert_refused(refused("missing.csv"), f"{tmp_path / 'missing.csv'}: no such file")
    assert counts(store) == dict.fromkeys(TABLES, 0)

    snapped = refused("offgrid.csv", "--snap")
    assert snapped.returncode == 0, snapped.stderr
    assert "1 row(s) from 2026-06-02 10:00 to 2026-06-02 10:00 UTC; wrote 1 reading(s)" in snapped.stdout


def test_the_cli_refuses_a_file_over_its_size_setting(cli_env: dict[str, str], tmp_path: Path) -> None:
    store = Store(Path(cli_env["DATACONN_DB_PATH"]))
    source = str(a_source(store))
    big = tmp_path / "big.csv"
    big.write_text(HEADER + "2026-06-02 00:00,1\n" * 60_000, encoding="utf-8")  # 1.1 MB
    result = cli(cli_env | {"DATACONN_READINGS_IMPORT_MAX_MB": "1"}, "import-readings", source, str(big))
    assert_refused(
        result,
        "nothing was imported:",
        "the file is larger than 1 MB, the import limit (DATACONN_READINGS_IMPORT_MAX_MB): split it into smaller files",
    )
    early = cli(cli_env | {"DATACONN_READINGS_IMPORT_EARLIEST": "1800-01-01"}, "import-readings", source, str(big))
    assert (
        early.returncode == 1
        and "DATACONN_READINGS_IMPORT_EARLIEST" in early.stderr
        and "Traceback" not in early.stderr
    )


# --- the page --------------------------------------------------------------------------------------------------


def test_the_page_refuses_an_off_grid_time_unless_snap_is_ticked(app_env: Path) -> None:
    at: AppTest = open_page("pages/import_readings.py")
    store = app_store()
    load = next(s for s in cat.load_catalog(store).sources if s.name == "Building Load")
    at.selectbox(key="import_source").set_value(load.id)
    csv = b"timestamp,value\n2026-11-01 00:07,100\n2026-11-01 00:15,200\n"
    at.file_uploader(key="import_file").set_value(("jitter.csv", csv, "text/csv"))
    at.run()
    at.button(key="import_write").click().run()
    assert not at.exception
    assert any("Nothing was imported" in e.value for e in at.error)
    assert at.text[0].value == (
        "row 2: 2026-11-01 00:07 is off the 15-minute grid (from midnight): fix it, or snap times to the grid"
    )
    assert counts(store)["readings"] == 0

    at.checkbox(key="import_snap").check().run()
    at.button(key="import_write").click().run()
    assert any("Imported 2 new reading(s)" in s.value for s in at.success)
    with store.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT strftime(ts AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M'), value FROM readings WHERE source_id = ?"
            " ORDER BY ts",
            [load.id],
        ).fetchall()
    assert rows == [("2026-10-31 23:00", 100.0), ("2026-10-31 23:15", 200.0)]  # 00:07 in Brussels snapped to 00:00


def test_the_page_says_why_a_binary_file_is_refused(app_env: Path) -> None:
    at: AppTest = open_page("pages/import_readings.py")
    at.file_uploader(key="import_file").set_value(("sheet.csv", b"PK\x03\x04\x00\x00", "text/csv"))
    at.run()
    at.button(key="import_check").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Nothing was imported: the file holds binary data (NUL bytes), not CSV text: export the readings as CSV."
    ]
