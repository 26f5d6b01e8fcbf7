"""Enphase's live status stream, the data: one event's JSON -> a typed frame or an error, an error -> the error tree,
and frames -> 1-minute rows with coverage. Pure functions; the vendor facts are in docs/enphase-v4.md, "Live status
stream".

Conventions of the vendor that matter here:
- `timestamp_epoch` is in MILLISECONDS (the history endpoints use seconds). The vendor's own error examples carry
  seconds in the same field, so a value too small to be milliseconds of this century is read as seconds;
- powers are W; `grid_power` > 0 imports and < 0 exports; `battery_power` > 0 discharges (our `battery_w` sign);
  `battery_soc` is %;
- the data may come nested once more (`{"data": {"data": {...}, "timestamp_epoch": ...}}`, as the vendor's schema
  draws it) or not (as its example shows): both read the same;
- an error arrives as `{"error": {"code", "message", "status", "details"}, "type", ...}`, as the whole answer (the
  HTTP status then equals the code) or inside a running stream.

Minute rows: each frame is an instant sample of every channel; `StreamMinutes` feeds them to
`core.minute_average.Minutes` (a sample holds until the next one, at most `hold_s`) and returns the rows the poll
answers have (`ts`, `interval_s` 60, `channel`, `value`) plus `coverage`. Grid power is split by sign per frame
before averaging, into `grid_import_w` and `grid_export_w` (both >= 0), as the history's import and export endpoints
count them, so a minute that both imported and exported keeps both. `soc_pct` is the minute's time-weighted mean
(readings elsewhere give the % at the interval's end: within a minute the two differ by less than the battery moves).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from core.minute_average import MINUTE_S, Minute, Minutes
from core.providers.base import (
    AuthError,
    BadResponse,
    ProviderConnectionError,
    ProviderError,
    RateLimited,
)
from core.providers.enphase.oauth import REAUTHORIZE_HINT
from core.providers.enphase.parse import _number
from core.providers.enphase.spec import VENDOR

STREAM_HOLD_S = 15.0  # a frame speaks for at most this long (frames come about every second; see the docs)
_SECONDS_BEFORE = 10**11  # an epoch below this is seconds, not milliseconds (1e11 ms is in 1973)
# Channel -> how a frame gives it (grid split by sign, as the history's import/export endpoints count it).
LIVE_CHANNELS = ("pv_w", "load_w", "grid_import_w", "grid_export_w", "battery_w", "soc_pct")
LIVE_ROWS_SCHEMA = pl.Schema(
    [
        ("ts", pl.Datetime("us", "UTC")),
        ("interval_s", pl.Int32()),
        ("channel", pl.Utf8()),
        ("value", pl.Float64()),
        ("coverage", pl.Float64()),
    ]
)
_STREAM_OFF = "turn live streaming off for this source (its history is still collected)"


class StreamNotAvailable(AuthError):
    """This system or this application's plan cannot stream (no streaming in the plan, an unsupported or inactive
    gateway, no meters for it): stop opening streams for it until the configuration changes. The source's history
    polls are not concerned."""


class MalformedFrame(ValueError):
    """An event the stream sent that is not a frame we can read; the reader skips and counts it."""


@dataclass(frozen=True)
class LiveFrame:
    """One frame of the live stream: powers in W (None: not sent), `grid_w` > 0 importing, `battery_w` > 0
    discharging, `soc_pct` in %; `at` is UTC; `gateways` the IQ Gateway serials the data came from."""

    at: datetime
    pv_w: float | None
    load_w: float | None
    grid_w: float | None
    battery_w: float | None
    soc_pct: float | None
    generator_w: float | None
    grid_status: str | None
    battery_mode: str | None
    gateways: tuple[str, ...]


@dataclass(frozen=True)
class LiveError:
    """An error frame: the vendor's `code` (401, 429, 466, ...), its `message` and `status` words."""

    code: int | None
    message: str
    status: str


def _instant(value: Any) -> datetime | None:
    number = _number(value)
    if number is None or number <= 0:
        return None
    seconds = number if number < _SECONDS_BEFORE else number / 1000.0
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _utc_text(value: Any) -> datetime | None:
    """`timestamp_utc` ("2023-03-17 08:25:08.556", naive UTC): only used when `timestamp_epoch` is missing."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_event(payload: str) -> LiveFrame | LiveError:
    """One event's data -> a frame or an error; `MalformedFrame` for anything else."""
    try:
        body = json.loads(payload)
    except ValueError:
        raise MalformedFrame("not JSON") from None
    if not isinstance(body, Mapping):
        raise MalformedFrame("not a JSON object")
    error = body.get("error")
    if isinstance(error, Mapping):
        code = _number(error.get("code"))
        return LiveError(
            code=int(code) if code is not None else None,
            message=_text(error.get("message")) or "",
            status=_text(error.get("status")) or "",
        )
    data = body.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("data"), Mapping):  # the schema's extra level
        body, data = data, data["data"]
    if not isinstance(data, Mapping):
        raise MalformedFrame("no data object")
    at = _instant(body.get("timestamp_epoch")) or _utc_text(body.get("timestamp_utc"))
    if at is None:
        raise MalformedFrame("no timestamp")
    serials = data.get("envoy_serial_number")
    gateways = tuple(str(s) for s in serials if isinstance(s, str | int)) if isinstance(serials, list) else ()
    return LiveFrame(
        at=at,
        pv_w=_number(data.get("pv_power")),
        load_w=_number(data.get("consumption_power")),
        grid_w=_number(data.get("grid_power")),
        battery_w=_number(data.get("battery_power")),
        soc_pct=_number(data.get("battery_soc")),
        generator_w=_number(data.get("generator_power")),
        grid_status=_text(data.get("grid_status")),
        battery_mode=_text(data.get("battery_mode")),
        gateways=gateways,
    )


def error_of(error: LiveError, *, system_id: str, plan: str, now: datetime) -> ProviderError:
    """An error frame -> the error the caller acts on (codes: docs/enphase-v4.md, "Live status stream")."""
    code, said = error.code, error.message.rstrip(".")
    if code == 401 and "application" in said.lower():
        return StreamNotAvailable(plan_refusal(plan, f"401 {said}"))
    if code == 401:
        return AuthError(
            f"{VENDOR} rejected the live stream (401 {said or 'Not Authorized'}): check that the Application API Key "
            f"belongs to the same Enphase application as the Client ID; if it does, {REAUTHORIZE_HINT}."
        )
    if code == 403:
        return AuthError(
            f"{VENDOR} refused the live stream of system {system_id} (403): the Enlighten account that authorised "
            f"this source cannot see it; check the System ID, or {REAUTHORIZE_HINT} with the owner's account."
        )
    if code == 429:
        retry_at = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        return RateLimited(
            f"{VENDOR} refused the live stream: the application used its plan's calls (429); calls resume at "
            f"{retry_at:%Y-%m-%d %H:%M} UTC at the earliest.",
            retry_at=retry_at,
        )
    if code in (461, 462, 463):
        return BadResponse(f"{VENDOR} refused the live stream's duration ({code} {said}): it must be 30 to 300 s.")
    if code == 466:
        return StreamNotAvailable(
            f"{VENDOR} cannot stream system {system_id} (466): its IQ Gateway must be active and run software 6.0.0 or "
            "later; turn live streaming off for this source until the gateway is updated."
        )
    if code == 468:
        return AuthError(f"{VENDOR} does not know system {system_id} (468): check the System ID in Data Connections.")
    if code == 472:
        return StreamNotAvailable(
            f"{VENDOR} does not offer a live stream for system {system_id} (472): it needs an active production meter "
            "(and a consumption meter when it has a battery or system controller); turn live streaming off for this "
            "source."
        )
    if code == 473:
        return ProviderConnectionError(
            f"{VENDOR} says the IQ Gateway of system {system_id} is not reporting now (473); will retry later."
        )
    if code in (550, 551, 552):
        return ProviderConnectionError(
            f"{VENDOR}'s live stream service could not be reached ({code} {said}); will retry later."
        )
    return BadResponse(f"{VENDOR}'s live stream answered an unexpected error ({code} {said}).")


def plan_refusal(plan: str, vendor_said: str | None = None) -> str:
    """The message for an application whose plan has no streaming: the plan setting's (`plan`), or Enphase's answer
    when the setting claims a plan that streams."""
    if vendor_said is None:
        return (
            f"{VENDOR}'s live stream is not included in this application's plan ({plan.title()}): it needs the "
            f"Kilowatt plan or above. If the application has one, set the Enphase plan setting to it; otherwise "
            f"{_STREAM_OFF}."
        )
    return (
        f"{VENDOR}'s live stream is not included in this application's plan ({VENDOR} answered: {vendor_said}; the "
        f"plan setting says {plan.title()}): subscribe the application to the Kilowatt plan or above, or {_STREAM_OFF}."
    )


# --- minute rows --------------------------------------------------------------------------------------------------


def _samples(frame: LiveFrame) -> dict[str, float | None]:
    grid = frame.grid_w
    return {
        "pv_w": frame.pv_w,
        "load_w": frame.load_w,
        "grid_import_w": None if grid is None else max(grid, 0.0),
        "grid_export_w": None if grid is None else max(-grid, 0.0),
        "battery_w": frame.battery_w,
        "soc_pct": frame.soc_pct,
    }


class StreamMinutes:
    """One system's frames -> complete 1-minute rows, across consecutive streams (keep one per system while its
    streams are renewed, so a minute that spans two streams is averaged whole). Not thread-safe: one reader feeds it.
    """

    def __init__(self, *, hold_s: float = STREAM_HOLD_S, grace_s: float = 5.0) -> None:
        self._minutes = Minutes(hold_s=hold_s, grace_s=grace_s)

    def add(self, frame: LiveFrame) -> pl.DataFrame:
        """Record a frame; the rows of the minutes it completed (usually none, one per channel at a new minute)."""
        done: list[Minute] = []
        for channel, value in _samples(frame).items():
            done.extend(self._minutes.add(channel, frame.at, value))
        return minute_frame(done)

    def ended(self, at: datetime) -> None:
        """The stream closed at `at`: the last frame holds no further (the time until the next stream stays
        uncovered)."""
        for channel in LIVE_CHANNELS:
            self._minutes.add(channel, at, None)

    def due(self, now: datetime) -> pl.DataFrame:
        """The rows of minutes that ended more than the grace period before `now` (call it on the clock's tick)."""
        return minute_frame(self._minutes.due(now))


def minute_frame(minutes: Iterable[Minute]) -> pl.DataFrame:
    """`Minute`s keyed by channel -> rows shaped like the poll answers, plus `coverage`, sorted by (ts, channel)."""
    rows = [(m.ts, MINUTE_S, str(m.key), m.value, m.coverage) for m in minutes]
    if not rows:
        return pl.DataFrame(schema=LIVE_ROWS_SCHEMA)
    frame = pl.DataFrame(rows, schema=LIVE_ROWS_SCHEMA, orient="row")
    return frame.sort(["ts", "channel"])


def minute_rows(frames: Iterable[LiveFrame], ended_at: datetime, *, hold_s: float = STREAM_HOLD_S) -> pl.DataFrame:
    """Every minute a finished stream touched, from its frames (oldest first) and the instant it closed."""
    minutes = StreamMinutes(hold_s=hold_s, grace_s=0.0)
    parts = [minutes.add(frame) for frame in frames]
    minutes.ended(ended_at)
    parts.append(minutes.due(ended_at + timedelta(seconds=MINUTE_S)))
    return pl.concat(parts).sort(["ts", "channel"])
