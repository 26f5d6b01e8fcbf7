"""Enphase v4 JSON -> our types: pure functions, tested from fixtures (docs/enphase-v4.md; shapes from the
unofficial OpenAPI spec NathanBaulch/EnphaseOpenAPI `monitoring.yaml`, branch v4).

Conventions of the vendor that matter here:
- every instant is Unix epoch seconds in UTC;
- telemetry intervals are labelled by their END (`end_at`); readings are labelled by their START, so
  `ts = end_at - interval`, with the interval fixed by the endpoint (5 min for production_micro, 15 min otherwise),
  never guessed from gaps between rows (Enphase leaves gaps unfilled);
- energy is Wh per interval; average W = Wh * 3600 / interval_s;
- `"intervals": []` is normal (early in the day, before first production, no meter): no rows, not an error;
- grid import and export come from their own endpoints (`energy_import_telemetry` / `energy_export_telemetry`,
  15-minute `wh_imported` / `wh_exported`); the spec's schema nests their intervals one list deeper than its own
  example does, so one level of nesting is flattened (both shapes read the same);
- the spec types values as integers, but we accept floats, numeric strings and nulls/missing keys (a missing value
  becomes a null reading: "no data", never 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from core.providers.answers import excerpt, json_or_none
from core.providers.base import (
    ApiRetired,
    AuthError,
    BadResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderSite,
    RateLimited,
    address_line,
    empty_readings,
    normalise_readings,
)
from core.providers.enphase.endpoints import METER_INTERVAL, MICRO_INTERVAL
from core.providers.enphase.oauth import REAUTHORIZE_HINT
from core.providers.enphase.spec import VENDOR

Row = tuple[datetime, int, str, float | None]


class RangeRejected(BadResponse):
    """422: the requested start is in the future or outside what the system has (before first report, > 2 years).

    History treats it as "no data for this window" (and stops at the first future window); elsewhere it is a
    `BadResponse` like any unusable answer.
    """

    def __init__(self, message: str, excerpt: str = "", future: bool = False) -> None:
        super().__init__(message, excerpt)
        self.future = future


@dataclass(frozen=True)
class SystemInfo:
    system_id: str
    name: str
    timezone: str | None
    last_report_at: datetime | None


@dataclass(frozen=True)
class Summary:
    current_power_w: float | None
    size_w: float | None
    last_report_at: datetime | None
    last_interval_end_at: datetime | None
    status: str | None


# --- small helpers -------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A finite number from an int/float or numeric string; None for null, missing, booleans and junk."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().rstrip("%"))
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _epoch(value: Any) -> datetime | None:
    number = _number(value)
    return None if number is None else datetime.fromtimestamp(int(number), UTC)


def _object(body: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise BadResponse(f"{VENDOR} answered {what} with something other than a JSON object.", excerpt=excerpt(body))
    return body


def _intervals(body: Any, what: str) -> list[Mapping[str, Any]]:
    obj = _object(body, what)
    intervals = obj.get("intervals", [])
    if intervals is None:
        return []
    if not isinstance(intervals, list):
        raise BadResponse(f"{VENDOR} {what}: 'intervals' is not a list.", excerpt=excerpt(body))
    flat: list[Any] = []
    for item in intervals:  # the import/export schema nests intervals in inner lists; its example does not
        flat.extend(item if isinstance(item, list) else [item])
    return [item for item in flat if isinstance(item, Mapping)]


def _start_of(item: Mapping[str, Any], interval: timedelta, what: str) -> datetime:
    end = _epoch(item.get("end_at"))
    if end is None:
        raise BadResponse(f"{VENDOR} {what}: an interval has no end_at.", excerpt=excerpt(dict(item)))
    return end - interval


def _frame(rows: list[Row]) -> pl.DataFrame:
    if not rows:
        return empty_readings()
    ts, interval_s, channel, value = zip(*rows, strict=True)
    return normalise_readings(pl.DataFrame({"ts": ts, "interval_s": interval_s, "channel": channel, "value": value}))


def _watts(wh: float | None, interval: timedelta) -> float | None:
    return None if wh is None else wh * 3600.0 / interval.total_seconds()


# --- telemetry ----------------------------------------------------------------------------------------------


def parse_production_micro(body: Any) -> pl.DataFrame:
    """pv_w per 5 minutes: `powr` (average W, 1 W resolution) when present, else `enwh` (1 Wh = 12 W steps)."""
    rows: list[Row] = []
    seconds = int(MICRO_INTERVAL.total_seconds())
    for item in _intervals(body, "production_micro"):
        power = _number(item.get("powr"))
        if power is None:
            power = _watts(_number(item.get("enwh")), MICRO_INTERVAL)
        rows.append((_start_of(item, MICRO_INTERVAL, "production_micro"), seconds, "pv_w", power))
    return _frame(rows)


def _meter(body: Any, what: str, field: str, channel: str) -> pl.DataFrame:
    seconds = int(METER_INTERVAL.total_seconds())
    rows: list[Row] = [
        (_start_of(item, METER_INTERVAL, what), seconds, channel, _watts(_number(item.get(field)), METER_INTERVAL))
        for item in _intervals(body, what)
    ]
    return _frame(rows)


def parse_production_meter(body: Any) -> pl.DataFrame:
    """pv_w per 15 minutes from the production meter's `wh_del`."""
    return _meter(body, "production_meter", "wh_del", "pv_w")


def parse_consumption_meter(body: Any) -> pl.DataFrame:
    """load_w per 15 minutes from the consumption meter's `enwh`."""
    return _meter(body, "consumption_meter", "enwh", "load_w")


def parse_energy_import(body: Any) -> pl.DataFrame:
    """grid_import_w per 15 minutes from `energy_import_telemetry`'s `wh_imported` (needs a consumption meter)."""
    return _meter(body, "energy_import_telemetry", "wh_imported", "grid_import_w")


def parse_energy_export(body: Any) -> pl.DataFrame:
    """grid_export_w per 15 minutes from `energy_export_telemetry`'s `wh_exported` (needs a consumption meter)."""
    return _meter(body, "energy_export_telemetry", "wh_exported", "grid_export_w")


def parse_battery(body: Any) -> pl.DataFrame:
    """battery_w (positive = discharging, as everywhere here) and soc_pct per 15 minutes.

    battery_w = (discharge.enwh - charge.enwh) * 4; it is null unless both sides are reported, because a missing
    side would otherwise turn into a made-up full charge or discharge.
    """
    rows: list[Row] = []
    seconds = int(METER_INTERVAL.total_seconds())
    for item in _intervals(body, "battery"):
        ts = _start_of(item, METER_INTERVAL, "battery")
        charge, discharge, soc = (item.get(k) for k in ("charge", "discharge", "soc"))
        charge_wh = _number(charge.get("enwh")) if isinstance(charge, Mapping) else None
        discharge_wh = _number(discharge.get("enwh")) if isinstance(discharge, Mapping) else None
        net = None if charge_wh is None or discharge_wh is None else discharge_wh - charge_wh
        rows.append((ts, seconds, "battery_w", _watts(net, METER_INTERVAL)))
        rows.append((ts, seconds, "soc_pct", _number(soc.get("percent")) if isinstance(soc, Mapping) else None))
    return _frame(rows)


TELEMETRY_PARSERS: dict[str, Callable[[Any], pl.DataFrame]] = {
    "production_micro": parse_production_micro,
    "production_meter": parse_production_meter,
    "consumption_meter": parse_consumption_meter,
    "battery": parse_battery,
    "energy_import": parse_energy_import,
    "energy_export": parse_energy_export,
}


# --- systems ------------------------------------------------------------------------------------------------


def _system(item: Mapping[str, Any]) -> SystemInfo:
    system_id = item.get("system_id")
    if isinstance(system_id, bool) or not isinstance(system_id, int | str) or str(system_id) == "":
        raise BadResponse(f"{VENDOR} listed a system without a system_id.", excerpt=excerpt(dict(item)))
    name = item.get("name")
    timezone = item.get("timezone")
    return SystemInfo(
        system_id=str(system_id),
        name=name if isinstance(name, str) and name.strip() else f"Enphase system {system_id}",
        # Some systems come without a time zone (spec example); epoch times do not need it.
        timezone=timezone if isinstance(timezone, str) and timezone else None,
        last_report_at=_epoch(item.get("last_report_at")),
    )


def parse_system(body: Any) -> SystemInfo:
    """`GET /systems/{id}`: name and IANA time zone (the summary has neither)."""
    return _system(_object(body, "the system details"))


def parse_systems_page(body: Any) -> tuple[list[ProviderSite], int]:
    """One page of `GET /systems` -> (sites, total). `system_size` is not used: its unit is undocumented."""
    obj = _object(body, "the system list")
    systems = obj.get("systems", [])
    if not isinstance(systems, list):
        raise BadResponse(f"{VENDOR} system list: 'systems' is not a list.", excerpt=excerpt(body))
    sites = []
    for item in systems:
        if isinstance(item, Mapping):
            info = _system(item)
            place = address_line(item.get("address"))
            sites.append(ProviderSite(id=info.system_id, name=info.name, timezone=info.timezone, location=place))
    total = _number(obj.get("total"))
    return sites, int(total) if total is not None else len(sites)


def parse_summary(body: Any) -> Summary:
    """`GET /systems/{id}/summary`: current PV power (W), size (W) and when the gateway last reported."""
    obj = _object(body, "the system summary")
    status = obj.get("status")
    return Summary(
        current_power_w=_number(obj.get("current_power")),
        size_w=_number(obj.get("size_w")),
        last_report_at=_epoch(obj.get("last_report_at")),
        last_interval_end_at=_epoch(obj.get("last_interval_end_at")),
        status=status if isinstance(status, str) else None,
    )


# --- errors -------------------------------------------------------------------------------------------------


def error_for(status: int, text: str, *, system_id: str, now: datetime) -> ProviderError:
    """A non-200 API answer -> the error the caller acts on (bodies: docs/enphase-v4.md, spec `responses`).

    `text` is the answer already scrubbed (`core.providers.answers.scrubbed_text`)."""
    body = json_or_none(text)
    obj: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    raw_details = obj.get("details")
    details = raw_details if isinstance(raw_details, str) else ""
    cut = excerpt(text)
    if status == 401:
        return AuthError(
            f"{VENDOR} rejected the call (401 Not Authorized): check that the Application API Key belongs to the same "
            f"Enphase application as the Client ID; if it does, {REAUTHORIZE_HINT}."
        )
    if status == 403:
        return AuthError(
            f"{VENDOR} refused access to system {system_id} (403): the Enlighten account that authorised this source "
            f"cannot see it; check the System ID, or {REAUTHORIZE_HINT} with the owner's account."
        )
    if status == 404:
        return AuthError(f"{VENDOR} does not know system {system_id} (404): check the System ID in Data Connections.")
    if status == 410:
        return ApiRetired(
            f"{VENDOR} answered 410 Gone: this API version has been switched off. Check developer-v4.enphase.com for "
            "its successor and update the Enphase base URL setting; collection for this source is paused."
        )
    if status == 422:
        future = "future" in details.lower()
        reason = "the requested date is in the future" if future else "the date range is invalid"
        return RangeRejected(
            f"{VENDOR} refused the request (422): {reason} for system {system_id}.", excerpt=cut, future=future
        )
    if status == 429:
        return _rate_limited(obj, now)
    if obj.get("errorCode") == 7:
        return ProviderConnectionError(
            f"{VENDOR} says data is temporarily unavailable (errorCode 7, HTTP {status}); will retry later."
        )
    if status >= 500:
        return ProviderConnectionError(f"{VENDOR} had a server error (HTTP {status}); will retry later.")
    return BadResponse(f"{VENDOR} answered HTTP {status} unexpectedly.", excerpt=cut)


def _rate_limited(obj: Mapping[str, Any], now: datetime) -> RateLimited:
    """429: `period_end` (epoch) is when calls resume; a monthly limit means no calls until next month."""
    period = obj.get("period") if obj.get("period") in ("minute", "month") else None
    limit = _number(obj.get("limit"))
    retry_at = _epoch(obj.get("period_end"))
    if retry_at is None:  # undocumented shape: assume the short period, so polling resumes soon
        retry_at = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    what = f"{int(limit)} calls per {period}" if limit is not None and period else "its plan limit"
    stop = " No calls until next month." if period == "month" else ""
    return RateLimited(
        f"{VENDOR} reports the application used {what}; calls resume at {retry_at:%Y-%m-%d %H:%M} UTC.{stop}",
        retry_at=retry_at,
    )
