"""A fake SolarEdge Monitoring API V2, faithful to the vendor facts in docs/solaredge-v2.md, serving simulator data
for any range in V2's conventions.

Run it by hand: `python -m tests.fakes.solaredge_v2 --port 8701`, base URL `http://127.0.0.1:8701/v2`,
API key `SANDBOX_API_KEY`, sites `SANDBOX_SITE_IDS`. Everything lives under `/v2`:

    GET  /v2/sites                                  site list (API key only)
    GET  /v2/sites/{id}                             details (unwrapped)
    GET  /v2/sites/{id}/overview                    today's running totals
    GET  /v2/sites/{id}/power | /energy             time series (W 15-minute averages | Wh per bucket)
    GET  /v2/sites/{id}/meters/telemetry            import/export/consumption (needs DEVICE_DATA for tokens)
    GET  /v2/sites/{id}/storage[/{serials}]/telemetry
    GET  /v2/sites/{id}/inverters/telemetry
    GET  /v2/sites/{id}/devices                     bare array, INVERTER only unless `types` is given
    GET  /v2/sites/{id}/alerts, /v2/alerts          bare arrays
    GET  /v2/sites/{id}/environmental-benefits      provisional body (real shape unknown)
    GET  /v2/sites/{id}/power-flow                  Advanced tier only (403 for basic keys)
    POST /v2/oauth2/token, /v2/oauth2/revoke-token  Site Access (JSON bodies)

Authentication, per-minute windows (fixed wall-clock minutes), monthly credits (billing-cycle anniversary,
optionally persisted), range limits, null rules and failure switches are all on `FakeState`; its clock can be
driven by tests (`clock`). Unknown choices of the real API (401 body, 403 vs 404 for an unknown site, whether
4xx cost credits, the 7-day QUARTER_HOUR variant) are switches with the most likely value as default.

Battery quirks seen in the field are switches too: `soe_scale` ("fraction", as the live API sends
`stateOfEnergy`, by default; "percent" for the documented 0-100) and `negative_charge` (bucket start -> a negative
`chargeEnergy` sample in Wh served for that bucket instead of the real one).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import polars as pl
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.providers.quota import QuotaLedger
from core.providers.simulator.client import SimulatedSite, simulate
from core.providers.solaredge_v2.client import SolarEdgeV2Client
from tests.fakes.server import FailureSwitch

SANDBOX_API_KEY = "sandbox-solaredge-key"
SANDBOX_ACCOUNT_KEY = "sandbox-solaredge-account-key"  # optional X-Account-Key: accepted and ignored
SANDBOX_CLIENT_ID = "sandbox-solaredge-client"
SANDBOX_CLIENT_SECRET = "sandbox-solaredge-client-secret"
SANDBOX_SITE_IDS = (3066774, 1234567, 2345678)
PROBLEM_TYPE = "https://se-api.stoplight.io/docs/monitoring"
RESOLUTIONS = ("QUARTER_HOUR", "HOUR", "DAY", "WEEK", "MONTH", "YEAR", "TOTAL")
SUB_DAILY = {"QUARTER_HOUR": timedelta(minutes=15), "HOUR": timedelta(hours=1)}
POWER_UNITS = {"W": 1.0, "KW": 1e3, "MW": 1e6}
ENERGY_UNITS = {"WH": 1.0, "KWH": 1e3, "MWH": 1e6, "GWH": 1e9}
DEVICE_TYPES = ("INVERTER", "BATTERY", "BATTERY_MODULE", "OPTIMIZER", "METER", "EV_CHARGER", "BUI", "GATEWAY")
ACCESS_TOKEN_S = 7200
REFRESH_IDLE = timedelta(days=30)
_QUARTER = timedelta(minutes=15)


# --- state -----------------------------------------------------------------------------------------------------


@dataclass
class FakeSite:
    """One site: PV always; a grid meter (+ a consumption meter) and a battery when configured."""

    site_id: int
    name: str
    timezone: str
    peak_power_kw: float
    latitude: float
    longitude: float
    has_meter: bool = False
    consumption_meter: bool = True  # False: only import/export, clients must derive the load
    battery_kwh: float = 0.0  # 0 = no battery
    optimizers: int = 0
    installation_date: datetime = field(default_factory=lambda: datetime(2024, 4, 1, 8, tzinfo=UTC))
    activation_status: str = "ACTIVE"
    seed: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def simulated(self) -> SimulatedSite:
        # A site without a battery must not move energy through one: the simulator's battery is then 0 kWh.
        return SimulatedSite(
            self.latitude, self.longitude, self.timezone, self.peak_power_kw, self.battery_kwh, seed=self.seed
        )

    @property
    def inverter_serial(self) -> str:
        return f"7E{self.site_id % 100000:05d}B5-67"

    @property
    def meter_serials(self) -> tuple[str, str]:
        return f"51{self.site_id % 100000:05d}", f"52{self.site_id % 100000:05d}"

    @property
    def battery_serial(self) -> str:
        return f"BATT-{self.site_id}"


@dataclass
class Grant:
    """A Site Access grant: one site, its scopes, and the current access/refresh token pair."""

    site_id: int
    scopes: frozenset[str]
    client_id: str
    access_token: str
    access_expires: datetime
    refresh_token: str
    refresh_last_used: datetime
    revoked: bool = False


def sandbox_sites() -> list[FakeSite]:
    return [
        FakeSite(3066774, "Sandbox Home", "Europe/London", 5.68, 51.5, -0.12, optimizers=14, seed=1),
        FakeSite(
            1234567, "Sandbox Office", "America/Chicago", 7.6, 41.88, -87.63, has_meter=True, battery_kwh=10.0, seed=2
        ),
        FakeSite(
            2345678,
            "Sandbox New Build",
            "Europe/Brussels",
            4.2,
            50.85,
            4.35,
            activation_status="PENDING",
            alerts=[
                {
                    "alertId": 112957209,
                    "siteId": 2345678,
                    "category": "EQUIPMENT",
                    "type": "SITE_COMMUNICATION_FAULT",
                    "impact": 7,
                    "status": "OPEN",
                    "firstTrigger": "2026-09-28T23:07:18Z",
                    "lastTrigger": "2026-09-28T23:07:18Z",
                    "component": {"name": "Inverter 1", "serialNumber": "7E45678B5-67"},
                    "errorCodes": [],
                }
            ],
        ),
    ]


FLEET_ZONES = (
    ("Europe/Brussels", 50.85, 4.35),
    ("Europe/London", 51.5, -0.12),
    ("America/Chicago", 41.88, -87.63),
    ("Australia/Sydney", -33.87, 151.21),
)


def fleet_sites(count: int, first_id: int = 4_000_001) -> list[FakeSite]:
    """An installer's account of `count` sites (ids from `first_id`): every third has meters, every fifth a battery.
    Serve it with `FakeState(sites=fleet_sites(50))`; the site list pages as the vendor's (`sites-in-page`)."""
    sites = []
    for n in range(count):
        zone, lat, lon = FLEET_ZONES[n % len(FLEET_ZONES)]
        site = FakeSite(first_id + n, f"Fleet Site {n + 1:03d}", zone, round(3.0 + (n % 9) * 0.75, 2), lat, lon)
        site.has_meter, site.battery_kwh, site.seed = n % 3 == 0, 10.0 if n % 5 == 0 else 0.0, n
        sites.append(site)
    return sites


@dataclass
class FakeState:
    """Everything the fake knows and counts; tests change the switches directly."""

    sites: list[FakeSite] = field(default_factory=sandbox_sites)
    api_keys: set[str] = field(default_factory=lambda: {SANDBOX_API_KEY})
    key_sites: dict[str, set[int]] = field(default_factory=dict)  # keys limited to some sites (others: 403)
    advanced_keys: set[str] = field(default_factory=set)  # Business Pro / Enterprise keys (power-flow)
    oauth_clients: dict[str, str] = field(default_factory=lambda: {SANDBOX_CLIENT_ID: SANDBOX_CLIENT_SECRET})
    per_minute_limit: int = 10
    monthly_credits: int = 2000
    billing_cycle_day: int = 1
    charge_4xx: bool = True  # whether 4xx answers (other than 429) cost a monthly credit: unknown, switch
    quarter_hour_max: timedelta = timedelta(hours=12)  # set to 7 days for the variant one client reports
    week_max: timedelta | None = None
    month_max: timedelta | None = None
    unauthorized_body: Literal["problem", "problem_v1", "oauth"] = "problem"
    ratelimit_headers_on_401: bool = False
    rate_limit_body: Literal["problem", "kong"] = "problem"
    bearer_on_fleet_status: int = 403  # /sites and /alerts with a token: status not recorded
    unknown_site_status: int = 403  # 403 or 404: not recorded
    retire_v1: bool = False  # paths outside /v2 answer 410 (V1 retired) instead of 404
    publish_delay: timedelta = timedelta(minutes=3)  # a closed quarter-hour appears a few minutes later
    soe_scale: Literal["fraction", "percent"] = "fraction"  # live answers are 0-1; the docs say 0-100
    negative_charge: dict[datetime, float] = field(default_factory=dict)  # bucket start (UTC) -> negative Wh sample
    latency_s: float = 0.0
    failures: FailureSwitch = field(default_factory=FailureSwitch)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    state_file: Path | None = None  # monthly credit counts survive a restart when set
    # counters
    calls_total: int = 0
    calls: Counter[tuple[str, int | None]] = field(default_factory=Counter)
    largest_window: timedelta = timedelta(0)
    minute_used: dict[tuple[str, datetime], int] = field(default_factory=dict)
    credits_used: dict[str, int] = field(default_factory=dict)  # "<credential label>|<cycle start>" -> credits
    grants: list[Grant] = field(default_factory=list)
    codes: dict[str, tuple[int, frozenset[str], str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state_file is not None and self.state_file.exists():
            self.credits_used = {str(k): int(v) for k, v in json.loads(self.state_file.read_text()).items()}

    def now(self) -> datetime:
        return self.clock().astimezone(UTC)

    def site(self, site_id: int) -> FakeSite | None:
        return next((s for s in self.sites if s.site_id == site_id), None)

    def cycle_start(self, now: datetime) -> datetime:
        """The billing cycle containing `now` starts on the latest anniversary (day clamped to month length)."""
        year, month = now.year, now.month
        for _ in range(3):
            last = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
            start = datetime(year, month, min(self.billing_cycle_day, last), tzinfo=UTC)
            if start <= now:
                return start
            year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        raise AssertionError("unreachable")

    def charge_credit(self, label: str, now: datetime) -> None:
        key = f"{label}|{self.cycle_start(now).date().isoformat()}"
        self.credits_used[key] = self.credits_used.get(key, 0) + 1
        if self.state_file is not None:
            self.state_file.write_text(json.dumps(self.credits_used))

    def credits_spent(self, label: str, now: datetime) -> int:
        return self.credits_used.get(f"{label}|{self.cycle_start(now).date().isoformat()}", 0)

    def authorize(
        self,
        site_id: int,
        scopes: Iterable[str] = ("SITE_DATA", "DEVICE_DATA"),
        external_id: str = "ext-1",
        client_id: str = SANDBOX_CLIENT_ID,
    ) -> dict[str, str]:
        """What the owner's consent in SolarEdge Connect sends to the callback: a single-use code for one site."""
        code = secrets.token_urlsafe(16)
        self.codes[code] = (site_id, frozenset(scopes), client_id)
        return {"code": code, "site_id": str(site_id), "external_id": external_id}


def label(credential: str) -> str:
    """Counters are keyed by a hash, so the fake's own state never holds a credential in clear."""
    return hashlib.sha256(credential.encode()).hexdigest()[:12]


@dataclass
class Identity:
    label: str
    kind: Literal["key", "token"]
    sites: set[int] | None  # None = every site
    scopes: frozenset[str]
    advanced: bool = False


# --- responses -------------------------------------------------------------------------------------------------

_BASE_HEADERS = {
    "cache-control": "no-cache, no-store, max-age=0, must-revalidate",
    "pragma": "no-cache",
    "expires": "0",
    "access-control-allow-origin": "*",
    "via": "kong/3.7.1",
}


def _headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **_BASE_HEADERS,
        "x-kong-request-id": secrets.token_hex(16),
        "x-kong-upstream-latency": "85",
        "x-kong-proxy-latency": "1",
        **(extra or {}),
    }


def _json(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, headers=_headers(), media_type="application/json")


def _problem(status: int, title: str, detail: str) -> Response:
    body = {"type": PROBLEM_TYPE, "title": title, "status": status, "detail": detail, "traceId": secrets.token_hex(16)}
    return JSONResponse(body, status_code=status, headers=_headers(), media_type="application/problem+json")


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=_headers())


def _not_found() -> Response:
    return _problem(404, "Not Found", "Unknown endpoint")


def _bad_request(detail: str) -> Response:
    return _problem(400, "Bad Request", detail)


def _unauthorized(state: FakeState) -> Response:
    if state.unauthorized_body == "oauth":
        return _oauth_error("invalid_request", "The access token is missing", 401)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE,
        "title": "Unauthorized - Authentication Failed",
        "status": 401,
        "detail": "Invalid API key",
    }
    if state.unauthorized_body == "problem_v1":
        body |= {"instance": None, "properties": {"traceId": secrets.token_hex(16)}}
    else:
        body["traceId"] = secrets.token_hex(16)
    return JSONResponse(body, status_code=401, headers=_headers(), media_type="application/problem+json")


def _too_many(state: FakeState, detail: str) -> Response:
    if state.rate_limit_body == "kong":
        return JSONResponse({"message": "API rate limit exceeded"}, status_code=429, headers=_headers())
    return _problem(429, "Too Many Requests", detail)


def _seconds_to_next_minute(now: datetime) -> int:
    return max(1, math.ceil(60 - now.second - now.microsecond / 1e6))


_HTML_502 = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
    "<hr><center>cloudflare</center></body></html>"
)
_HTML_MAINTENANCE = (
    "<!DOCTYPE html><html><head><title>SolarEdge - Maintenance</title></head><body><h1>We'll be back soon</h1>"
    "<p>The monitoring platform is undergoing scheduled maintenance.</p></body></html>"
)


async def _failure(state: FakeState, kind: str) -> Response | None:
    """The switched failure, or None for "timeout" (after sleeping, the call is answered normally)."""
    now = state.now()
    if kind == "429":
        response = _too_many(state, "Per-minute rate limit exceeded")
        response.headers.update(
            {
                "x-ratelimit-limit-minute": str(state.per_minute_limit),
                "x-ratelimit-remaining-minute": "0",
                "retry-after": str(_seconds_to_next_minute(now)),
            }
        )
        return response
    if kind == "5xx":
        return Response(_HTML_502, status_code=502, media_type="text/html", headers={"server": "cloudflare"})
    if kind == "timeout":
        await asyncio.sleep(state.failures.timeout_s)
        return None
    if kind == "malformed":
        return Response(
            '{"period": {"from": "2026-08-24T00:00:00+01:00", "to": ', media_type="application/json", headers=_headers()
        )
    if kind == "html":
        return Response(_HTML_MAINTENANCE, status_code=200, media_type="text/html")
    if kind == "410":
        return _problem(410, "Gone", "This API version has been retired")
    raise ValueError(f"unknown failure kind {kind!r}")


# --- times -----------------------------------------------------------------------------------------------------


def _parse_time(text: str, tz: ZoneInfo) -> datetime | None:
    """`Z`, a numeric offset (`%2B` decoded) or none (site-local wall time); fractional seconds allowed."""
    cleaned = text.strip()
    if "." in cleaned:  # cut nanoseconds to microseconds, keep the offset
        head, _, tail = cleaned.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        cleaned = f"{head}.{tail[: min(digits, 6)]}{tail[digits:]}" if digits else cleaned
    if cleaned.endswith("Z"):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    if "T" not in cleaned:
        return None
    return value.replace(tzinfo=tz) if value.tzinfo is None else value


def _iso(value: datetime, tz: ZoneInfo) -> str:
    """Site-local with the numeric offset valid at that instant (never `Z`)."""
    return value.astimezone(tz).isoformat(timespec="seconds")


def _iso_ns(value: datetime, tz: ZoneInfo) -> str:
    """`period.to`: nanosecond precision as the live API sends it."""
    local = value.astimezone(tz)
    return f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond:06d}{secrets.randbelow(1000):03d}{local.isoformat()[-6:]}"


def _floor(value: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((value.astimezone(UTC) - epoch) // step) * step


def _local_midnight(value: datetime, tz: ZoneInfo) -> datetime:
    return datetime.combine(value.astimezone(tz).date(), time(0), tzinfo=tz)


def _bucket_start(ts: datetime, resolution: str, tz: ZoneInfo, period_from: datetime) -> datetime:
    """The UTC start of the resolution bucket holding `ts`, cut in site-local time (DST-aware)."""
    local = ts.astimezone(tz)
    if resolution == "QUARTER_HOUR":
        start = local
    elif resolution == "HOUR":
        start = local.replace(minute=0, second=0, microsecond=0)
    elif resolution == "DAY":
        start = datetime.combine(local.date(), time(0), tzinfo=tz)
    elif resolution == "WEEK":
        start = datetime.combine(local.date() - timedelta(days=local.weekday()), time(0), tzinfo=tz)
    elif resolution == "MONTH":
        start = datetime.combine(local.date().replace(day=1), time(0), tzinfo=tz)
    elif resolution == "YEAR":
        start = datetime.combine(local.date().replace(month=1, day=1), time(0), tzinfo=tz)
    else:  # TOTAL
        start = period_from
    return start.astimezone(UTC)


# --- data ------------------------------------------------------------------------------------------------------


def _rows(state: FakeState, site: FakeSite, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Base rows (15 min, or 60 min for spans over 62 days) for buckets from the one holding `start` to the one
    holding min(end, now). `pv` follows the live null rules; every channel is null while unpublished."""
    now = state.now()
    stop = min(end, now)
    first = max(start, site.installation_date)
    step = _QUARTER if stop - first <= timedelta(days=62) else timedelta(hours=1)
    first, last = _floor(first, step), _floor(stop, step)
    if last < first:
        return []
    frame = simulate(site.simulated(), first, last + 2 * step, int(step.total_seconds() // 60))
    frame = frame.with_columns(
        next_pv=pl.col("pv_w").shift(-1),
        local_hour=pl.col("ts").dt.convert_time_zone(site.timezone).dt.hour(),
    ).filter(pl.col("ts") <= last)
    # Before the first sample of the day the API says null, then 0.0 at dawn, then floats.
    dark = (pl.col("pv_w") < 1.0) & (pl.col("local_hour") < 12)
    asleep, dawn = dark & (pl.col("next_pv") < 1.0), dark & (pl.col("next_pv") >= 1.0)
    published = pl.col("ts") + step + state.publish_delay <= now
    channels = ("pv_w", "load_w", "battery_w", "soc_pct", "grid_import_w", "grid_export_w")
    frame = frame.with_columns(
        pl.when(asleep).then(None).when(dawn).then(0.0).otherwise(pl.col("pv_w")).alias("pv_w"),
    ).with_columns([pl.when(published).then(pl.col(c)).otherwise(None).alias(c) for c in channels])
    hours = step.total_seconds() / 3600
    return [dict(row, hours=hours) for row in frame.select("ts", *channels).to_dicts()]


Getter = Callable[[dict[str, Any]], float | None]


def _get(column: str, *, energy: bool = False, sign: int = 0) -> Getter:
    """A row -> value function: W (or Wh per row with `energy`); `sign` keeps only charge (-1) or discharge (+1)."""

    def getter(row: dict[str, Any]) -> float | None:
        value = row[column]
        if value is None:
            return None
        if sign:
            value = max(sign * value, 0.0)
        return value * row["hours"] if energy else value

    return getter


def _aggregate(
    rows: list[dict[str, Any]],
    resolution: str,
    tz: ZoneInfo,
    period_from: datetime,
    getter: Getter,
    how: Literal["sum", "mean", "last"],
    *,
    divisor: float = 1.0,
    label_end: bool = False,
) -> list[dict[str, Any]]:
    buckets: dict[datetime, list[float | None]] = {}
    for row in rows:
        buckets.setdefault(_bucket_start(row["ts"], resolution, tz, period_from), []).append(getter(row))
    out = []
    for start, values in buckets.items():
        present = [v for v in values if v is not None]
        if not present:
            value = None
        elif how == "sum":
            value = sum(present)
        elif how == "mean":
            value = sum(present) / len(present)
        else:
            value = present[-1]
        stamp = start + SUB_DAILY[resolution] if label_end else start
        out.append({"timestamp": _iso(stamp, tz), "value": None if value is None else round(value / divisor, 5)})
    return out


@dataclass
class _Query:
    site: FakeSite
    tz: ZoneInfo
    start: datetime
    end: datetime
    resolution: str
    unit: str | None


def _query(state: FakeState, site: FakeSite, request: Request, units: dict[str, float] | None) -> _Query | Response:
    """`from`/`to`/`resolution`/`unit` validated the V2 way; defaults: site-local midnight today to now."""
    params, tz, now = request.query_params, ZoneInfo(site.timezone), state.now()
    start = _local_midnight(now, tz)
    end = now
    for name in ("from", "to"):
        if name in params:
            parsed = _parse_time(params[name], tz)
            if parsed is None:
                return _bad_request(f"Invalid '{name}' date-time: use ISO-8601, e.g. 2026-05-01T00:00:00Z")
            start, end = (parsed, end) if name == "from" else (start, parsed)
    resolution = params.get("resolution", "QUARTER_HOUR")
    if resolution not in RESOLUTIONS:
        return _bad_request(f"Invalid resolution '{resolution[:20]}'")
    unit = params.get("unit")
    if units is not None and unit is not None and unit not in units:
        return _bad_request(f"Invalid unit '{unit[:10]}'")
    if end < start:
        return _bad_request("'to' must not be before 'from'")
    if "from" in params or "to" in params:
        limits = {
            "QUARTER_HOUR": state.quarter_hour_max,
            "HOUR": timedelta(hours=24),
            "DAY": timedelta(days=31),
            "WEEK": state.week_max,
            "MONTH": state.month_max,
        }
        limit = limits.get(resolution)
        if limit is not None and end - start > limit:
            return _bad_request(f"The requested time span exceeds the maximum of {_span(limit)} for {resolution}")
        state.largest_window = max(state.largest_window, end - start)
    if resolution == "TOTAL":
        start = max(start, site.installation_date)
    return _Query(site, tz, start.astimezone(tz), end, resolution, unit)


def _span(limit: timedelta) -> str:
    hours = limit.total_seconds() / 3600
    return f"{hours:g} hours" if hours <= 48 else f"{hours / 24:g} days"


def _period(state: FakeState, q: _Query) -> dict[str, str]:
    return {"from": _iso(q.start, q.tz), "to": _iso_ns(min(q.end, state.now()), q.tz)}


def _metric(
    q: _Query,
    rows: list[dict[str, Any]],
    getter: Getter,
    unit: str,
    how: Literal["sum", "mean", "last"],
    divisor: float = 1.0,
    label_end: bool = False,
) -> dict[str, Any]:
    values = _aggregate(rows, q.resolution, q.tz, q.start, getter, how, divisor=divisor, label_end=label_end)
    return {"unit": unit, "values": values}


def _series(state: FakeState, site: FakeSite, request: Request, energy: bool) -> Response:
    units = ENERGY_UNITS if energy else POWER_UNITS
    q = _query(state, site, request, units)
    if isinstance(q, Response):
        return q
    unit = q.unit or ("WH" if energy else "W")
    rows = _rows(state, site, q.start, q.end)
    how: Literal["sum", "mean"] = "sum" if energy else "mean"
    metric = _metric(q, rows, _get("pv_w", energy=energy), unit, how, units[unit])
    return _json({"period": _period(state, q), "unit": unit, "resolution": q.resolution, "values": metric["values"]})


def _telemetry(state: FakeState, site: FakeSite, request: Request, kind: str, serials: str | None) -> Response:
    q = _query(state, site, request, None)  # meter telemetry ignores `unit` and answers W / Wh
    if isinstance(q, Response):
        return q
    rows = _rows(state, site, q.start, q.end)
    sub_daily = q.resolution in SUB_DAILY
    devices: dict[str, dict[str, Any]] = {}

    def both(prefix: str, getter_w: Getter, getter_wh: Getter) -> dict[str, Any]:
        metrics = {f"{prefix}Energy": _metric(q, rows, getter_wh, "WH", "sum")}
        if sub_daily:  # power metrics exist only where the resolution supports them
            metrics[f"{prefix}Power"] = _metric(q, rows, getter_w, "W", "mean")
        return metrics

    if kind == "meters" and site.has_meter:
        grid, consumption = site.meter_serials
        devices[grid] = both("import", _get("grid_import_w"), _get("grid_import_w", energy=True)) | both(
            "export", _get("grid_export_w"), _get("grid_export_w", energy=True)
        )
        if site.consumption_meter:
            devices[consumption] = both("consumption", _get("load_w"), _get("load_w", energy=True))
    elif kind == "storage" and site.battery_kwh > 0:
        wanted = None if serials is None else set(serials.split(","))
        if wanted is None or site.battery_serial in wanted:
            metrics = both("charge", _get("battery_w", sign=-1), _get("battery_w", energy=True, sign=-1))
            metrics |= both("discharge", _get("battery_w", sign=1), _get("battery_w", energy=True, sign=1))
            if sub_daily:
                usable_kwh = site.battery_kwh / 100.0
                metrics["remainingEnergy"] = _metric(q, rows, _get("soc_pct"), "KWH", "last", 1 / usable_kwh)
                divisor = 100.0 if state.soe_scale == "fraction" else 1.0
                metrics["stateOfEnergy"] = _metric(q, rows, _get("soc_pct"), "PERCENTAGE", "last", divisor)
            _inject_negative_charge(state, metrics["chargeEnergy"])
            devices[site.battery_serial] = metrics
    elif kind == "inverters":
        metrics = {
            "power": _metric(q, rows, _get("pv_w"), "W", "mean"),
            "energy": _metric(q, rows, _get("pv_w", energy=True), "WH", "sum"),
        }
        if sub_daily:  # voltage and frequency are labelled with the bucket END

            def volts(row: dict[str, Any]) -> float | None:
                return None if row["pv_w"] is None else 230.0 + 2.0 * math.sin(row["ts"].timestamp() / 5400)

            def amps(row: dict[str, Any]) -> float | None:
                return None if row["pv_w"] is None else row["pv_w"] / (volts(row) or 230.0)

            metrics["voltage"] = _metric(q, rows, volts, "VOLT", "mean", label_end=True)
            metrics["current"] = _metric(q, rows, amps, "AMPERE", "mean")
            metrics["frequency"] = _metric(
                q, rows, lambda r: None if r["pv_w"] is None else 50.0, "HERTZ", "mean", label_end=True
            )
        devices[site.inverter_serial] = metrics
    return _json({"period": _period(state, q), "resolution": q.resolution, kind: devices})


def _inject_negative_charge(state: FakeState, metric: dict[str, Any]) -> None:
    """Replace the chargeEnergy samples of the buckets `state.negative_charge` names (a field quirk, see above)."""
    if not state.negative_charge:
        return
    for point in metric["values"]:
        start = datetime.fromisoformat(point["timestamp"]).astimezone(UTC)
        if start in state.negative_charge:
            point["value"] = state.negative_charge[start]


def _overview(state: FakeState, site: FakeSite, request: Request) -> Response:
    q = _query(state, site, request, None)
    if isinstance(q, Response):
        return q
    rows = _rows(state, site, q.start, q.end)

    def total(getter: Getter) -> float:
        return round(sum(v for r in rows if (v := getter(r)) is not None), 1)

    pv = total(_get("pv_w", energy=True))
    meter, battery = site.has_meter, site.battery_kwh > 0
    to_grid, from_grid = total(_get("grid_export_w", energy=True)), total(_get("grid_import_w", energy=True))
    charge = total(_get("battery_w", energy=True, sign=-1))
    discharge = total(_get("battery_w", energy=True, sign=1))
    self_use = round(max(pv - to_grid - charge, 0.0), 1)
    body = {
        "siteId": site.site_id,
        "production": {
            "total": pv,
            "unit": "WH",
            "toSelfConsumption": self_use if meter else None,
            "toStorage": charge if battery else None,
            "toGrid": to_grid if meter else None,
        },
        "consumption": {
            "total": total(_get("load_w", energy=True)) if meter and site.consumption_meter else None,
            "unit": "WH",
            "fromPv": self_use if meter else None,
            "fromStorage": discharge if battery else None,
            "fromGrid": from_grid if meter else None,
        },
    }
    return _json(body)


def _last_update(state: FakeState, site: FakeSite) -> str | None:
    if site.activation_status != "ACTIVE":
        return None
    last_closed = _floor(state.now() - state.publish_delay, _QUARTER)
    return _iso(last_closed, ZoneInfo(site.timezone))


def _site_body(state: FakeState, site: FakeSite) -> dict[str, Any]:
    tz = ZoneInfo(site.timezone)
    return {
        "siteId": site.site_id,
        "name": site.name,
        "peakPower": site.peak_power_kw,
        "installationDate": _iso(site.installation_date, tz),
        "lastUpdateTime": _last_update(state, site),
        "location": {
            "address": "1 Sandbox Street",
            "city": "Sandbox",
            "country": "Sandbox",
            "zip": "0000",
            "timezone": site.timezone,
        },
        "activationStatus": site.activation_status,
        "note": "",
    }


def _devices(site: FakeSite, request: Request) -> Response:
    types: list[str] = []
    for value in request.query_params.getlist("types"):
        types += [t.strip() for t in value.split(",") if t.strip()]
    if any(t not in DEVICE_TYPES for t in types):
        return _bad_request("Invalid device type")
    wanted = set(types or ["INVERTER"])
    tz = ZoneInfo(site.timezone)
    created = _iso(site.installation_date, tz)
    items: list[dict[str, Any]] = []
    if "INVERTER" in wanted:
        items.append(
            {
                "type": "INVERTER",
                "serialNumber": site.inverter_serial,
                "manufacturer": "SolarEdge",
                "partNumber": "SE5000H-RW000BNN4",
                "model": "SE5000H",
                "createdAt": created,
                "firmwareVersion": "4.25.13",
                "connectedTo": None,
                "active": True,
                "nameplate": 0,
                "name": "Inverter 1",
                "form": None,
                "communicationType": "ETHERNET",
                "firmware": "4.25.13.1.100.2061.2.100.1751",
                "connectedOptimizers": site.optimizers,
            }
        )
    if "METER" in wanted and site.has_meter:
        grid, consumption = site.meter_serials
        meters = [(grid, "FeedIn"), (None, "Purchased")]
        if site.consumption_meter:
            meters += [(consumption, "Consumption"), (None, "SelfConsumption")]
        for serial, meter_type in meters:  # virtual meters have no serial; meterType is mixed case
            items.append(
                {
                    "type": "METER",
                    "serialNumber": serial,
                    "meterType": meter_type,
                    "name": f"{meter_type} Meter",
                    "connectedTo": site.inverter_serial,
                    "connectedToName": "Inverter 1",
                    "active": True,
                    "createdAt": created,
                }
            )
    if "BATTERY" in wanted and site.battery_kwh > 0:
        items.append(
            {
                "type": "BATTERY",
                "serialNumber": site.battery_serial,
                "name": "Battery 1",
                "active": True,
                "nameplate": site.battery_kwh * 1000,
                "manufacturer": "SolarEdge",
                "createdAt": created,
            }
        )
    if "OPTIMIZER" in wanted:
        items += [
            {
                "type": "OPTIMIZER",
                "serialNumber": f"{site.site_id % 1000:03d}-{i:05d}",
                "active": True,
                "connectedTo": site.inverter_serial,
                "name": f"Optimizer 1.0.{i}",
            }
            for i in range(site.optimizers)
        ]
    return _json(items)


def _alerts(request: Request, alerts: list[dict[str, Any]]) -> Response:
    params = request.query_params
    try:
        page, size = int(params.get("page", "1")), int(params.get("alerts-in-page", "100"))
    except ValueError:
        return _bad_request("page and alerts-in-page must be integers")
    if page < 1 or not 1 <= size <= 100:
        return _bad_request("page must be >= 1 and alerts-in-page between 1 and 100")
    if params.get("only-open", "false").lower() == "true":
        alerts = [a for a in alerts if a.get("status") == "OPEN"]
    return _json(alerts[(page - 1) * size : page * size])


# --- routing ---------------------------------------------------------------------------------------------------


async def _token(state: FakeState, request: Request) -> Response:
    """Site Access token endpoint: JSON bodies only; every refresh rotates the refresh token."""
    if "json" not in request.headers.get("content-type", ""):
        return _oauth_error("invalid_request", "The request body must be JSON")
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _oauth_error("invalid_request", "The request body is not valid JSON")
    if not isinstance(body, dict):
        return _oauth_error("invalid_request", "The request body must be a JSON object")
    client_id = str(body.get("client_id", ""))
    if state.oauth_clients.get(client_id) != body.get("client_secret") or not client_id:
        return _oauth_error("invalid_client", "Client authentication failed")
    now = state.now()
    grant_type = body.get("grant_type")
    if grant_type == "authorization_code":
        found = state.codes.pop(str(body.get("code", "")), None)  # single use
        if found is None or found[2] != client_id:
            return _oauth_error("invalid_grant", "The authorization code is invalid or was already used")
        grant = Grant(found[0], found[1], client_id, "", now, "", now)
        state.grants.append(grant)
    elif grant_type == "refresh_token":
        token = str(body.get("refresh_token", ""))
        matches = [g for g in state.grants if g.refresh_token == token and not g.revoked and g.client_id == client_id]
        if not matches or now - matches[0].refresh_last_used > REFRESH_IDLE:
            return _oauth_error("invalid_grant", "The refresh token is invalid, expired or revoked")
        grant = matches[0]
    else:
        return _oauth_error("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
    grant.access_token, grant.refresh_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    grant.access_expires, grant.refresh_last_used = now + timedelta(seconds=ACCESS_TOKEN_S), now
    return _json(
        {
            "access_token": grant.access_token,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_S,
            "refresh_token": grant.refresh_token,
        }
    )


async def _revoke(state: FakeState, request: Request) -> Response:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _oauth_error("invalid_request", "The request body is not valid JSON")
    token = body.get("token") if isinstance(body, dict) else None
    for grant in state.grants:
        if token and token in (grant.access_token, grant.refresh_token):
            grant.revoked = True  # both tokens die
    return _json({})


def _authenticate(state: FakeState, request: Request) -> Identity | None:
    """`X-API-Key` (Fleet) or `Authorization: Bearer` (Site Access); an `api_key` query parameter is ignored."""
    key = request.headers.get("x-api-key")
    if key is not None:
        if key not in state.api_keys:
            return None
        return Identity(
            label(key),
            "key",
            state.key_sites.get(key),
            frozenset({"SITE_DATA", "DEVICE_DATA"}),
            advanced=key in state.advanced_keys,
        )
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        token, now = auth[7:].strip(), state.now()
        for grant in state.grants:
            if grant.access_token == token and not grant.revoked and now < grant.access_expires:
                return Identity(label(grant.client_id), "token", {grant.site_id}, grant.scopes)
    return None


_ROUTES: list[tuple[tuple[str, ...], str]] = [
    (("sites",), "sites"),
    (("alerts",), "fleet_alerts"),
    (("sites", "*"), "details"),
    (("sites", "*", "overview"), "overview"),
    (("sites", "*", "power"), "power"),
    (("sites", "*", "energy"), "energy"),
    (("sites", "*", "meters", "telemetry"), "meters"),
    (("sites", "*", "storage", "telemetry"), "storage"),
    (("sites", "*", "storage", "*", "telemetry"), "storage_serials"),
    (("sites", "*", "inverters", "telemetry"), "inverters"),
    (("sites", "*", "devices"), "devices"),
    (("sites", "*", "alerts"), "alerts"),
    (("sites", "*", "environmental-benefits"), "environmental"),
    (("sites", "*", "power-flow"), "power_flow"),
]
_DEVICE_DATA = {"meters", "storage", "storage_serials", "inverters"}


def _route(parts: list[str]) -> tuple[str, list[str]] | None:
    for pattern, name in _ROUTES:
        if len(pattern) == len(parts) and all(p in ("*", part) for p, part in zip(pattern, parts, strict=True)):
            return name, [part for p, part in zip(pattern, parts, strict=True) if p == "*"]
    return None


def _dispatch(state: FakeState, identity: Identity, request: Request, name: str, args: list[str]) -> Response:
    if name in ("sites", "fleet_alerts"):
        state.calls[(identity.label, None)] += 1
        if identity.kind == "token":
            return _problem(state.bearer_on_fleet_status, "Forbidden", "This endpoint requires an API key")
        visible = [s for s in state.sites if identity.sites is None or s.site_id in identity.sites]
        if name == "fleet_alerts":
            return _alerts(request, [a for s in visible for a in s.alerts])
        try:
            page, size = (
                int(request.query_params.get("page", "1")),
                int(request.query_params.get("sites-in-page", "50")),
            )
        except ValueError:
            return _bad_request("page and sites-in-page must be integers")
        if page < 1 or not 1 <= size <= 1000:
            return _bad_request("page must be >= 1 and sites-in-page between 1 and 1000")
        chunk = visible[(page - 1) * size : page * size]
        return _json({"sites": {"count": len(visible), "site": [_site_body(state, s) for s in chunk]}})
    if not args[0].isdigit():
        return _bad_request("siteId must be an integer")
    site_id = int(args[0])
    site = state.site(site_id)
    state.calls[(identity.label, site_id)] += 1
    if site is None:
        return _problem(
            state.unknown_site_status,
            "Forbidden" if state.unknown_site_status == 403 else "Not Found",
            f"Site {site_id} is not accessible with these credentials",
        )
    if identity.sites is not None and site_id not in identity.sites:
        return _problem(403, "Forbidden", f"Site {site_id} is not accessible with these credentials")
    if name in _DEVICE_DATA and "DEVICE_DATA" not in identity.scopes:
        return _problem(403, "Forbidden", "The DEVICE_DATA scope is required")
    if name == "details":
        return _json(_site_body(state, site))
    if name == "overview":
        return _overview(state, site, request)
    if name in ("power", "energy"):
        return _series(state, site, request, energy=name == "energy")
    if name in ("meters", "storage", "inverters"):
        return _telemetry(state, site, request, name, None)
    if name == "storage_serials":
        return _telemetry(state, site, request, "storage", args[1])
    if name == "devices":
        return _devices(site, request)
    if name == "alerts":
        return _alerts(request, site.alerts)
    if name == "environmental":
        unit = request.query_params.get("unit", "METRIC")
        if unit not in ("METRIC", "IMPERIAL"):
            return _bad_request("unit must be METRIC or IMPERIAL")
        return _json(
            {
                "_provisional": "fake body: the real shape of environmental-benefits is unknown",
                "co2EmissionSaved": {
                    "value": round(site.peak_power_kw * 812.5, 1),
                    "unit": "KG" if unit == "METRIC" else "LB",
                },
            }
        )
    if not identity.advanced:  # power-flow
        return _problem(403, "Forbidden", "This endpoint requires the Business Pro or Enterprise plan")
    return _json(
        {
            "_provisional": "fake body in the V1 siteCurrentPowerFlow shape (V2 shape unknown)",
            "siteCurrentPowerFlow": {"unit": "kW", "PV": {"status": "Active", "currentPower": 0.0}},
        }
    )


def create_app(state: FakeState) -> Starlette:
    async def handle(request: Request) -> Response:
        path = request.url.path.rstrip("/")
        if path in ("/v2/oauth2/token", "/v2/oauth2/revoke-token"):
            if request.method != "POST":
                return _not_found()
            return await (_token(state, request) if path == "/v2/oauth2/token" else _revoke(state, request))
        if not path.startswith("/v2/"):
            if state.retire_v1:
                return _problem(410, "Gone", "API deprecated: SolarEdge Monitoring API V1 has been retired")
            return _not_found()
        state.calls_total += 1
        if state.latency_s:
            await asyncio.sleep(state.latency_s)
        kind = state.failures.take()
        if kind is not None:
            failed = await _failure(state, kind)
            if failed is not None:
                return failed
        identity = _authenticate(state, request)
        if identity is None:
            response = _unauthorized(state)
            if state.ratelimit_headers_on_401:  # off by default: Kong runs authentication before rate limiting
                response.headers["x-ratelimit-limit-minute"] = str(state.per_minute_limit)
                response.headers["x-ratelimit-remaining-minute"] = str(state.per_minute_limit)
            return response
        return _limited(state, identity, request, path)

    return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])])


def _limited(state: FakeState, identity: Identity, request: Request, path: str) -> Response:
    """Per-minute allowance (fixed wall-clock minutes), then monthly credits, then the endpoint."""
    now = state.now()
    minute = now.replace(second=0, microsecond=0)
    used = state.minute_used.get((identity.label, minute), 0)
    limit_headers = {"x-ratelimit-limit-minute": str(state.per_minute_limit)}
    if used >= state.per_minute_limit:
        response = _too_many(state, "Per-minute rate limit exceeded")
        response.headers.update(
            {**limit_headers, "x-ratelimit-remaining-minute": "0", "retry-after": str(_seconds_to_next_minute(now))}
        )
        return response
    state.minute_used[(identity.label, minute)] = used + 1
    limit_headers["x-ratelimit-remaining-minute"] = str(state.per_minute_limit - used - 1)
    if state.credits_spent(identity.label, now) >= state.monthly_credits:
        response = _too_many(state, "Monthly API credits exhausted")
        response.headers.update(limit_headers)  # remaining-minute > 0 and no Retry-After: the monthly kind
        return response
    found = _route(path.split("/")[2:])
    if request.method != "GET":
        response = _problem(405, "Method Not Allowed", "Only GET is supported") if found else _not_found()
    elif found is None:
        state.calls[(identity.label, None)] += 1
        response = _not_found()
    else:
        response = _dispatch(state, identity, request, *found)
    if response.status_code < 400 or (state.charge_4xx and response.status_code != 429):
        state.charge_credit(identity.label, now)
    response.headers.update(limit_headers)
    return response


# --- conformance harness and sandbox ---------------------------------------------------------------------------


@dataclass
class Harness:
    state: FakeState
    secrets: list[str]

    def client(
        self, base_url: str, *, ledger: QuotaLedger | None = None, timeout_s: float = 1.0, bad_credentials: bool = False
    ) -> SolarEdgeV2Client:
        base = base_url.rstrip("/")
        return SolarEdgeV2Client(
            SecretStr("not-a-valid-solaredge-key" if bad_credentials else SANDBOX_API_KEY),
            str(SANDBOX_SITE_IDS[1]),
            account_key=SecretStr(SANDBOX_ACCOUNT_KEY),
            base_url=base if base.endswith("/v2") else f"{base}/v2",
            timeout_s=timeout_s,
            ledger=ledger,
            calls_per_minute=self.state.per_minute_limit,
            credits_per_month=self.state.monthly_credits,
            billing_cycle_day=self.state.billing_cycle_day,
        )

    def calls_served(self) -> int:
        return self.state.calls_total

    def set_quota(self, limit: int) -> None:
        """Both the per-minute and the monthly allowance become `limit` (the monthly one cannot roll over during a
        test), and the fake forgets earlier use so it and a fresh client ledger agree."""
        self.state.per_minute_limit = self.state.monthly_credits = limit
        self.state.minute_used.clear()
        self.state.credits_used.clear()

    def history_range(self) -> tuple[datetime, datetime]:
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        return end - timedelta(hours=30), end


def make_harness() -> tuple[Starlette, Harness]:
    # Limits far above the suite's needs unless a test calls set_quota: one harness serves many calls a minute.
    state = FakeState(per_minute_limit=10_000, monthly_credits=1_000_000)
    return create_app(state), Harness(state, [SANDBOX_API_KEY, SANDBOX_ACCOUNT_KEY, "not-a-valid-solaredge-key"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake SolarEdge Monitoring API V2 (sandbox)")
    parser.add_argument("--port", type=int, default=8701)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--per-minute", type=int, default=10, help="per-minute limit (Free tier: 10)")
    parser.add_argument("--monthly", type=int, default=2000, help="monthly credits (Free tier: 2000)")
    parser.add_argument("--state-file", type=Path, default=None, help="keep monthly credit counts across restarts")
    parser.add_argument("--fleet", type=int, default=0, help="serve an account of this many generated sites instead")
    args = parser.parse_args(argv)
    state = FakeState(per_minute_limit=args.per_minute, monthly_credits=args.monthly, state_file=args.state_file)
    if args.fleet:
        state.sites = fleet_sites(args.fleet)
    print(
        f"Fake SolarEdge V2 on http://{args.host}:{args.port}/v2  X-API-Key: {SANDBOX_API_KEY}  "
        f"sites: {', '.join(str(s.site_id) for s in state.sites[:5])}{' ...' if len(state.sites) > 5 else ''}"
    )
    uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
