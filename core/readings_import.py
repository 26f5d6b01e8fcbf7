"""Importing historical readings of one source from a CSV file, through the collector's own write path.

For meters without an API, or history from before a connection existed. The file has a header row and two
columns: `timestamp` and `value` (other columns are ignored). Options:

- `unit`: `W` or `kW` (average power over the interval), or `Wh` or `kWh` (energy over the interval, converted to
  average power: W = Wh x 3600 / interval_s);
- `timezone`: the zone of timestamps without an offset (default: the site's); timestamps with an offset
  (`2026-03-29T01:30:00+01:00`, `...Z`) keep theirs. A local time that a DST change skips or repeats is refused
  (give an offset for those rows);
- `interval_minutes`: the length of every interval (default 15);
- `label`: whether a timestamp names the `start` (default) or the `end` of its interval.

Every row is checked first; any problem refuses the whole file with row-numbered messages and writes nothing.
Rows go through `core.readings_store.ingest` in one transaction with the rollups, so re-importing a file
duplicates nothing and rows already stored as final are left as they are.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from core import catalog as cat
from core import rollups
from core.models import known_timezones
from core.readings_store import ingest, to_batch
from core.store import Store

UNITS = {"W": 1.0, "kW": 1000.0, "Wh": None, "kWh": None}  # None: energy per interval, converted to power
MAX_ERRORS = 20


class ImportRefused(ValueError):
    """The file has problems; `problems` says which rows and why. Nothing was written."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:MAX_ERRORS]
        more = f"\n... and {len(problems) - MAX_ERRORS} more" if len(problems) > MAX_ERRORS else ""
        super().__init__("nothing was imported:\n" + "\n".join(shown) + more)


@dataclass(frozen=True)
class ImportOptions:
    unit: str = "W"
    timezone: str | None = None  # None: the site's zone
    interval_minutes: int = 15
    label: str = "start"


@dataclass(frozen=True)
class ImportReport:
    rows: int
    written: int
    first: datetime
    last: datetime


def parse_readings(text: str, options: ImportOptions, site_zone: str) -> pl.DataFrame:
    """The file as an ingest batch without `source_id` (ts UTC start, interval_s, value W), or `ImportRefused`."""
    problems = _option_problems(options)
    if problems:
        raise ImportRefused(problems)
    zone = ZoneInfo(options.timezone or site_zone)
    interval = timedelta(minutes=options.interval_minutes)
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in reader.fieldnames or []]
    missing = [name for name in ("timestamp", "value") if name not in fields]
    if missing:
        raise ImportRefused([f"the header row lacks the column(s) {', '.join(missing)} (found: {', '.join(fields)})"])
    starts: list[datetime] = []
    values: list[float | None] = []
    seen: dict[datetime, int] = {}
    for number, raw in enumerate(reader, start=2):  # row 1 is the header
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        moment, problem = _instant(row["timestamp"], zone)
        if problem:
            problems.append(f"row {number}: {problem}")
            continue
        value, problem = _power(row["value"], options.unit, interval)
        if problem:
            problems.append(f"row {number}: {problem}")
            continue
        assert moment is not None
        start = moment - interval if options.label == "end" else moment
        if start in seen:
            problems.append(f"row {number}: the same interval as row {seen[start]} ({start:%Y-%m-%d %H:%M} UTC)")
            continue
        seen[start] = number
        starts.append(start)
        values.append(value)
    if problems:
        raise ImportRefused(problems)
    if not starts:
        raise ImportRefused(["the file has no data rows"])
    return pl.DataFrame(
        {"ts": starts, "interval_s": [int(interval.total_seconds())] * len(starts), "value": values},
        schema={"ts": pl.Datetime("us", "UTC"), "interval_s": pl.Int32, "value": pl.Float64},
    )


def _option_problems(options: ImportOptions) -> list[str]:
    problems = []
    if options.unit not in UNITS:
        problems.append(f"unit {options.unit!r} is not one of {', '.join(UNITS)}")
    if options.label not in ("start", "end"):
        problems.append(f"label {options.label!r} must be start or end")
    if not 1 <= options.interval_minutes <= 1440:
        problems.append("interval_minutes must be between 1 and 1440")
    if options.timezone and options.timezone not in known_timezones():
        problems.append(f"unknown time zone {options.timezone!r}")
    return problems


def _instant(text: str, zone: ZoneInfo) -> tuple[datetime | None, str | None]:
    """A UTC instant, or why not. Naive local times that DST skips or repeats are refused, not guessed."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None, f"timestamp {text[:40]!r} is not a date and time (use e.g. 2026-03-29 01:30 or ISO 8601)"
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC), None
    earlier, later = parsed.replace(tzinfo=zone, fold=0), parsed.replace(tzinfo=zone, fold=1)
    if earlier.utcoffset() != later.utcoffset():
        when = "repeated" if earlier.astimezone(UTC) < later.astimezone(UTC) else "skipped"
        return None, f"{text} is {when} by a daylight-saving change in {zone.key}: give it an offset"
    return earlier.astimezone(UTC), None


def _power(text: str, unit: str, interval: timedelta) -> tuple[float | None, str | None]:
    if text == "":
        return None, None  # no data for that interval: stored as NULL, not zero
    try:
        number = float(text)
    except ValueError:
        return None, f"value {text[:40]!r} is not a number"
    if not math.isfinite(number):
        return None, f"value {text!r} is not a finite number"
    factor = UNITS[unit]
    if factor is not None:
        return number * factor, None
    watt_hours = number * (1000.0 if unit == "kWh" else 1.0)
    return watt_hours * 3600 / interval.total_seconds(), None


def import_readings(
    store: Store, source_id: int, text: str, options: ImportOptions, now: datetime, *, dry_run: bool = False
) -> ImportReport:
    """Check the whole file, then write it in one transaction (nothing with `dry_run`)."""
    catalog = cat.load_catalog(store)
    source = catalog.source(source_id)
    site = catalog.site(catalog.meter(source.meter_id).site_id)
    batch = to_batch(source_id, parse_readings(text, options, site.timezone), now, final_before=now)
    first, last = batch["ts"].min(), batch["ts"].max()
    assert isinstance(first, datetime) and isinstance(last, datetime)
    written = 0
    if not dry_run:
        with store.transaction() as con:
            written = ingest(con, batch, now)
            rollups.refresh(con, [source_id], first, last + timedelta(minutes=options.interval_minutes))
    return ImportReport(rows=batch.height, written=written, first=first, last=last)
