"""Pure parsers for SolarEdge Monitoring API V1 answers: vendor JSON in, our types out.

Kept apart from the client so every quirk is tested from JSON fixtures without a server (where each fixture's shape
was observed: tests/fixtures/solaredge_v1/PROVENANCE.md). The V1 quirks this relies on:

- Every date-time is a naive *site-local* string ("2026-10-25 02:15:00", sometimes date-only "2018-11-14"). The
  site's IANA zone comes from `details.location.timeZone`. Local labels repeat in the autumn hour (fold) and skip
  the spring hour (gap), and nothing in the string disambiguates, so series are converted in order
  (`local_series_to_utc`).
- `powerDetails`/`energyDetails` omit the `value` key for a slot without data, `power`/`energy` give `null`; a
  site without a meter answers `"meters": []`. Meter `type`s are CamelCase in answers, upper case in requests.
- `currentPowerFlow` gives unsigned powers in `unit` "kW" (real captures) or "W" (doc sample), with the direction
  in `connections` whose element names come in mixed case ("GRID", "Load", "Storage"); it is `{}` for a site that
  cannot measure the flow, and STORAGE may be empty.
- `sites/list` wraps its items in `sites.site` (real) or `Sites.list` (doc sample).

Every function raises `BadResponse` (with a short, redacted excerpt) for a shape it cannot read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from core.providers.answers import EXCERPT_CHARS, excerpt
from core.providers.base import (
    READINGS_SCHEMA,
    BadResponse,
    ProviderSite,
    empty_readings,
    normalise_readings,
)
from core.providers.http import redact
from core.providers.solaredge_v1.spec import VENDOR

LOCAL_FORMAT = "%Y-%m-%d %H:%M:%S"

# Meter types as the answers spell them (CamelCase), lower-cased, to our channels. SelfConsumption is virtual
# (production minus feed-in) and adds nothing the other four do not carry.
METER_CHANNELS = {
    "production": "pv_w",
    "consumption": "load_w",
    "purchased": "grid_import_w",
    "feedin": "grid_export_w",
}
# What the client asks for (the doc's request example uses upper case).
REQUEST_METERS = "PRODUCTION,CONSUMPTION,FEEDIN,PURCHASED"
TIME_UNIT_SECONDS = {"QUARTER_OF_AN_HOUR": 900, "HOUR": 3600}
_POWER_UNITS = {"w": 1.0, "kw": 1000.0, "mw": 1_000_000.0}
_ENERGY_UNITS = {"wh": 1.0, "kwh": 1000.0, "mwh": 1_000_000.0}


@dataclass(frozen=True)
class SiteDetails:
    """The parts of `/site/{id}/details` we use; `last_update_local` is naive site-local time."""

    id: str
    name: str
    capacity_kw: float | None
    timezone: str | None
    last_update_local: datetime | None


@dataclass(frozen=True)
class Overview:
    """The parts of `/site/{id}/overview` we use: PV power now (W) and when the site last reported (local)."""

    current_power_w: float | None
    last_update_local: datetime | None


# --- helpers ------------------------------------------------------------------------------------------------


def _bad(what: str, data: object) -> BadResponse:
    return BadResponse(f"{VENDOR} answered an unexpected {what}; the answer was skipped.", excerpt(data))


def _object(payload: object, key: str) -> dict[str, Any]:
    """`payload[key]` as a dict, matching the key case-insensitively (the doc and real answers disagree on case)."""
    if isinstance(payload, dict):
        for name, value in payload.items():
            if isinstance(name, str) and name.lower() == key.lower() and isinstance(value, dict):
                return value
    raise _bad(f"shape (no '{key}' object)", payload)


def _number(value: object, what: str, data: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{what} value {value!r}", data)
    return float(value)


def parse_local_time(text: object) -> datetime | None:
    """A vendor date-time as naive local time; date-only strings (seen in real answers) mean local midnight."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise _bad(f"date {text!r}", text)
    cleaned = text.strip().replace("T", " ")
    for fmt in (LOCAL_FORMAT, "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(cleaned, fmt)
        except ValueError:
            continue
    raise _bad(f"date {text!r}", text)


def zone_for(name: str | None) -> ZoneInfo | None:
    """The IANA zone for a `timeZone` field, or None when it is missing or unknown."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def format_local(instant: datetime, zone: ZoneInfo) -> str:
    """A UTC instant as the naive site-local string V1 expects in `startTime`/`endTime`."""
    return instant.astimezone(zone).strftime(LOCAL_FORMAT)


def _exists(naive: datetime, zone: ZoneInfo, fold: int) -> datetime | None:
    """The UTC instant for a local wall time with `fold`, or None if that wall time never happens (spring gap)."""
    utc = naive.replace(tzinfo=zone, fold=fold).astimezone(UTC)
    return utc if utc.astimezone(zone).replace(tzinfo=None) == naive else None


def local_to_utc(naive: datetime, zone: ZoneInfo) -> datetime:
    """One isolated local time to UTC: the first occurrence in a fold; a gap time moves forward by the gap."""
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)


def local_series_to_utc(labels: Sequence[datetime], zone: ZoneInfo) -> list[datetime | None]:
    """Chronological naive local labels to UTC, resolving DST by order.

    Autumn: the repeated hour's labels come twice; the first pass is the earlier instant (fold=0) and, once the
    labels go back in time, the second pass is the later one (fold=1). Spring: labels inside the skipped hour name
    no instant; they map to None (the caller drops them) rather than colliding with the hour after the change.
    """
    out: list[datetime | None] = []
    previous: datetime | None = None
    second_pass = False
    for naive in labels:
        first, second = _exists(naive, zone, 0), _exists(naive, zone, 1)
        if first is None or second is None or first == second:
            second_pass = False  # unambiguous (or nonexistent): any repeated hour is over
            out.append(first or second)
        else:
            if previous is not None and naive <= previous:
                second_pass = True  # the clock went back: this is the repeated hour's second pass
            out.append(second if second_pass else first)
        previous = naive
    return out


# --- endpoints ----------------------------------------------------------------------------------------------


def parse_details(payload: object) -> SiteDetails:
    """`{"details": {...}}`: name, peak power (kWp), IANA zone and last update."""
    details = _object(payload, "details")
    site_id, name = details.get("id"), details.get("name")
    if site_id is None or not isinstance(name, str):
        raise _bad("site details (no id or name)", payload)
    location = details.get("location") if isinstance(details.get("location"), dict) else {}
    zone = location.get("timeZone") if isinstance(location, dict) else None
    return SiteDetails(
        id=str(site_id),
        name=name,
        capacity_kw=_number(details.get("peakPower"), "peakPower", payload),
        timezone=zone if isinstance(zone, str) and zone else None,
        last_update_local=parse_local_time(details.get("lastUpdateTime")),
    )


def parse_sites_list(payload: object) -> tuple[list[ProviderSite], int]:
    """`{"sites": {"count": N, "site": [...]}}` (real) or `{"Sites": {"count": N, "list": [...]}}` (doc sample).

    Returns the sites on this page and the total count the vendor reports (for paging).
    """
    sites = _object(payload, "sites")
    items = sites.get("site", sites.get("list"))
    if items is None:
        items = []
    if isinstance(items, dict):  # XML-to-JSON converters collapse a single item into an object
        items = [items]
    if not isinstance(items, list):
        raise _bad("site list", payload)
    out = []
    for item in items:
        if not isinstance(item, dict) or item.get("id") is None:
            raise _bad("site list item", item)
        location = item.get("location") if isinstance(item.get("location"), dict) else {}
        zone = location.get("timeZone") if isinstance(location, dict) else None
        out.append(
            ProviderSite(
                id=str(item["id"]),
                name=str(item.get("name") or item["id"]),
                timezone=zone if isinstance(zone, str) and zone else None,
                capacity_kw=_number(item.get("peakPower"), "peakPower", item),
            )
        )
    count = sites.get("count")
    return out, count if isinstance(count, int) and not isinstance(count, bool) else len(out)


def parse_overview(payload: object) -> Overview:
    """`{"overview": {"lastUpdateTime": ..., "currentPower": {"power": W}, ...}}`; `revenue` may be absent."""
    overview = _object(payload, "overview")
    current = overview.get("currentPower")
    power = _number(current.get("power"), "currentPower", payload) if isinstance(current, dict) else None
    return Overview(current_power_w=power, last_update_local=parse_local_time(overview.get("lastUpdateTime")))


def _scale(unit: object, table: Mapping[str, float], default: str, data: object) -> float:
    key = (unit if isinstance(unit, str) else default).strip().lower()
    if key not in table:
        raise _bad(f"unit {unit!r}", data)
    return table[key]


def parse_power_flow(payload: object) -> dict[str, float]:
    """`siteCurrentPowerFlow` to signed channels in W (battery > 0 discharging); `{}` when the site cannot measure.

    `currentPower` is never negative: the direction comes from `connections` (names compared case-insensitively),
    then from the STORAGE status ("Charging"/"Discharging"), then from the energy balance
    `pv + import + battery = load + export` when only one of grid and battery is still unknown.
    """
    flow = _object(payload, "siteCurrentPowerFlow")
    if not flow:
        return {}
    scale = _scale(flow.get("unit"), _POWER_UNITS, "W", payload)
    elements = {k.upper(): v for k, v in flow.items() if isinstance(v, dict)}
    links: set[tuple[str, str]] = set()
    for link in flow.get("connections") or []:
        if isinstance(link, dict) and isinstance(link.get("from"), str) and isinstance(link.get("to"), str):
            links.add((link["from"].upper(), link["to"].upper()))

    def power(name: str) -> float | None:
        element = elements.get(name) or {}
        value = _number(element.get("currentPower"), f"{name} currentPower", payload)
        return None if value is None else abs(value) * scale

    pv, load, grid, storage = power("PV"), power("LOAD"), power("GRID"), power("STORAGE")
    out: dict[str, float] = {}
    if pv is not None:
        out["pv_w"] = pv
    if load is not None:
        out["load_w"] = load

    grid_sign: float | None = None  # +1 import, -1 export
    if grid is not None:
        if grid == 0 or any(src == "GRID" for src, _ in links):
            grid_sign = 1.0
        elif any(dst == "GRID" for _, dst in links):
            grid_sign = -1.0
    battery_sign: float | None = None  # +1 discharging, -1 charging
    if storage is not None:
        status = str(elements["STORAGE"].get("status", "")).lower()
        if storage == 0 or any(src == "STORAGE" for src, _ in links) or status == "discharging":
            battery_sign = 1.0
        elif any(dst == "STORAGE" for _, dst in links) or status == "charging":
            battery_sign = -1.0

    balance_base = (load or 0.0) - (pv or 0.0)  # = import - export + ... - battery
    if grid is not None and grid_sign is None and (storage is None or battery_sign is not None):
        battery_w = (battery_sign or 0.0) * (storage or 0.0)
        grid_sign = 1.0 if balance_base - battery_w >= 0 else -1.0
    if storage is not None and battery_sign is None and (grid is None or grid_sign is not None):
        grid_w = (grid_sign or 0.0) * (grid or 0.0)
        battery_sign = 1.0 if balance_base - grid_w >= 0 else -1.0

    if grid is not None and grid_sign is not None:
        out["grid_import_w"] = grid if grid_sign > 0 else 0.0
        out["grid_export_w"] = grid if grid_sign < 0 else 0.0
    if storage is not None and battery_sign is not None:
        out["battery_w"] = battery_sign * storage if storage else 0.0
    charge = elements.get("STORAGE", {}).get("chargeLevel")
    soc = _number(charge, "chargeLevel", payload) if charge is not None else None
    if soc is not None:
        out["soc_pct"] = soc
    return out


def parse_meter_readings(
    payload: object, root: Literal["powerDetails", "energyDetails"], zone: ZoneInfo
) -> pl.DataFrame:
    """`powerDetails`/`energyDetails` meters to readings: `ts` = UTC start of each slot, average W per slot.

    Energy (Wh per slot) becomes W by `* 3600 / interval_s`. A slot whose `value` key is missing or null stays
    null. Labels inside a spring-forward gap are dropped (no real instant); labels in the autumn fold are split by
    order (see `local_series_to_utc`).
    """
    body = _object(payload, root)
    time_unit = body.get("timeUnit", "QUARTER_OF_AN_HOUR")
    interval_s = TIME_UNIT_SECONDS.get(str(time_unit).upper()) if isinstance(time_unit, str) else None
    if interval_s is None:
        raise _bad(f"timeUnit {time_unit!r}", payload)
    if root == "energyDetails":
        factor = _scale(body.get("unit"), _ENERGY_UNITS, "Wh", payload) * 3600.0 / interval_s
    else:
        factor = _scale(body.get("unit"), _POWER_UNITS, "W", payload)
    meters = body.get("meters")
    if meters is None:
        meters = []
    if not isinstance(meters, list):
        raise _bad(f"{root} meters", payload)
    ts: list[datetime] = []
    channels: list[str] = []
    values: list[float | None] = []
    for meter in meters:
        if not isinstance(meter, dict) or not isinstance(meter.get("type"), str):
            raise _bad(f"{root} meter", meter)
        channel = METER_CHANNELS.get(meter["type"].lower())
        entries = meter.get("values") or []
        if channel is None:
            continue
        if not isinstance(entries, list):
            raise _bad(f"{root} values", meter)
        labels = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise _bad(f"{root} value entry", entry)
            label = parse_local_time(entry.get("date"))
            if label is None:
                raise _bad(f"{root} value entry (no date)", entry)
            labels.append(label)
        for entry, instant in zip(entries, local_series_to_utc(labels, zone), strict=True):
            if instant is None:
                continue
            value = _number(entry.get("value"), f"{root} {meter['type']}", entry)
            ts.append(instant)
            channels.append(channel)
            values.append(None if value is None else value * factor)
    if not ts:
        return empty_readings()
    frame = pl.DataFrame(
        {"ts": ts, "interval_s": [interval_s] * len(ts), "channel": channels, "value": values},
        schema=READINGS_SCHEMA,
    )
    return normalise_readings(frame)


def slice_readings(frame: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """Rows whose `ts` lies in [start, end): drops the padding the client asks for around each window."""
    return frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end))


# --- error bodies -------------------------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]+>")
_RANGE_WORDS = re.compile(
    r"(?i)time\s*frame|date\s*range|time\s*range|period|exceed|too\s+long|too\s+large|maximum|not\s+be\s+more|"
    r"(start|end)(time|date)|one\s+(month|year|week)|\b\d+\s+days?\b|timeunit"
)


def error_text(body: str) -> str:
    """The vendor's own words from an error body: `{"String": ...}`, problem+json `detail`/`title`, or HTML.

    For HTML (Tomcat-style pages, as clambin/solaredge parses them) the text after "Message" wins, else the title.
    """
    text = body.strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("String", "detail", "title", "message", "error_description", "error"):
            if isinstance(data.get(key), str) and data[key].strip():
                return redact(data[key].strip()[:EXCERPT_CHARS])
    if "<" in text and ">" in text:
        parts = [p.strip() for p in _TAG.sub("\n", text).splitlines() if p.strip()]
        for i, part in enumerate(parts):
            if part == "Message" and i + 1 < len(parts):
                return redact(parts[i + 1][:EXCERPT_CHARS])
            if part.startswith("Message "):
                return redact(part[len("Message ") :][:EXCERPT_CHARS])
        return redact(parts[0][:EXCERPT_CHARS]) if parts else ""
    return redact(text[:EXCERPT_CHARS])


def is_range_error(text: str) -> bool:
    """Does a 403 description complain about the requested time range (a usage error) rather than access?"""
    return bool(_RANGE_WORDS.search(text))


def retry_after(value: str | None, now: datetime) -> datetime | None:
    """A `Retry-After` header (seconds or HTTP date) as a UTC instant; V1 documents none, but honour one if sent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return now + timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
