"""CSV import of historical readings: row-level refusals, units, time zones and DST, idempotent writes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.catalog import catalog as cat
from core.collect.readings_import import ImportOptions, ImportRefused, import_readings, parse_readings
from core.config import load_settings
from core.models import Category, MeterIn, SiteIn
from core.runtime import open_runtime
from core.store.store import Store

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def a_source(store: Store) -> int:
    site = cat.create_site(store, SiteIn(name="Hall", latitude=50.85, longitude=4.35, timezone="Europe/Brussels"))
    meter = cat.create_meter(store, site.id, MeterIn(name="Main", category=Category.CONS))
    with store.transaction() as con:
        con.execute(
            "INSERT INTO energy_sources (meter_id, name, source_type, capacity_kw, carbon_intensity_g_per_kwh,"
            " cost_per_mwh, metadata) VALUES (?, 'Meter', 'grid', 0, 200, 90, '{}')",
            [meter.id],
        )
    return cat.load_catalog(store).sources[0].id


def stored(store: Store) -> list[tuple]:
    with store.connect(read_only=True) as con:
        return con.sql("SELECT ts, interval_s, value, is_final FROM readings ORDER BY ts").fetchall()


def test_local_times_units_and_labels_become_utc_interval_starts_in_watts() -> None:
    text = "timestamp,value,comment\n2026-06-01 00:15,0.25,ignored\n2026-06-01T00:30:00+02:00,,gap\n"
    frame = parse_readings(text, ImportOptions(unit="kWh", label="end"), "Europe/Brussels")
    assert frame.rows() == [
        (datetime(2026, 5, 31, 22, 0, tzinfo=UTC), 900, 1000.0),  # 0.25 kWh in 15 min = 1 kW; end-labelled
        (datetime(2026, 5, 31, 22, 15, tzinfo=UTC), 900, None),  # empty value: no data, not zero
    ]


def test_every_bad_row_is_named_and_nothing_is_written(store: Store) -> None:
    source = a_source(store)
    text = (
        "timestamp,value\n"
        "2026-03-29 02:30,5\n"  # skipped by the spring DST change in Brussels
        "2026-10-25 02:30,5\n"  # repeated by the autumn change
        "2026-13-01 00:00,5\n"
        "2026-06-01 00:00,abc\n"
        "2026-06-01 00:15,7\n"
        "2026-06-01T00:15:00+02:00,8\n"  # the same instant as the row above
    )
    with pytest.raises(ImportRefused) as refused:
        import_readings(store, source, text, ImportOptions(), NOW)
    assert refused.value.problems == [
        "row 2: 2026-03-29 02:30 is skipped by a daylight-saving change in Europe/Brussels: give it an offset",
        "row 3: 2026-10-25 02:30 is repeated by a daylight-saving change in Europe/Brussels: give it an offset",
        "row 4: timestamp '2026-13-01 00:00' is not a date and time (use e.g. 2026-03-29 01:30 or ISO 8601)",
        "row 5: value 'abc' is not a number",
        "row 7: the same interval as row 6 (2026-05-31 22:15 UTC)",
    ]
    assert stored(store) == []


def test_a_second_import_duplicates_nothing_and_keeps_final_rows(store: Store) -> None:
    source = a_source(store)
    text = "timestamp,value\n2026-10-25 01:00+02:00,100\n2026-10-25 02:00+01:00,200\n"
    first = import_readings(store, source, text, ImportOptions(interval_minutes=60), NOW)
    again = import_readings(store, source, text.replace("200", "999"), ImportOptions(interval_minutes=60), NOW)
    assert (first.rows, first.written, again.written) == (2, 2, 0)
    assert [(ts.hour, v, final) for ts, _, v, final in stored(store)] == [(23, 100.0, True), (1, 200.0, True)]
    with store.connect(read_only=True) as con:
        assert con.sql("SELECT sum(energy_wh) FROM readings_hourly").fetchall() == [(300.0,)]


def test_options_are_checked_before_the_rows() -> None:
    with pytest.raises(ImportRefused) as refused:
        parse_readings("timestamp,value\n", ImportOptions(unit="MW", timezone="Mars/Base", label="middle"), "UTC")
    assert len(refused.value.problems) == 3 and "unknown time zone 'Mars/Base'" in refused.value.problems[2]
    with pytest.raises(ImportRefused, match="lacks the column"):
        parse_readings("time,watts\n2026-01-01,1\n", ImportOptions(), "UTC")


def test_the_cli_imports_and_refuses_with_row_numbers(app_env: Path, tmp_path: Path) -> None:
    runtime = open_runtime(load_settings())
    source = a_source(runtime.store)
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("timestamp,value\n2026-06-01 00:00,1.5\n2026-06-01 00:15,2.5\n", encoding="utf-8")
    bad.write_text("timestamp,value\n2026-06-01 00:00,x\n", encoding="utf-8")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "jobs.cli", "import-readings", *args]
        return subprocess.run(command, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=60)

    done = cli(str(source), str(good), "--unit", "kW")
    assert done.returncode == 0, done.stderr
    assert "2 row(s) from 2026-05-31 22:00 to 2026-05-31 22:15 UTC; wrote 2 reading(s)" in done.stdout
    refused = cli(str(source), str(bad))
    assert refused.returncode == 1 and "row 2: value 'x' is not a number" in refused.stderr
    assert "Traceback" not in refused.stderr
    missing = cli("999", str(good))
    assert missing.returncode == 1 and "no source with id 999" in missing.stderr
    with runtime.store.connect(read_only=True) as con:
        assert con.sql("SELECT value FROM readings ORDER BY ts").fetchall() == [(1500.0,), (2500.0,)]
