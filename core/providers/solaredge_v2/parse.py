"""Pure parsing of SolarEdge Monitoring API V2 JSON: vendor shapes in, our types out.

Kept apart from the client so every quirk is tested from JSON fixtures without a server. What these functions
absorb (the vendor facts, and where each was seen, are in docs/solaredge-v2.md):

- times are ISO-8601 with the site's numeric offset (per timestamp, so DST repeats stay distinct), `period.to`
  has up to 9 fractional digits, and a `Z` or a missing offset must still be read correctly;
- a `timestamp` labels the START of its bucket; values are W (15-minute averages) or Wh per bucket, and the
  `unit` (upper-case, but compared case-insensitively) must always be applied: W/KW/MW, WH/KWH/MWH/GWH;
- `null` means "no data" (before the first sample of the day, the in-progress bucket) and stays null;
- the site list is `{"sites": {"count", "site": [...]}}` (singular `site`), a bare array in 2022 material;
- site details are unwrapped (`{"siteId", ...}`), occasionally wrapped in `{"site": {...}}`; the zone is
  `location.timezone` (V1 spelled it `timeZone`);
- telemetry is `{meters|storage: {serial: {metric: {unit, values}}}}`, `{}` when the site has no such device;
- battery `stateOfEnergy` comes on two scales under the same `PERCENTAGE` unit: the vendor's documentation says
  0-100, the live API sends a 0-1 fraction (0.9867 for 98.67 %). The rule (`soc_factor`), per battery and per
  answer: any value above 1 means the series is already 0-100; otherwise it is a fraction and is multiplied by
  100, except under the unit `PERCENTAGE_100`, whose name says 0-100. Values cannot tell the scales apart only
  when a 0-100 battery stays at or below 1 % for a whole answer (at most 12 h); the fraction reading wins there,
  because it is the scale observed live. `soc_pct` is always 0-100;
- storage `charge*` / `discharge*` samples are magnitudes, but the live API has sent negative ones (-1,576 Wh):
  such a sample is dropped and counted (`StorageTelemetry.negative_dropped`; the client logs the count at INFO),
  and its bucket's battery power is left unknown (null), never turned into a made-up charge or discharge.

Every function raises `BadResponse` (with a short, redacted excerpt) on a shape it cannot use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.providers.answers import excerpt
from core.providers.base import BadResponse, ProviderSite, address_line
from core.roles import Role, balance_load

VENDOR = "SolarEdge"

# Seconds per bucket for the resolutions whose buckets have a fixed length; history only asks for QUARTER_HOUR.
RESOLUTION_SECONDS = {"QUARTER_HOUR": 900, "HOUR": 3600}
POWER_UNITS = {"W": 1.0, "KW": 1e3, "MW": 1e6}
ENERGY_UNITS = {"WH": 1.0, "KWH": 1e3, "MWH": 1e6, "GWH": 1e9}
# State-of-energy units: the scale is decided by `soc_factor` from the values; only PERCENTAGE_100 (in the docs' enum,
# undefined there) settles the ambiguous case for 0-100 by its name.
SOC_UNITS = frozenset({"PERCENTAGE", "PERCENTAGE_100", "PERCENT", "%"})
SOC_PERCENT_UNITS = frozenset({"PERCENTAGE_100"})
FRACTION_MAX = 1.0  # a state of energy above this cannot be a 0-1 fraction

_FRACTION = re.compile(r"(\.\d{6})\d+")

Series = dict[datetime, float | None]  # bucket start (UTC) -> value in W (or % for SOC); None = vendor said null


def _bad(what: str, body: Any) -> BadResponse:
    return BadResponse(f"{VENDOR} sent {what}; this answer was skipped.", excerpt=excerpt(body))


# --- times -----------------------------------------------------------------------------------------------------


def parse_time(text: Any, tz: ZoneInfo | None = None) -> datetime:
    """An ISO-8601 vendor time as a UTC-aware datetime.

    Fractions beyond microseconds are cut (the API sends nanoseconds in `period.to`); a time without an offset is
    site-local wall time, so it needs the site's zone, and without one it is an error rather than a guess.
    """
    if not isinstance(text, str) or not text.strip():
        raise _bad("a time that is not a string", text)
    cleaned = _FRACTION.sub(r"\1", text.strip())
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(cleaned)
    except ValueError:
        raise _bad(f"an unreadable time {text[:40]!r}", text) from None
    if value.tzinfo is None:
        if tz is None:
            raise _bad(f"a time without a UTC offset ({text[:40]!r}) and the site's time zone is unknown", text)
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """A request time: UTC with `Z`, whole seconds (a `+` offset would need `%2B` and is easy to get wrong)."""
    if value.tzinfo is None:
        raise ValueError("request times must be timezone-aware")
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_retry_after(value: str | None, now: datetime) -> datetime | None:
    """`Retry-After` as a UTC instant: delay-seconds (what Kong sends) or an HTTP date; None if absent/unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return now.astimezone(UTC) + timedelta(seconds=max(0.0, seconds))


def next_cycle_start(now: datetime, cycle_day: int) -> datetime:
    """The next billing-cycle anniversary (00:00 UTC) after `now`: when spent monthly credits come back.

    A cycle day past a month's end (e.g. 31 in April) falls on that month's last day.
    """
    now = now.astimezone(UTC)
    year, month = now.year, now.month
    for _ in range(3):
        last_day = ((datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)) - timedelta(days=1)).day
        candidate = datetime(year, month, min(cycle_day, last_day), tzinfo=UTC)
        if candidate > now:
            return candidate
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise AssertionError("unreachable: a cycle day always comes within two months")


# --- errors ----------------------------------------------------------------------------------------------------


def parse_problem(body: Any) -> str:
    """The human part of an error body: problem+json `detail`/`title`, Kong's `message`, OAuth `error_description`."""
    if not isinstance(body, Mapping):
        return ""
    for key in ("detail", "message", "error_description", "title", "error"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())[:160]
    return ""


# --- sites -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteDetails:
    """What `/sites/{id}` tells us; `last_update` is the site's last upload (UTC), None if the API left it out."""

    site_id: str
    name: str
    capacity_kw: float | None
    timezone: str | None
    last_update: datetime | None


def _number(value: Any, body: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _bad(f"a {what} that is not a number", body)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise _bad(f"a {what} that is not a number", body)


def _timezone(site: Mapping[str, Any]) -> str | None:
    location = site.get("location")
    candidates = []
    if isinstance(location, Mapping):
        candidates += [location.get("timezone"), location.get("timeZone")]
    candidates += [site.get("timezone"), site.get("timeZone")]
    for name in candidates:
        if isinstance(name, str) and name.strip():
            try:
                ZoneInfo(name.strip())
            except (ZoneInfoNotFoundError, ValueError):
                continue
            return name.strip()
    return None


def _site(item: Any, body: Any) -> SiteDetails:
    if not isinstance(item, Mapping):
        raise _bad("a site that is not an object", body)
    site_id = item.get("siteId", item.get("id"))
    if isinstance(site_id, bool) or not isinstance(site_id, int | str) or str(site_id).strip() == "":
        raise _bad("a site without a siteId", body)
    tz_name = _timezone(item)
    last_update = None
    if item.get("lastUpdateTime") is not None:
        last_update = parse_time(item["lastUpdateTime"], ZoneInfo(tz_name) if tz_name else None)
    name = item.get("name")
    return SiteDetails(
        site_id=str(site_id).strip(),
        name=name.strip() if isinstance(name, str) and name.strip() else f"Site {site_id}",
        capacity_kw=_number(item.get("peakPower"), body, "peak power"),
        timezone=tz_name,
        last_update=last_update,
    )


def parse_site_details(body: Any) -> SiteDetails:
    """`/sites/{id}`: an unwrapped object; a `{"site": {...}}` wrapper is accepted too."""
    if isinstance(body, Mapping) and "siteId" not in body and isinstance(body.get("site"), Mapping):
        body = body["site"]
    return _site(body, body)


def parse_site_list(body: Any) -> list[ProviderSite]:
    """`/sites`: `{"sites": {"count", "site": [...]}}`; `list` instead of `site`, or a bare array, also read."""
    items: Any = body
    if isinstance(body, Mapping):
        sites = body.get("sites", body.get("Sites"))
        if isinstance(sites, Mapping):
            items = sites.get("site", sites.get("list"))
            if items is None and sites.get("count") == 0:
                items = []
        else:
            items = sites
    if not isinstance(items, list):
        raise _bad("a site list in an unexpected shape", body)
    out = []
    for item in items:
        site = _site(item, body)
        place = address_line(item.get("location"))
        out.append(
            ProviderSite(
                id=site.site_id, name=site.name, timezone=site.timezone, capacity_kw=site.capacity_kw, location=place
            )
        )
    return out


def parse_device_types(body: Any) -> frozenset[str]:
    """`/sites/{id}/devices`: a bare array of devices -> their `type` values, upper case ("METER", "BATTERY")."""
    if not isinstance(body, list):
        raise _bad("a device list in an unexpected shape", body)
    return frozenset(
        item["type"].strip().upper() for item in body if isinstance(item, Mapping) and isinstance(item.get("type"), str)
    )


# --- time series -----------------------------------------------------------------------------------------------


def _scale(unit: Any, kind: str, body: Any) -> float:
    table = {"power": POWER_UNITS, "energy": ENERGY_UNITS}[kind]
    if unit is None:  # documented defaults are W and WH; a missing unit means the default
        return 1.0
    if not isinstance(unit, str) or unit.strip().upper() not in table:
        raise _bad(f"an unexpected {kind} unit {str(unit)[:20]!r}", body)
    return table[unit.strip().upper()]


def interval_seconds(resolution: Any, body: Any) -> int:
    """Bucket length for a response's `resolution`; a missing one is the documented default QUARTER_HOUR."""
    if resolution is None:
        return RESOLUTION_SECONDS["QUARTER_HOUR"]
    key = str(resolution).strip().upper()
    if key not in RESOLUTION_SECONDS:
        raise _bad(f"an unexpected resolution {str(resolution)[:20]!r}", body)
    return RESOLUTION_SECONDS[key]


def _values(series: Any, body: Any, factor: float, tz: ZoneInfo | None) -> Series:
    """`[{"timestamp", "value"}]` -> {UTC bucket start: value * factor}; later duplicates win."""
    if series is None:
        return {}
    if not isinstance(series, list):
        raise _bad("a value list that is not a list", body)
    out: Series = {}
    for point in series:
        if not isinstance(point, Mapping) or "timestamp" not in point:
            raise _bad("a value without a timestamp", body)
        raw = _number(point.get("value"), body, "value")
        out[parse_time(point["timestamp"], tz)] = None if raw is None else raw * factor
    return out


def parse_power(body: Any, tz: ZoneInfo | None = None) -> tuple[int, Series]:
    """`/sites/{id}/power`: (bucket seconds, {bucket start UTC: average W}). Values are already averages."""
    if not isinstance(body, Mapping) or "values" not in body:
        raise _bad("a power series in an unexpected shape", body)
    interval = interval_seconds(body.get("resolution"), body)
    return interval, _values(body["values"], body, _scale(body.get("unit"), "power", body), tz)


def _devices(body: Any, key: str) -> tuple[int, dict[str, Mapping[str, Any]]]:
    if not isinstance(body, Mapping) or key not in body:
        raise _bad(f"telemetry without a {key!r} map", body)
    interval = interval_seconds(body.get("resolution"), body)
    devices = body[key]
    if devices is None or devices == []:
        return interval, {}
    if not isinstance(devices, Mapping) or not all(isinstance(v, Mapping) for v in devices.values()):
        raise _bad(f"a {key!r} map in an unexpected shape", body)
    return interval, {str(serial): metrics for serial, metrics in devices.items()}


def _metric_w(metrics: Mapping[str, Any], base: str, interval: int, body: Any, tz: ZoneInfo | None) -> Series | None:
    """One device's `<base>Energy` as average W (exact for the bucket), else its `<base>Power`; None if neither.

    Energy is preferred: Wh per bucket is unambiguously the bucket's total, while telemetry power could be a
    sample. Metric names are matched case-insensitively.
    """
    lowered = {str(k).lower(): v for k, v in metrics.items()}
    energy, power = lowered.get(f"{base}energy".lower()), lowered.get(f"{base}power".lower())
    for metric, kind in ((energy, "energy"), (power, "power")):
        if isinstance(metric, Mapping):
            factor = _scale(metric.get("unit"), kind, body)
            if kind == "energy":
                factor *= 3600.0 / interval
            values = _values(metric.get("values"), body, factor, tz)
            if values or metric is power or power is None:
                return values
    if energy is not None or power is not None:
        raise _bad(f"a {base} metric that is not an object", body)
    return None


def _sum(series: list[Series]) -> Series | None:
    """Per-bucket sum across devices; null if any device reported null for a bucket it lists."""
    if not series:
        return None
    out: Series = {}
    for one in series:
        for ts, value in one.items():
            if ts in out:
                previous = out[ts]
                out[ts] = None if previous is None or value is None else previous + value
            else:
                out[ts] = value
    return out


def parse_meters(body: Any, tz: ZoneInfo | None = None) -> tuple[int, dict[str, Series]]:
    """`/sites/{id}/meters/telemetry` -> {"import"|"export"|"consumption"|"production": W series summed over meters}.

    A key is present only if at least one meter reports that metric (a grid meter reports import/export only);
    `"meters": {}` gives an empty dict, which is a normal answer for a site without meters.
    """
    interval, meters = _devices(body, "meters")
    out: dict[str, Series] = {}
    for base in ("import", "export", "consumption", "production"):
        found = [s for m in meters.values() if (s := _metric_w(m, base, interval, body, tz)) is not None]
        total = _sum(found)
        if total is not None:
            out[base] = total
    return interval, out


def soc_factor(unit: Any, values: Iterable[float | None], body: Any) -> float:
    """What turns one battery's `stateOfEnergy` values into %: 100 for a 0-1 fraction, 1 for a 0-100 series.

    The rule is in the module docstring (and docs/solaredge-v2.md): a value above 1 settles 0-100; otherwise the
    series is a fraction, unless the unit is `PERCENTAGE_100`. An unknown unit is an error, not a guess.
    """
    name = None if unit is None else str(unit).strip().upper()
    if unit is not None and (not isinstance(unit, str) or name not in SOC_UNITS):
        raise _bad(f"an unexpected state-of-energy unit {str(unit)[:20]!r}", body)
    present = [v for v in values if v is not None]
    if any(v > FRACTION_MAX for v in present) or name in SOC_PERCENT_UNITS:
        return 1.0
    return 100.0


@dataclass(frozen=True)
class StorageTelemetry:
    """`/storage/telemetry` read: bucket seconds, {"battery", "soc"} series, and negative samples dropped."""

    interval: int
    series: dict[str, Series]
    negative_dropped: int


def _without_negatives(series: Series | None) -> tuple[Series | None, int]:
    """A charge/discharge series with negative samples made null (unknown), and how many there were."""
    if series is None:
        return None, 0
    dropped = sum(1 for v in series.values() if v is not None and v < 0)
    if not dropped:
        return series, 0
    return {ts: (None if v is not None and v < 0 else v) for ts, v in series.items()}, dropped


def read_storage(body: Any, tz: ZoneInfo | None = None) -> StorageTelemetry:
    """`/sites/{id}/storage/telemetry` -> battery W (discharge - charge, all batteries) and mean state of energy %.

    A negative charge or discharge sample is dropped (its bucket's battery power is null) and counted; the state
    of energy is scaled to 0-100 per battery by `soc_factor`.
    """
    interval, batteries = _devices(body, "storage")
    out: dict[str, Series] = {}
    flows: list[Series] = []
    dropped = 0
    for metrics in batteries.values():
        charge, negative_charge = _without_negatives(_metric_w(metrics, "charge", interval, body, tz))
        discharge, negative_discharge = _without_negatives(_metric_w(metrics, "discharge", interval, body, tz))
        dropped += negative_charge + negative_discharge
        if charge is None and discharge is None:
            continue
        net: Series = {}
        for ts in sorted(set(charge or {}) | set(discharge or {})):
            c = (charge or {}).get(ts, 0.0 if charge is None else None)
            d = (discharge or {}).get(ts, 0.0 if discharge is None else None)
            net[ts] = None if c is None or d is None else d - c
        flows.append(net)
    battery = _sum(flows)
    if battery is not None:
        out["battery"] = battery
    socs: list[Series] = []
    for metrics in batteries.values():
        lowered = {str(k).lower(): v for k, v in metrics.items()}
        metric = lowered.get("stateofenergy")
        if isinstance(metric, Mapping):
            raw = _values(metric.get("values"), body, 1.0, tz)
            factor = soc_factor(metric.get("unit"), raw.values(), body)
            socs.append({ts: None if v is None else v * factor for ts, v in raw.items()})
    if socs:
        stamps = sorted(set().union(*socs))
        soc: Series = {}
        for ts in stamps:
            present = [v for s in socs if (v := s.get(ts)) is not None]
            soc[ts] = sum(present) / len(present) if present else None
        out["soc"] = soc
    return StorageTelemetry(interval, out, dropped)


def parse_storage(body: Any, tz: ZoneInfo | None = None) -> tuple[int, dict[str, Series]]:
    """`read_storage` without the count: (bucket seconds, {"battery": W, "soc": %})."""
    found = read_storage(body, tz)
    return found.interval, found.series


def combine_channels(pv: Series, meters: Mapping[str, Series], storage: Mapping[str, Series]) -> dict[str, Series]:
    """Our channels from what V2 offers: PV from `/power`, grid and load from meters, battery and SOC from storage.

    Without a consumption metric, load follows from the energy balance (`core.roles.balance_load`:
    `pv + grid_import + battery = load + grid_export`, the derivation live clients check against real totals:
    self-consumption = production - export, consumption = self-consumption + import). A null PV bucket counts as
    0 W there, because `/power` is null all night until the inverter wakes up while the meter keeps measuring;
    a null meter or battery bucket makes the derived load null; a site without storage has no battery term.
    """
    out: dict[str, Series] = {"pv_w": dict(pv)}
    if "import" in meters:
        out["grid_import_w"] = dict(meters["import"])
    if "export" in meters:
        out["grid_export_w"] = dict(meters["export"])
    if "battery" in storage:
        out["battery_w"] = dict(storage["battery"])
    if "soc" in storage:
        out["soc_pct"] = dict(storage["soc"])
    if "consumption" in meters:
        out["load_w"] = dict(meters["consumption"])
    elif "import" in meters and "export" in meters:
        battery = storage.get("battery")
        load: Series = {}
        for ts in sorted(set(pv) | set(meters["import"]) | set(meters["export"])):
            flows = {
                Role.PRODUCTION: pv.get(ts) or 0.0,
                Role.GRID_IMPORT: meters["import"].get(ts),
                Role.GRID_EXPORT: meters["export"].get(ts),
            }
            if battery is not None:
                flows[Role.BATTERY] = battery.get(ts)
            load[ts] = balance_load(flows)
        out["load_w"] = load
    return out
