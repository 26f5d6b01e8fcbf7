"""Importing historical readings of one source from a CSV file, through the collector's own write path.

For meters without an API, or history from before a connection existed. The file has a header row naming its
columns; one holds the timestamps and one the values (other columns are ignored). Its layout (delimiter, decimal
mark, which columns) is given or detected by the rules of `core.collect.readings_csv`. Options:

- `unit`: `W` or `kW` (average power over the interval), or `Wh` or `kWh` (energy over the interval, converted to
  average power: W = Wh x 3600 / interval_s);
- `timezone`: the zone of timestamps without an offset (default: the site's); timestamps with an offset
  (`2026-03-29T01:30:00+01:00`, `...Z`) keep theirs. A local time that a DST change skips or repeats is refused
  (give an offset for those rows);
- `interval_minutes`: the length of every interval (default 15; it must divide a day);
- `label`: whether a timestamp names the `start` (default) or the `end` of its interval;
- `snap`: move a timestamp that is off the interval grid to the nearest grid point instead of refusing it;
- `delimiter`, `decimal`, `time_column`, `value_column`: the layout, None to detect it (`core.collect.readings_csv`);
- `counter`: the values are a cumulative meter counter in `Wh` or `kWh`, each reading taken at the instant its
  timestamp names; the difference between consecutive readings is the interval's energy, with resets and
  rollovers detected and reported by row (`core.collect.readings_csv_counter`).

What is stored is only real numbers at sane times (the operator's bounds are `ReadingsFileLimits`, from the settings):

- a value, once converted to W, is finite and at most `MAX_ABS_W` in absolute value;
- an interval starts on or after `earliest` (midnight in the file's zone) and at most `future_days` after now;
- every timestamp, as written (in its own offset, or the file's zone), is on the interval grid: a whole multiple
  of the interval from midnight (10:00, 10:15, ... for 15 minutes). The grid is the written wall clock, not UTC,
  so that hourly data of a zone at +05:30 or 15-minute data at +05:45 fits it. Snapping rounds to the nearest
  grid point (a time exactly half-way goes to the later one: logger clocks drift both ways, and flooring would
  move 10:14:59 onto 10:00); two rows that land in the same interval are refused, never merged.

Every row is checked first; any problem refuses the whole file with row-numbered messages (row N is line N of the
file, as an editor or spreadsheet shows it) and writes nothing. Rows go through `core.store.readings_store.ingest` in
one transaction with the rollups, so re-importing a file duplicates nothing and rows already stored as final are left
as they are.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from core.actors import Permission
from core.catalog import catalog as cat
from core.catalog.audited import audited_change
from core.collect.readings_csv import (
    DECIMAL_MARKS,
    DELIMITERS,
    NumberReader,
    detect_decimal,
    detect_delimiter,
    first_line,
    guess_columns,
)
from core.collect.readings_csv_counter import CounterReading, interval_energies
from core.config import Settings
from core.models import known_timezones
from core.store import rollups
from core.store.audit_log import AuditEntry
from core.store.change_marks import ChangeMarks
from core.store.private_files import NotUtf8, decode_utf8
from core.store.readings_store import ingest, to_batch
from core.store.store import Store
from core.validation import and_more

UNITS = {"W": 1.0, "kW": 1000.0, "Wh": None, "kWh": None}  # None: energy per interval, converted to power
OUT_OF_RANGE = "is out of range: a reading is at most 1 TW (1e12 W) either way"
EMPTY = "the file is empty: it needs a header row (timestamp,value) and data rows"
MAX_ERRORS = 20
# 1 TW: over 40 times the largest power plant on Earth (Three Gorges, 22.5 GW), so no real reading comes near it,
# while a wrong unit or a corrupt number does. Bounding every stored value here also bounds every sum the rollups
# and KPIs take: a century of 1-minute readings at this bound sums to ~1e18 Wh, far from float overflow (1.8e308),
# so no rollup can turn into inf or NaN.
MAX_ABS_W = 1e12
_SHOWN_CHARS = 40  # of a bad field in a message: a 5,000-digit number or a 100 KB field must not flood the output
_DST_SLACK = timedelta(days=2)  # more than any UTC offset: a wall-clock date this far out is out of the window


class ImportRefused(ValueError):
    """The file has problems; `problems` lists the first MAX_ERRORS, `more` counts the others. Nothing was
    written."""

    def __init__(self, problems: list[str], more: int = 0) -> None:
        self.problems = problems[:MAX_ERRORS]
        self.more = more + max(0, len(problems) - MAX_ERRORS)
        super().__init__("nothing was imported:\n" + "\n".join(self.lines()))

    def lines(self) -> list[str]:
        """The problems to show, with "... and N more" when some are left out."""
        return self.problems + ([and_more(self.more)] if self.more else [])


@dataclass(frozen=True)
class ImportOptions:
    unit: str = "W"
    timezone: str | None = None  # None: the site's zone
    interval_minutes: int = 15
    label: str = "start"
    snap: bool = False
    delimiter: str | None = None  # one of DELIMITERS; None: detected from the header row
    decimal: str | None = None  # one of DECIMAL_MARKS; None: detected from the values
    time_column: str | None = None  # a header name; None: guessed
    value_column: str | None = None
    counter: bool = False  # values are a cumulative counter (unit Wh or kWh), not per-interval figures


@dataclass(frozen=True)
class ReadingsFileLimits:
    """The operator's bounds on a CSV file of readings and its rows (settings `DATACONN_READINGS_IMPORT_*`)."""

    earliest: date  # no interval starts before midnight of this date in the file's zone
    future_days: int  # no interval starts more than this many days after now
    max_bytes: int  # a larger file is refused before it is parsed

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadingsFileLimits:
        return cls(
            settings.readings_import_earliest,
            settings.readings_import_future_days,
            settings.readings_import_max_mb * 1_000_000,
        )


DEFAULT_LIMITS = ReadingsFileLimits.from_settings(Settings.model_construct())  # the settings' defaults, not the env's


@dataclass(frozen=True)
class ImportReport:
    rows: int
    written: int
    first: datetime  # UTC start of the first interval
    last: datetime  # UTC start of the last interval
    site_zone: str = "UTC"
    notes: tuple[str, ...] = ()  # what the summary must say besides the counts (counter resets, rollovers, gaps)

    def utc_span(self) -> str:
        return f"from {self.first:%Y-%m-%d %H:%M} to {self.last:%Y-%m-%d %H:%M} UTC"

    def site_span(self) -> str:
        zone = ZoneInfo(self.site_zone)
        first, last = self.first.astimezone(zone), self.last.astimezone(zone)
        return f"from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} site time ({self.site_zone})"


@dataclass(frozen=True)
class ParsedFile:
    frame: pl.DataFrame  # an ingest batch without `source_id`
    notes: list[str]  # the first MAX_ERRORS, then "... and N more"


class _Problems:
    """Row problems (or notes), keeping the text of the first MAX_ERRORS only: a million bad rows stay cheap."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.more = 0

    def add(self, problem: str) -> None:
        if len(self.shown) < MAX_ERRORS:
            self.shown.append(problem)
        else:
            self.more += 1

    def __bool__(self) -> bool:
        return bool(self.shown)

    def refused(self) -> ImportRefused:
        return ImportRefused(self.shown, self.more)

    def lines(self) -> list[str]:
        return self.shown + ([and_more(self.more)] if self.more else [])


@dataclass(frozen=True)
class _Window:
    """Interval starts accepted, as UTC instants."""

    earliest: datetime
    latest: datetime
    limits: ReadingsFileLimits

    def problem(self, text: str, instant: datetime) -> str | None:
        if instant < self.earliest:
            earliest = self.limits.earliest
            return (
                f"{text} is before {earliest:%Y-%m-%d}, the earliest date imported (DATACONN_READINGS_IMPORT_EARLIEST)"
            )
        if instant > self.latest:
            return (
                f"{text} is more than {self.limits.future_days} day(s) in the future (after"
                f" {self.latest:%Y-%m-%d %H:%M} UTC; DATACONN_READINGS_IMPORT_FUTURE_DAYS)"
            )
        return None


def too_large(limits: ReadingsFileLimits) -> ImportRefused:
    """The refusal of a file over the size limit (found by `decode_csv`, or by a bounded read of the file)."""
    return ImportRefused(
        [
            f"the file is larger than {limits.max_bytes / 1e6:g} MB, the import limit"
            " (DATACONN_READINGS_IMPORT_MAX_MB): split it into smaller files"
        ]
    )


def decode_csv(data: bytes, limits: ReadingsFileLimits = DEFAULT_LIMITS) -> str:
    """The file's text, or `ImportRefused` saying in the user's terms why it is not a CSV text file we can read.
    A UTF-8 BOM (spreadsheet exports write one) is fine."""
    if len(data) > limits.max_bytes:
        raise too_large(limits)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # "Unicode text" from a spreadsheet
        raise ImportRefused(["the file is UTF-16 text: save it as CSV UTF-8"])
    if b"\x00" in data:
        raise ImportRefused(["the file holds binary data (NUL bytes), not CSV text: export the readings as CSV"])
    try:
        text = decode_utf8(data, bom=True)
    except NotUtf8 as exc:
        raise ImportRefused(
            [
                f"the file is {exc}: save it as CSV UTF-8, or if it is a spreadsheet or another binary file, export"
                " the readings as CSV"
            ]
        ) from None
    if not text.strip():
        raise ImportRefused([EMPTY])
    return text


def parse_readings(
    text: str,
    options: ImportOptions,
    site_zone: str,
    *,
    now: datetime | None = None,
    limits: ReadingsFileLimits = DEFAULT_LIMITS,
) -> pl.DataFrame:
    """The file as an ingest batch without `source_id` (ts UTC start, interval_s, value W), or `ImportRefused`.
    `now` (default: the clock) bounds how far in the future an interval may start."""
    return parse_file(text, options, site_zone, now=now, limits=limits).frame


def parse_file(
    text: str,
    options: ImportOptions,
    site_zone: str,
    *,
    now: datetime | None = None,
    limits: ReadingsFileLimits = DEFAULT_LIMITS,
) -> ParsedFile:
    """`parse_readings` with the notes the summary gives (counter resets, rollovers, gaps)."""
    option_problems = _option_problems(options)
    if option_problems:
        raise ImportRefused(option_problems)
    zone = ZoneInfo(options.timezone or site_zone)
    interval = timedelta(minutes=options.interval_minutes)
    earliest = datetime.combine(limits.earliest, time(), tzinfo=zone).astimezone(UTC)
    window = _Window(earliest, (now or datetime.now(UTC)) + timedelta(days=limits.future_days), limits)
    delimiter = options.delimiter or detect_delimiter(first_line(text))
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise ImportRefused([f"row 1: {_csv_problem(exc)}"]) from None
    if not any(name.strip() for name in header):
        raise ImportRefused([EMPTY])
    columns = _columns(header, options)
    numbers = NumberReader(options.decimal or _decimal(text, delimiter, columns[1]))
    problems, notes = _Problems(), _Problems()
    starts: list[datetime] = []
    values: list[float | None] = []
    counter: list[CounterReading] = []
    seen: dict[datetime, tuple[int, bool]] = {}  # interval start -> (row, whether it was snapped)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.add(f"row {reader.line_num}: {_csv_problem(exc)}; the rows after it were not checked")
            break
        if not fields:
            continue  # a blank line
        number = reader.line_num
        if len(fields) > len(header) and any(field.strip() for field in fields[len(header) :]):
            # A comma-separated row with an unquoted decimal comma (`...,1234,5`) would otherwise read as 1234.
            problems.add(
                f"row {number}: {len(fields)} fields where the header names {len(header)}: a {DELIMITERS[delimiter]}"
                " inside a value? Quote that value, or use another delimiter"
            )
            continue
        stamp, raw_value = (fields[i].strip() if i < len(fields) else "" for i in columns)
        start, snapped, problem = _start(stamp, zone, interval, options, window)
        if problem is None and options.counter:
            reading, problem = _counter_reading(raw_value, numbers)
            if reading is not None and start is not None:
                counter.append(CounterReading(number, start, reading, raw_value))
        elif problem is None:
            value, problem = _power(raw_value, options.unit, interval, numbers)
        if problem is not None:
            problems.add(f"row {number}: {problem}")
            continue
        assert start is not None
        if start in seen:
            other, other_snapped = seen[start]
            when = f"({start:%Y-%m-%d %H:%M} UTC)"
            if snapped or other_snapped:
                problems.add(f"row {number}: {stamp} snaps into the same interval as row {other} {when}")
            else:
                problems.add(f"row {number}: the same interval as row {other} {when}")
            continue
        seen[start] = (number, snapped)
        if not options.counter:
            starts.append(start)
            values.append(value)
    if problems:
        raise problems.refused()
    if not seen:
        raise ImportRefused(["the file has no data rows (only a header)"])
    if options.counter:
        starts, values = _counter_intervals(counter, interval, options.unit, problems, notes)
        if problems:
            raise problems.refused()
    frame = pl.DataFrame(
        {"ts": starts, "interval_s": [int(interval.total_seconds())] * len(starts), "value": values},
        schema={"ts": pl.Datetime("us", "UTC"), "interval_s": pl.Int32, "value": pl.Float64},
    )
    return ParsedFile(frame, notes.lines())


def _counter_intervals(
    readings: list[CounterReading], interval: timedelta, unit: str, problems: _Problems, notes: _Problems
) -> tuple[list[datetime], list[float | None]]:
    """Interval starts and average W from a counter's readings; problems and notes by row."""
    if len(readings) < 2:
        raise ImportRefused(["a counter file needs at least two readings: an interval's energy is their difference"])
    starts: list[datetime] = []
    values: list[float | None] = []
    for energy in interval_energies(readings, interval, unit, problems.add, notes.add):
        watts = None if energy.energy is None else _watts(energy.energy, unit, interval)
        if watts is not None and not abs(watts) <= MAX_ABS_W:
            problems.add(f"row {energy.row}: the counter rises by {energy.energy:g} {unit} {OUT_OF_RANGE}")
            continue
        starts.append(energy.start)
        values.append(watts)
    if not starts and not problems:
        raise ImportRefused(["no two counter readings are one interval apart: no interval's energy is known"])
    return starts, values


def _option_problems(options: ImportOptions) -> list[str]:
    problems = []
    if options.unit not in UNITS:
        problems.append(f"unit {options.unit!r} is not one of {', '.join(UNITS)}")
    if options.label not in ("start", "end"):
        problems.append(f"label {options.label!r} must be start or end")
    if not 1 <= options.interval_minutes <= 1440 or 1440 % options.interval_minutes:
        # The grid restarts at every midnight: an interval that does not divide a day would leave a short one.
        problems.append("interval_minutes must divide a day (1440 minutes), e.g. 5, 10, 15, 30 or 60")
    if options.timezone and options.timezone not in known_timezones():
        problems.append(f"unknown time zone {options.timezone!r}")
    if options.delimiter is not None and options.delimiter not in DELIMITERS:
        problems.append(f"delimiter {options.delimiter!r} is not one of {', '.join(DELIMITERS.values())}")
    if options.decimal is not None and options.decimal not in DECIMAL_MARKS:
        problems.append(f"decimal mark {options.decimal!r} is not one of {', '.join(DECIMAL_MARKS)}")
    if options.counter and UNITS.get(options.unit, 0) is not None:
        problems.append(f"a cumulative counter counts energy: its unit is Wh or kWh, not {options.unit}")
    if options.counter and options.label != "start":
        problems.append("a counter reading is taken at the instant its timestamp names: the label does not apply")
    return problems


def _columns(header: list[str], options: ImportOptions) -> tuple[int, int]:
    """Where the timestamp and value columns are (named by the options, else guessed), or `ImportRefused` naming
    what the first row holds instead."""
    names = [name.strip() for name in header]
    found = ", ".join(_quote(name) for name in names[:10]) + (", ..." if len(names) > 10 else "")
    guessed_time, guessed_value = guess_columns(names)
    chosen = {"timestamp": guessed_time, "value": guessed_value}
    problems = []
    for role, given in (("timestamp", options.time_column), ("value", options.value_column)):
        if given is not None:
            chosen[role] = _position(names, given)
            if chosen[role] is None:
                problems.append(f"row 1: the header row has no column {_quote(given)} (found: {found})")
    if problems:
        raise ImportRefused(problems)
    missing = [role for role, position in chosen.items() if position is None]
    if missing:
        raise ImportRefused(
            [
                f"row 1: the header row lacks the column(s) {', '.join(missing)} (found: {found}): the first row"
                " must name the columns, e.g. timestamp,value"
            ]
        )
    time_at, value_at = chosen["timestamp"], chosen["value"]
    assert time_at is not None and value_at is not None
    if time_at == value_at:
        raise ImportRefused([f"row 1: the timestamps and the values cannot both be column {_quote(names[time_at])}"])
    return time_at, value_at


def _position(names: list[str], given: str) -> int | None:
    """The column named `given`: exactly, else the only one equal to it ignoring case and outer spaces."""
    if given in names:
        return names.index(given)
    alike = [i for i, name in enumerate(names) if name.casefold() == given.strip().casefold()]
    return alike[0] if len(alike) == 1 else None


def _decimal(text: str, delimiter: str, column: int) -> str:
    """The decimal mark the values show, or `ImportRefused` when none tells (`core.collect.readings_csv`)."""
    mark, row, value = detect_decimal(_values(text, delimiter, column))
    if mark is None:
        raise ImportRefused(
            [
                f"row {row}: value {_quote(value)} reads as two different numbers with a decimal point or a decimal"
                " comma, and no value in the file tells which it uses: choose the decimal mark"
            ]
        )
    return mark


def _values(text: str, delimiter: str, column: int) -> Iterator[tuple[int, str]]:
    """(row, field) of the value column in file order, for detecting the decimal mark; stops quietly at a line
    that is not CSV (the main pass names it)."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        next(reader, None)
        for fields in reader:
            if column < len(fields):
                yield reader.line_num, fields[column].strip()
    except csv.Error:
        return


def _csv_problem(exc: csv.Error) -> str:
    if "field limit" in str(exc):
        return (
            f"a field is longer than {csv.field_size_limit():,} characters: this is not a readings file, or a quote"
            ' (") is never closed'
        )
    return f"the line is not valid CSV ({exc})"


def _quote(text: str) -> str:
    """`text` quoted for a message, cut short when long."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text):,} characters)"


def _start(
    text: str, zone: ZoneInfo, interval: timedelta, options: ImportOptions, window: _Window
) -> tuple[datetime | None, bool, str | None]:
    """The UTC start of the row's interval and whether it was snapped, or why not."""
    try:
        written = datetime.fromisoformat(text)
    except ValueError:
        return None, False, f"timestamp {_quote(text)} is not a date and time (use e.g. 2026-03-29 01:30 or ISO 8601)"
    # The wall-clock date first: converting year 1 or 9999 to UTC would overflow, and any offset is < _DST_SLACK.
    if written.date() < (window.earliest - _DST_SLACK).date():
        return None, False, window.problem(text, window.earliest - _DST_SLACK)
    if written.date() > (window.latest + _DST_SLACK).date():
        return None, False, window.problem(text, window.latest + _DST_SLACK)
    off_grid = (written - written.replace(hour=0, minute=0, second=0, microsecond=0)) % interval
    if off_grid and not options.snap:
        grid = f"the {options.interval_minutes}-minute grid"
        return None, False, f"{text} is off {grid} (from midnight): fix it, or snap times to the grid"
    on_grid, shown = written, text
    if off_grid:  # the nearest grid point on the wall clock; exactly half-way goes to the later one
        on_grid = written - off_grid + (interval if off_grid * 2 >= interval else timedelta())
        shown = f"{text} (snapped to {on_grid:%H:%M})"
    moment, problem = _instant(on_grid, shown, zone)
    if moment is None:
        return None, False, problem
    start = moment - interval if options.label == "end" else moment
    return start, bool(off_grid), window.problem(text, start)


def _instant(wall: datetime, shown: str, zone: ZoneInfo) -> tuple[datetime | None, str | None]:
    """A UTC instant, or why not. Naive local times that DST skips or repeats are refused, not guessed."""
    if wall.tzinfo is not None:
        return wall.astimezone(UTC), None
    earlier, later = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    if earlier.utcoffset() != later.utcoffset():
        when = "repeated" if earlier.astimezone(UTC) < later.astimezone(UTC) else "skipped"
        return None, f"{shown} is {when} by a daylight-saving change in {zone.key}: give it an offset"
    return earlier.astimezone(UTC), None


def _power(text: str, unit: str, interval: timedelta, numbers: NumberReader) -> tuple[float | None, str | None]:
    """Average W, checked AFTER the unit conversion (1e308 is finite; 1e308 kW is not)."""
    if text == "":
        return None, None  # no data for that interval: stored as NULL, not zero
    number, problem = numbers.read(text)
    if number is None:
        return None, f"value {_quote(text)} {problem}"
    watts = _watts(number, unit, interval)
    if not abs(watts) <= MAX_ABS_W:  # also catches the inf of a number too long for a float
        return None, f"value {_quote(text)} {unit} {OUT_OF_RANGE}"
    return watts, None


def _watts(number: float, unit: str, interval: timedelta) -> float:
    factor = UNITS[unit]
    if factor is not None:
        return number * factor
    return number * (1000.0 if unit == "kWh" else 1.0) * 3600 / interval.total_seconds()


def _counter_reading(text: str, numbers: NumberReader) -> tuple[float | None, str | None]:
    """A register reading (None for an empty field: a missing reading), or why it is not one."""
    if text == "":
        return None, None
    number, problem = numbers.read(text)
    if number is None:
        return None, f"value {_quote(text)} {problem}"
    if number < 0 or math.isinf(number):
        return None, f"value {_quote(text)} is not a counter reading: a register is never negative or infinite"
    return number, None


def import_readings(
    store: Store,
    source_id: int,
    text: str,
    options: ImportOptions,
    now: datetime,
    *,
    dry_run: bool = False,
    limits: ReadingsFileLimits = DEFAULT_LIMITS,
) -> ImportReport:
    """Check the whole file, then write it in one transaction (nothing with `dry_run`)."""
    catalog = cat.load_catalog(store)
    source = catalog.source(source_id)
    site = catalog.site(catalog.meter(source.meter_id).site_id)
    parsed = parse_file(text, options, site.timezone, now=now, limits=limits)
    batch = to_batch(source_id, parsed.frame, now, final_before=now)
    first, last = batch["ts"].min(), batch["ts"].max()
    assert isinstance(first, datetime) and isinstance(last, datetime)
    written = 0
    if not dry_run:
        imported = AuditEntry(
            "import readings",
            "readings",
            source_id,
            source.name,
            f"{batch.height:,} readings from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC imported",
        )
        with audited_change(store, Permission.IMPORT, extra=[imported]) as con:
            written = ingest(con, batch, now)
            rollups.refresh(con, [source_id], first, last + timedelta(minutes=options.interval_minutes))
        if written:
            ChangeMarks(store.path).mark([source_id])
    return ImportReport(batch.height, written, first, last, site.timezone, tuple(parsed.notes))
