"""The body of a push request (docs/real-time.md, "The push endpoint") turned into readings, or refused whole.

JSON: `{"readings": [{"ts": "2026-12-03T10:15:00+01:00", "value": 1234.5, "interval_s": 300}, ...], "unit": "W"}`.
- `ts`: ISO-8601 with an offset (`Z` or `+01:00`): the START of the interval. A time without an offset is refused:
  a logger's wall clock is ambiguous twice a year, and a webhook's zone is unknown.
- `value`: a number, or null ("no value for this interval", stored as such, never as 0). W (average power over the
  interval) by default; with `"unit": "Wh"` (or `"kWh"`, `"kW"`) the energy over the interval, converted like an
  import (W = Wh x 3600 / interval_s).
- `interval_s`: whole seconds, 1 to 86,400; a top-level `interval_s` gives the default for readings without one.
CSV: the readings import's format and rules (`core.collect.readings_import`), its options as query parameters.

Either way every row is checked before anything is stored, and the bounds are the import's (`ReadingsFileLimits`:
no interval before the earliest date or too far in the future; `MAX_ABS_W`). Two readings of one interval start in
one request are refused, never merged. Problems come back as a list of (pointer, message), the pointer naming the
row the way the sender wrote it (`/readings/3/ts`, JSON Pointer, or `row 4` of a CSV).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import polars as pl

from core.collect.readings_import import (
    MAX_ABS_W,
    OUT_OF_RANGE,
    ImportOptions,
    ImportRefused,
    ReadingsFileLimits,
    decode_csv,
    parse_readings,
)

UNIT_FACTORS: dict[str, float | None] = {"W": 1.0, "kW": 1000.0, "Wh": None, "kWh": None}  # None: energy
MAX_INTERVAL_S = 86_400
MAX_SHOWN_ERRORS = 50
_SHOWN_CHARS = 40


@dataclass(frozen=True)
class PushLimits:
    """The operator's bounds on a push request (settings `DATACONN_INGEST_*`) and on its readings (the import's)."""

    max_bytes: int
    max_readings: int
    readings: ReadingsFileLimits


class PushRefused(ValueError):
    """The request is refused whole: an HTTP status, a title, and the problems ((pointer, message), bounded)."""

    def __init__(self, status: int, title: str, errors: list[tuple[str, str]] | None = None, more: int = 0) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.errors = errors or []
        self.more = more  # problems found beyond those listed


def parse_push(
    body: bytes, content_type: str, query: dict[str, str], site_zone: str, now: datetime, limits: PushLimits
) -> pl.DataFrame:
    """The request's readings as an ingest batch without `source_id` (ts UTC start, interval_s, value W), sorted
    by time; `PushRefused` otherwise."""
    if len(body) > limits.max_bytes:
        raise PushRefused(413, f"The body is larger than {limits.max_bytes:,} bytes.")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded" and body.lstrip()[:1] == b"{":
        kind = "application/json"  # `curl -d '{...}'` without a Content-Type: what was meant is plain
    if kind in ("application/json", "") or kind.endswith("+json"):
        frame = _from_json(body, now, limits)
    elif kind in ("text/csv", "text/plain", "application/csv"):
        frame = _from_csv(body, query, site_zone, now, limits)
    else:
        raise PushRefused(
            415, f"Content-Type {content_type[:_SHOWN_CHARS]!r} is not accepted: send application/json or text/csv."
        )
    if frame.height > limits.max_readings:
        raise PushRefused(
            413, f"The request holds {frame.height:,} readings; at most {limits.max_readings:,} are taken at once."
        )
    return frame.sort("ts")


def _from_csv(body: bytes, query: dict[str, str], site_zone: str, now: datetime, limits: PushLimits) -> pl.DataFrame:
    try:
        options = _csv_options(query)
        text = decode_csv(body, limits.readings)
        return parse_readings(text, options, site_zone, now=now, limits=limits.readings)
    except ImportRefused as exc:
        problems = exc.lines()
        raise PushRefused(
            422, "The CSV readings were refused; nothing was stored.", [("", p) for p in problems]
        ) from None


_CSV_OPTIONS = {"unit", "timezone", "interval_minutes", "label", "snap", "delimiter", "decimal", "time_column",
                "value_column", "counter"}  # fmt: skip


def _csv_options(query: dict[str, str]) -> ImportOptions:
    unknown = sorted(set(query) - _CSV_OPTIONS)
    if unknown:
        raise ImportRefused([f"unknown option {_shown(unknown[0])}: the options are {', '.join(sorted(_CSV_OPTIONS))}"])
    values: dict[str, Any] = dict(query)
    try:
        if "interval_minutes" in values:
            values["interval_minutes"] = int(values["interval_minutes"])
    except ValueError:
        raise ImportRefused(["interval_minutes must be a whole number of minutes"]) from None
    for flag in ("snap", "counter"):
        if flag in values:
            if values[flag].lower() not in ("true", "false", "1", "0"):
                raise ImportRefused([f"{flag} must be true or false"])
            values[flag] = values[flag].lower() in ("true", "1")
    return ImportOptions(**values)


def _from_json(body: bytes, now: datetime, limits: PushLimits) -> pl.DataFrame:
    try:
        document = json.loads(body)
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of thousands of digits
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise PushRefused(400, f"The body is not valid JSON{where}.") from None
    except RecursionError:
        raise PushRefused(400, "The body nests too deeply to be readings.") from None
    if not isinstance(document, dict) or not isinstance(document.get("readings"), list):
        raise PushRefused(400, 'The body must be a JSON object with a "readings" list.')
    unit = document.get("unit", "W")
    if unit not in UNIT_FACTORS:
        raise PushRefused(
            422,
            "The readings were refused; nothing was stored.",
            [("/unit", f"{_shown(unit)} is not a unit: use W, kW, Wh or kWh")],
        )
    default_interval = document.get("interval_s")
    problems: list[tuple[str, str]] = []
    if default_interval is not None and _interval(default_interval) is None:
        problems.append(("/interval_s", f"must be whole seconds from 1 to {MAX_INTERVAL_S:,}"))
    rows = document["readings"]
    if len(rows) > limits.max_readings:
        raise PushRefused(
            413, f"The request holds {len(rows):,} readings; at most {limits.max_readings:,} are taken at once."
        )
    earliest = datetime.combine(limits.readings.earliest, time(), tzinfo=UTC)
    latest = now + timedelta(days=limits.readings.future_days)
    starts: list[datetime] = []
    intervals: list[int] = []
    values: list[float | None] = []
    seen: dict[datetime, int] = {}
    for index, row in enumerate(rows):
        at = f"/readings/{index}"
        if not isinstance(row, dict):
            problems.append((at, 'must be an object {"ts": ..., "value": ..., "interval_s": ...}'))
            continue
        unknown = sorted(set(row) - {"ts", "value", "interval_s"})
        if unknown:
            problems.append((f"{at}/{unknown[0]}", "is not a field of a reading (ts, value, interval_s)"))
        start = _start(row.get("ts"), at, problems, earliest, latest)
        interval = _interval(row.get("interval_s", default_interval))
        if interval is None:
            problems.append((f"{at}/interval_s", f"must be whole seconds from 1 to {MAX_INTERVAL_S:,}"))
        valid, value = _value(row, at, problems)
        if start is None or interval is None or not valid:
            continue
        if start in seen:
            problems.append((f"{at}/ts", f"the same interval start as /readings/{seen[start]}: one value per interval"))
            continue
        seen[start] = index
        watts = _watts(value, unit, interval)
        if watts is not None and abs(watts) > MAX_ABS_W:
            problems.append((f"{at}/value", OUT_OF_RANGE))
            continue
        starts.append(start)
        intervals.append(interval)
        values.append(watts)
    if problems:
        shown = problems[:MAX_SHOWN_ERRORS]
        raise PushRefused(422, "The readings were refused; nothing was stored.", shown, len(problems) - len(shown))
    return pl.DataFrame(
        {"ts": starts, "interval_s": intervals, "value": values},
        schema={"ts": pl.Datetime("us", "UTC"), "interval_s": pl.Int32, "value": pl.Float64},
    )


def _start(
    text: Any, at: str, problems: list[tuple[str, str]], earliest: datetime, latest: datetime
) -> datetime | None:
    if not isinstance(text, str):
        problems.append((f"{at}/ts", "must be an ISO-8601 time with an offset, e.g. 2026-12-03T10:15:00+01:00"))
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        problems.append((f"{at}/ts", f"{_shown(text)} is not an ISO-8601 time (e.g. 2026-12-03T10:15:00+01:00)"))
        return None
    if parsed.tzinfo is None:
        problems.append((f"{at}/ts", f"{_shown(text)} has no UTC offset: add one (Z, +01:00)"))
        return None
    start = parsed.astimezone(UTC)
    if not earliest <= start <= latest:
        problems.append(
            (f"{at}/ts", f"{_shown(text)} is outside the accepted span ({earliest:%Y-%m-%d} to {latest:%Y-%m-%d} UTC)")
        )
        return None
    return start


def _interval(raw: Any) -> int | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    if isinstance(raw, float) and not raw.is_integer():
        return None
    return int(raw) if 1 <= raw <= MAX_INTERVAL_S else None


def _value(row: dict[str, Any], at: str, problems: list[tuple[str, str]]) -> tuple[bool, float | None]:
    """(valid, the value: None for "no value")."""
    if "value" not in row:
        problems.append((f"{at}/value", "is missing (null says there was no value)"))
        return False, None
    raw = row["value"]
    if raw is None:
        return True, None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        problems.append((f"{at}/value", f"{_shown(raw)} is not a number"))
        return False, None
    return True, float(raw)


def _watts(value: float | None, unit: str, interval_s: int) -> float | None:
    """Average power over the interval: W and kW as they are, Wh and kWh as energy spread over it."""
    if value is None:
        return None
    factor = UNIT_FACTORS[unit]
    if factor is not None:
        return value * factor
    wh = value * 1000.0 if unit == "kWh" else value
    return wh * 3600.0 / interval_s


def _shown(raw: Any) -> str:
    text = json.dumps(raw) if not isinstance(raw, str) else repr(raw)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
