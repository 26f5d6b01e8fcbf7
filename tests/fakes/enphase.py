"""A fake Enphase Enlighten v4 cloud: OAuth 2.0 authorization code grant plus the monitoring API, on loopback.

Behaviour follows docs/enphase-v4.md (shapes from the unofficial OpenAPI spec `monitoring.yaml`):

- `/oauth/authorize`: a tiny consent page with an "Approve" link (-> 302 to `redirect_uri?code=...&state=...`)
  and a "Deny" link (`?error=access_denied`); without `redirect_uri`, the code is shown on `/oauth/redirect_uri`,
  as Enphase's default redirect page does.
- `/oauth/token` (POST, or GET as the old quickstart said): Basic client auth, parameters in the query string (a
  form body is accepted too); codes work once; refresh tokens rotate (the old one dies); access TTL 86393 s,
  refresh TTL 7 days. Error bodies follow RFC 6749 as Spring answers them, echoing the rejected token (assumption:
  Enphase documents none), so clients must not quote them.
- `/api/v4/...`: `key` (the application API key) AND `Authorization: Bearer` on every call, 401 otherwise; plan
  limits per minute and per month answering the documented 429 body with `period_end`; epoch timestamps;
  telemetry intervals labelled by their END; `granularity` 15mins/day/week; 422 for future starts and starts
  older than 2 years; empty `intervals` while nothing is uploaded yet (early in the day) and gaps left unfilled
  during outages; "5xx" failures answer the documented `{"errorCode":7,...}` 500.
- `/api/v4/systems/{id}/energy_import_telemetry` and `/energy_export_telemetry`: 15-minute `wh_imported` /
  `wh_exported` (granularity 15mins/day only, as documented), empty without a consumption meter, from the same
  simulated rows as consumption and production, so import - export = consumption - production + charge -
  discharge within rounding. `state.grid_nested` serves the spec schema's nested `intervals` (a list of lists).
- `/api/v4/systems/{id}/live_data`: the live status stream (server-sent events), checked and counted like every
  v4 call; the `duration` header (30-300 s, default 30; else the 461/462/463 error frame); a Watt plan refused with
  401 "Application is not authorized..."; frames from the simulator's 5-minute row around now (grid = consumption -
  pv - battery) every `state.stream_cadence_s`, the stream lasting `duration * state.stream_time_scale` s; errors
  per system (`state.stream_errors`) answered instead of the stream, or inside it after `state.stream_error_after`
  frames; `state.stream_inject` sends raw (e.g. malformed) events after the first frame.

`state.clock_offset` moves the fake's clock (token expiry, "now" for data and quotas) so tests can expire tokens.
Run it for the sandbox: `python -m tests.fakes.enphase --port 8766`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import html
import json
import re
import secrets
import time as time_module
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import httpx
import polars as pl
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from core.providers.base import QuotaRule
from core.providers.enphase.client import EnphaseClient
from core.providers.enphase.oauth import Tokens, authorize_url, exchange_code
from core.providers.quota import QuotaLedger
from core.providers.simulator.client import SimulatedSite, simulate
from tests.fakes.server import FailureSwitch
from tests.providers.token_stores import InMemoryTokenStore

SANDBOX_CLIENT_ID = "sandbox-enphase-client-id"
SANDBOX_CLIENT_SECRET = "sandbox-enphase-client-secret"
SANDBOX_API_KEY = "sandbox-enphase-api-key"
WRONG_API_KEY = "sandbox-enphase-wrong-api-key"  # what `Harness.client(bad_credentials=True)` sends
SANDBOX_SYSTEM_ID = 698905955
# Per application: (per minute, per month), docs/enphase-v4.md.
PLAN_LIMITS = {"Watt": (10, 1_000), "Kilowatt": (50, 50_000), "Megawatt": (100, 300_000)}
ACCESS_TTL_S = 86_393
REFRESH_TTL_S = 7 * 86_400
GRANULARITY = {"15mins": timedelta(minutes=15), "day": timedelta(days=1), "week": timedelta(days=7)}
# Endpoints whose documented granularities stop at `day` (production_micro first; then the grid import/export).
NO_WEEK = ("production_micro", "energy_import_telemetry", "energy_export_telemetry")
MAX_AGE = timedelta(days=730)  # "The requested start date must be within 2 years from current date."
_UNAUTHORIZED = {"message": "Not Authorized", "details": "User is not authorized", "code": 401}


@dataclass
class FakeSystem:
    """One Enphase system; its data comes from the simulator for its location and size."""

    system_id: int
    name: str
    timezone: str
    capacity_kw: float
    latitude: float
    longitude: float
    battery_kwh: float = 10.0
    consumption_meter: bool = True
    production_meter: bool = False
    operational_at: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    outages: list[tuple[datetime, datetime]] = field(default_factory=list)  # intervals ending inside are missing
    seed: int = 7

    @property
    def site(self) -> SimulatedSite:
        return SimulatedSite(
            latitude=self.latitude,
            longitude=self.longitude,
            timezone=self.timezone,
            pv_capacity_kw=self.capacity_kw,
            battery_capacity_kwh=self.battery_kwh,
            seed=self.seed,
        )

    @property
    def micros(self) -> int:
        return max(1, round(self.capacity_kw * 1000 / 400))  # ~400 W panels, one microinverter each


def sandbox_systems() -> dict[int, FakeSystem]:
    return {
        SANDBOX_SYSTEM_ID: FakeSystem(
            SANDBOX_SYSTEM_ID, "Sandbox Residential System", "America/Los_Angeles", 6.4, 38.23, -122.64
        ),
        698905956: FakeSystem(
            698905956,
            "Sandbox Garage",
            "Europe/Brussels",
            3.2,
            50.85,
            4.35,
            battery_kwh=0.0,
            consumption_meter=False,
            production_meter=True,
            seed=11,
        ),
    }


def fleet_systems(count: int, first_id: int = 700_000_001) -> dict[int, FakeSystem]:
    """An installer's `count` systems (ids from `first_id`), served 100 a page at most like the vendor's
    `GET /systems`: every other one without a battery."""
    zones = (("Europe/Brussels", 50.85, 4.35), ("America/Los_Angeles", 38.23, -122.64))
    systems = {}
    for n in range(count):
        zone, lat, lon = zones[n % 2]
        system_id = first_id + n
        systems[system_id] = FakeSystem(
            system_id, f"Fleet System {n + 1:03d}", zone, 4.0 + n % 5, lat, lon, battery_kwh=0.0 if n % 2 else 10.0
        )
    return systems


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str | None
    expires_at: datetime


@dataclass
class FakeState:
    client_id: str = SANDBOX_CLIENT_ID
    client_secret: str = SANDBOX_CLIENT_SECRET
    api_key: str = SANDBOX_API_KEY
    systems: dict[int, FakeSystem] = field(default_factory=sandbox_systems)
    plan: str = "Watt"
    per_minute_limit: int = PLAN_LIMITS["Watt"][0]
    per_month_limit: int = PLAN_LIMITS["Watt"][1]
    failures: FailureSwitch = field(default_factory=FailureSwitch)
    clock_offset: timedelta = timedelta(0)
    access_ttl_s: int = ACCESS_TTL_S
    refresh_ttl_s: int = REFRESH_TTL_S
    code_ttl_s: int = 600
    upload_lag: timedelta = timedelta(minutes=15)  # the gateway uploads every ~15 min: newer intervals are missing
    codes: dict[str, _Grant] = field(default_factory=dict)
    access_tokens: dict[str, datetime] = field(default_factory=dict)
    refresh_tokens: dict[str, datetime] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)  # every code/token handed out: none may reach a log
    usage: Counter[tuple[str, datetime]] = field(default_factory=Counter)  # (period, bucket start) -> counted calls
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (key sent, system id) -> API calls answered
    largest_window: timedelta = timedelta(0)
    bearer_log: list[str] = field(default_factory=list)  # access tokens accepted, in order
    token_calls: int = 0
    refresh_latency_s: float = 0.0  # a renewal's answer waits this long (lets tests overlap renewals)
    grid_nested: bool = False  # import/export intervals as the spec's schema nests them (a list of lists)
    # The live status stream (`/live_data`): real seconds per frame, real seconds per stream second (a 30 s stream
    # lasts 30 * stream_time_scale s), per-system error codes answered instead of the stream or, with
    # `stream_error_after` > 0, sent inside it after that many frames; raw event payloads sent after the first frame
    # (malformed ones, for tests); what was asked and sent.
    stream_cadence_s: float = 1.0
    stream_time_scale: float = 1.0
    stream_errors: dict[int, int] = field(default_factory=dict)
    stream_error_after: int = 0
    stream_inject: list[str] = field(default_factory=list)
    stream_durations: list[int] = field(default_factory=list)  # the `duration` of each stream opened
    stream_sent: list[dict[str, Any]] = field(default_factory=list)  # every data frame sent, oldest first

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_offset

    def set_plan(self, plan: str) -> None:
        self.plan = plan
        self.per_minute_limit, self.per_month_limit = PLAN_LIMITS[plan]

    def issue_code(self, redirect_uri: str | None) -> str:
        code = secrets.token_urlsafe(8)
        self.codes[code] = _Grant(self.client_id, redirect_uri, self.now() + timedelta(seconds=self.code_ttl_s))
        self.issued.append(code)
        return code

    def issue_tokens(self) -> dict[str, Any]:
        access, refresh = "fake-at-" + secrets.token_urlsafe(24), "fake-rt-" + secrets.token_urlsafe(24)
        now = self.now()
        self.access_tokens[access] = now + timedelta(seconds=self.access_ttl_s)
        self.refresh_tokens[refresh] = now + timedelta(seconds=self.refresh_ttl_s)
        self.issued.extend([access, refresh])
        return {
            "access_token": access,
            "token_type": "bearer",
            "refresh_token": refresh,
            "expires_in": self.access_ttl_s,
            "scope": "read write",
            "enl_uid": "217231",
            "enl_cid": "5",
            "enl_password_last_changed": "1638870641",
            "is_internal_app": False,
            "app_type": "system",
            "jti": secrets.token_hex(16),
        }


# --- helpers ------------------------------------------------------------------------------------------------


def _epoch(value: datetime) -> int:
    return int(value.timestamp())


def _floor(value: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((value - epoch) // step) * step


def _local_midnight(day: date, tz: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(tz)).astimezone(UTC)


def _client_error(status: int, message: str, details: str) -> JSONResponse:
    return JSONResponse({"message": message, "details": details, "code": status}, status_code=status)


def _too_many(state: FakeState, period: str, now: datetime) -> JSONResponse:
    if period == "minute":
        start = now.replace(second=0, microsecond=0)
        end, limit = start + timedelta(minutes=1), state.per_minute_limit
    else:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end, limit = (start + timedelta(days=32)).replace(day=1), state.per_month_limit
    body = {
        "message": "Too Many Requests",
        "details": f"Usage limit exceeded for plan {state.plan}",
        "code": 429,
        "period": period,
        "period_start": _epoch(start),
        "period_end": _epoch(end),
        "limit": limit,
    }
    return JSONResponse(body, status_code=429)


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- OAuth --------------------------------------------------------------------------------------------------


def _oauth_routes(state: FakeState) -> list[Route]:
    async def authorize(request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != state.client_id or q.get("response_type") != "code":
            return HTMLResponse("<html><body><h1>OAuth Error</h1><p>error=invalid_client</p></body></html>", 400)
        approve = "/oauth/authorize/approve?" + urlencode({k: v for k, v in q.items()})
        redirect = q.get("redirect_uri") or str(request.url_for("redirect_page"))
        deny = _with_query(redirect, error="access_denied", **({"state": q["state"]} if "state" in q else {}))
        page = (
            "<html><head><title>Enlighten authorization</title></head><body>"
            "<h1>Allow access to your Enphase system?</h1>"
            f'<a id="approve" href="{html.escape(approve)}">Approve</a> '
            f'<a id="deny" href="{html.escape(deny)}">Deny</a></body></html>'
        )
        return HTMLResponse(page)

    async def approve(request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != state.client_id:
            return HTMLResponse("<html><body>error=invalid_client</body></html>", 400)
        redirect_uri = q.get("redirect_uri")
        code = state.issue_code(redirect_uri)
        target = redirect_uri or str(request.url_for("redirect_page"))
        return RedirectResponse(_with_query(target, code=code, **({"state": q["state"]} if "state" in q else {})), 302)

    async def redirect_page(request: Request) -> Response:
        code = request.query_params.get("code", "")
        return HTMLResponse(
            f'<html><body><p>Your authorization code:</p><p id="code">{html.escape(code)}</p></body></html>'
        )

    async def token(request: Request) -> Response:
        state.token_calls += 1
        params = dict(request.query_params)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.form()).items()})
        if not _client_ok(state, request.headers.get("authorization", "")):
            return JSONResponse({"error": "unauthorized", "error_description": "Bad credentials"}, 401)
        grant = params.get("grant_type")
        now = state.now()
        if grant == "authorization_code":
            code = params.get("code", "")
            found = state.codes.pop(code, None)  # single use: gone even when the exchange fails below
            if found is None or found.expires_at <= now or found.client_id != state.client_id:
                return _invalid_grant(f"Invalid authorization code: {code}")
            # The exchange names the redirect the consent used: the app's, or Enphase's default (the code page).
            expected = found.redirect_uri or str(request.url_for("redirect_page"))
            if params.get("redirect_uri") != expected:
                return _invalid_grant("Redirect URI mismatch.")
            return JSONResponse(state.issue_tokens())
        if grant == "refresh_token":
            refresh = params.get("refresh_token", "")
            await asyncio.sleep(state.refresh_latency_s)  # a second renewal with the same token arrives meanwhile
            expires = state.refresh_tokens.pop(refresh, None)  # rotation: the old refresh token dies here
            if expires is None:
                return _invalid_grant(f"Invalid refresh token: {refresh}")
            if expires <= now:
                body = {"error": "invalid_token", "error_description": f"Invalid refresh token (expired): {refresh}"}
                return JSONResponse(body, 401)
            return JSONResponse(state.issue_tokens())
        return JSONResponse({"error": "unsupported_grant_type", "error_description": f"Unsupported: {grant}"}, 400)

    return [
        Route("/oauth/authorize", authorize),
        Route("/oauth/authorize/approve", approve),
        Route("/oauth/redirect_uri", redirect_page, name="redirect_page"),
        Route("/oauth/token", token, methods=["GET", "POST"]),
    ]


def _client_ok(state: FakeState, header: str) -> bool:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return False
    return decoded == f"{state.client_id}:{state.client_secret}"


def _invalid_grant(description: str) -> JSONResponse:
    return JSONResponse({"error": "invalid_grant", "error_description": description}, 400)


# --- the monitoring API -------------------------------------------------------------------------------------


async def _guard(state: FakeState, request: Request, system_id: str) -> Response | None:
    """What every /api/v4 call goes through: counting, failure switches, key + bearer, plan limits."""
    key = request.query_params.get("key", "")
    state.calls[(key, system_id)] += 1
    kind = state.failures.take()
    if kind == "timeout":
        await asyncio.sleep(state.failures.timeout_s)
    elif kind == "429":
        return _too_many(state, "minute", state.now())
    elif kind == "5xx":
        return JSONResponse({"errorCode": 7, "errorMessages": ["Data is temporarily unavailable"]}, 500)
    elif kind == "malformed":
        return Response('{"system_id": 698905955, "intervals": [{"end_at": 16', 200, media_type="application/json")
    elif kind == "html":
        page = "<html><head><title>Maintenance</title></head><body><h1>Enlighten is down for maintenance</h1></body>"
        return HTMLResponse(page + "</html>", 200)
    elif kind == "410":
        return _client_error(410, "Gone", "This version of the API has been retired")
    now = state.now()
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    expires = state.access_tokens.get(bearer) if scheme.lower() == "bearer" else None
    if key != state.api_key or expires is None or expires <= now:
        return JSONResponse(_UNAUTHORIZED, 401)
    state.bearer_log.append(bearer)
    minute = ("minute", now.replace(second=0, microsecond=0))
    month = ("month", now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    if state.usage[minute] >= state.per_minute_limit:
        return _too_many(state, "minute", now)
    if state.usage[month] >= state.per_month_limit:
        return _too_many(state, "month", now)
    state.usage[minute] += 1
    state.usage[month] += 1
    if system_id and (not system_id.isdigit() or int(system_id) not in state.systems):
        return _client_error(404, "Not Found", f'System not found for {{:id=>"{system_id}"}}')
    return None


def _meta(system: FakeSystem, last: datetime) -> dict[str, Any]:
    return {
        "status": "normal",
        "last_report_at": _epoch(last),
        "last_energy_at": _epoch(last),
        "operational_at": _epoch(system.operational_at),
    }


def _last_upload(state: FakeState, now: datetime) -> datetime:
    return _floor(now - state.upload_lag, timedelta(minutes=5))


def _system_json(state: FakeState, system: FakeSystem) -> dict[str, Any]:
    last = _last_upload(state, state.now())
    return {
        "system_id": system.system_id,
        "name": system.name,
        "public_name": "Residential System",
        "timezone": system.timezone,
        "address": {"state": "CA", "country": "US", "postal_code": "94954"},
        "connection_type": "ethernet",
        "status": "normal",
        "last_report_at": _epoch(last),
        "last_energy_at": _epoch(last),
        "operational_at": _epoch(system.operational_at),
        "attachment_type": "rack_mount",
        "interconnect_date": system.operational_at.date().isoformat(),
    }


def _telemetry(state: FakeState, system: FakeSystem, kind: str, request: Request) -> Response:
    q = request.query_params
    now = state.now()
    interval = timedelta(minutes=5) if kind == "production_micro" else timedelta(minutes=15)
    granularity = q.get("granularity", "day")
    if granularity not in GRANULARITY or (kind in NO_WEEK and granularity == "week"):
        return _client_error(422, "Unprocessable Entity", f"Invalid granularity {granularity}")
    tz = system.timezone
    try:
        if "start_at" in q:
            start = datetime.fromtimestamp(int(q["start_at"]), UTC)
        elif "start_date" in q:
            start = _local_midnight(date.fromisoformat(q["start_date"]), tz)
        else:
            start = _local_midnight(now.astimezone(ZoneInfo(tz)).date(), tz)
    except (ValueError, OverflowError, OSError):
        details = f"Problem parsing time. Is time passed correctly in the following fields {dict(q)}"
        return _client_error(500, "Internal Server Error", details)
    if start > now:
        return _client_error(
            422, "Unprocessable Entity", "Invalid request because of 'Requested date is in the future'."
        )
    first = _local_midnight(system.operational_at.astimezone(ZoneInfo(tz)).date(), tz)
    if start < now - MAX_AGE:
        details = (
            "Invalid request because of 'Requested date range is invalid for this system'. "
            f"{{:start_at=>{_epoch(start)}, :end_at=>{_epoch(now)}, :first_interval=>{_epoch(first)}, "
            f":last_interval=>{_epoch(_last_upload(state, now))}}}"
        )
        return _client_error(422, "Unprocessable Entity", details)
    start = _floor(max(start, first), interval)  # rounded down to the interval, like rgm_stats documents
    end = min(now, start + GRANULARITY[granularity])
    state.largest_window = max(state.largest_window, end - start)
    upto = min(end, _floor(_last_upload(state, now), interval))  # intervals not uploaded yet are simply absent
    present = {
        "production_micro": True,
        "production_meter": system.production_meter,
        "consumption_meter": system.consumption_meter,
        "battery": system.battery_kwh > 0,
        "energy_import_telemetry": system.consumption_meter,  # the grid flows come from the consumption CT
        "energy_export_telemetry": system.consumption_meter,
    }[kind]
    rows = simulate(system.site, start, upto, int(interval.total_seconds() // 60)) if present and upto > start else None
    intervals = _intervals(kind, system, rows, interval)
    body: dict[str, Any] = {"system_id": system.system_id, "granularity": granularity}
    body["total_devices"] = system.micros if kind == "production_micro" else int(present)
    if "start_date" in q:  # the response echoes whichever form the request used
        body["start_date"], body["end_date"] = q["start_date"], end.astimezone(ZoneInfo(tz)).date().isoformat()
    else:
        body["start_at"], body["end_at"] = _epoch(start), _epoch(end)
    body["items"] = "intervals"
    body["intervals"] = [i for i in intervals if not _in_outage(system, i["end_at"])]
    if state.grid_nested and kind in NO_WEEK[1:]:
        body["intervals"] = [body["intervals"]] if body["intervals"] else []
    if kind == "battery":
        soc = rows["soc_pct"][-1] if rows is not None and rows.height else 50.0
        body["last_reported_aggregate_soc"] = f"{round(soc)}%"
    else:
        body["meta"] = _meta(system, _last_upload(state, now))
    return JSONResponse(body)


def _in_outage(system: FakeSystem, end_at: int) -> bool:
    return any(_epoch(a) < end_at <= _epoch(b) for a, b in system.outages)


def _intervals(kind: str, system: FakeSystem, rows: pl.DataFrame | None, interval: timedelta) -> list[dict[str, Any]]:
    if rows is None:
        return []
    hours = interval.total_seconds() / 3600
    out = []
    for row in rows.iter_rows(named=True):
        end_at = _epoch(row["ts"] + interval)
        pv, load, battery = row["pv_w"], row["load_w"], row["battery_w"]
        if kind == "production_micro":
            reporting = system.micros if pv > 0 else 0  # microinverters sleep at night
            out.append({"end_at": end_at, "devices_reporting": reporting, "powr": round(pv), "enwh": round(pv * hours)})
        elif kind == "production_meter":
            out.append({"end_at": end_at, "devices_reporting": 1, "wh_del": round(pv * hours)})
        elif kind == "consumption_meter":
            out.append({"end_at": end_at, "devices_reporting": 1, "enwh": round(load * hours)})
        elif kind == "energy_import_telemetry":
            out.append({"end_at": end_at, "wh_imported": round(row["grid_import_w"] * hours)})
        elif kind == "energy_export_telemetry":
            out.append({"end_at": end_at, "wh_exported": round(row["grid_export_w"] * hours)})
        else:
            out.append(
                {
                    "end_at": end_at,
                    "charge": {"enwh": round(max(-battery, 0.0) * hours), "devices_reporting": 1},
                    "discharge": {"enwh": round(max(battery, 0.0) * hours), "devices_reporting": 1},
                    "soc": {"percent": round(row["soc_pct"]), "devices_reporting": 1},
                }
            )
    return out


def _summary(state: FakeState, system: FakeSystem) -> dict[str, Any]:
    now = state.now()
    last = _last_upload(state, now)
    tz = ZoneInfo(system.timezone)
    midnight = _local_midnight(now.astimezone(tz).date(), system.timezone)
    today = simulate(system.site, midnight, last, 5) if last > midnight else None
    current = simulate(system.site, last - timedelta(minutes=5), last, 5)["pv_w"][0]
    energy_today = round(float(today["pv_w"].sum()) / 12) if today is not None else 0
    days = max(0, (now - system.operational_at).days)
    return {
        "system_id": system.system_id,
        "current_power": round(current),
        "energy_lifetime": round(days * system.capacity_kw * 4000) + energy_today,
        "energy_today": energy_today,
        "last_interval_end_at": _epoch(last),
        "last_report_at": _epoch(last),
        "modules": system.micros,
        "operational_at": _epoch(system.operational_at),
        "size_w": round(system.capacity_kw * 1000),
        "source": "microinverters",
        "status": "normal",
        "summary_date": now.astimezone(tz).date().isoformat(),
    }


def _api_routes(state: FakeState) -> list[Route]:
    async def systems(request: Request) -> Response:
        if (denied := await _guard(state, request, "")) is not None:
            return denied
        try:
            page, size = int(request.query_params.get("page", 1)), int(request.query_params.get("size", 10))
        except ValueError:
            return _client_error(422, "Unprocessable Entity", "page and size must be integers")
        if page < 1 or not 1 <= size <= 100:
            return _client_error(422, "Unprocessable Entity", "size must be between 1 and 100")
        ordered = sorted(state.systems.values(), key=lambda s: -s.system_id)  # default: decreasing system ID
        chosen = ordered[(page - 1) * size : page * size]
        items = [{**_system_json(state, s), "system_size": s.capacity_kw * 1000, "energy_today": 0} for s in chosen]
        body = {"total": len(ordered), "current_page": page, "size": size, "count": len(items), "items": "systems"}
        return JSONResponse({**body, "systems": items})

    async def system(request: Request) -> Response:
        system_id = request.path_params["system_id"]
        if (denied := await _guard(state, request, system_id)) is not None:
            return denied
        return JSONResponse(_system_json(state, state.systems[int(system_id)]))

    async def summary(request: Request) -> Response:
        system_id = request.path_params["system_id"]
        if (denied := await _guard(state, request, system_id)) is not None:
            return denied
        return JSONResponse(_summary(state, state.systems[int(system_id)]))

    async def grid(request: Request) -> Response:
        system_id, kind = request.path_params["system_id"], request.path_params["kind"]
        if kind not in NO_WEEK[1:]:
            return _client_error(404, "Not Found", f"No route matches {kind}")
        if (denied := await _guard(state, request, system_id)) is not None:
            return denied
        return _telemetry(state, state.systems[int(system_id)], kind, request)

    async def telemetry(request: Request) -> Response:
        system_id, kind = request.path_params["system_id"], request.path_params["kind"]
        if kind not in ("production_micro", "production_meter", "consumption_meter", "battery"):
            return _client_error(404, "Not Found", f"No route matches telemetry/{kind}")
        if (denied := await _guard(state, request, system_id)) is not None:
            return denied
        return _telemetry(state, state.systems[int(system_id)], kind, request)

    async def live_data(request: Request) -> Response:
        return await _live_data(state, request)

    return [
        Route("/api/v4/systems", systems),
        Route("/api/v4/systems/{system_id}", system),
        Route("/api/v4/systems/{system_id}/summary", summary),
        Route("/api/v4/systems/{system_id}/telemetry/{kind}", telemetry),
        Route("/api/v4/systems/{system_id}/live_data", live_data),  # before the grid route's catch-all {kind}
        Route("/api/v4/systems/{system_id}/{kind}", grid),
    ]


# --- the live status stream (docs/enphase-v4.md, "Live status stream") --------------------------------------------

# code -> (status word, message, frame type), as the vendor's spec gives them
STREAM_ERRORS: dict[int, tuple[str, str, str]] = {
    401: ("UNAUTHORIZED", "Access token is invalid", "authentication_error"),
    403: ("FORBIDDEN", "User is not authorized", "authorization_error"),
    429: ("TOO_MANY_REQUESTS", "Too Many Requests", "request_exceeded_error"),
    461: ("INVALID_DURATION", "Duration cannot be less than 30", "validation_error"),
    462: ("INVALID_DURATION", "Duration cannot be greater than 300", "validation_error"),
    463: ("INVALID_DURATION", "Duration must be an integer", "validation_error"),
    466: ("UNSUPPORTED_ENVOY", "Envoy must be active and envoy version must be at least 6.0.0.", "validation_error"),
    468: ("INVALID_SYSTEM_ID", "System ID doesn't exist", "validation_error"),
    472: ("LIVE_STREAM_NOT_SUPPORTED", "The system doesn't support live stream", "validation_error"),
    473: ("ENVOY_NOT_REPORTING", "IQ Gateway is not reporting", "site_connectivity_error"),
    550: ("SERVICE_UNREACHABLE", "Service unreachable, please try again", "server_error"),
    551: ("SERVICE_UNREACHABLE", "Service unreachable, please try again", "server_error"),
    552: ("CONNECTION_NOT_ESTABLISHED", "Unable to connect, please try again", "server_error"),
}
# What a plan without streaming (Watt) gets: the spec's 401 case "Application is not authorized to access the
# requested resource" (assumption: Enphase documents no plan-specific code; device-level calls on Watt give 401 too).
NO_STREAMING_PLAN = "Application is not authorized to access the requested resource"


def _stamp(at: datetime) -> dict[str, Any]:
    return {"timestamp_epoch": int(at.timestamp() * 1000), "timestamp_utc": at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]}


def _event(body: dict[str, Any] | str) -> bytes:
    return f"data: {body if isinstance(body, str) else json.dumps(body)}\n\n".encode()


def _error_frame(state: FakeState, code: int, message: str | None = None) -> dict[str, Any]:
    status, default, kind = STREAM_ERRORS[code]
    error = {"code": code, "details": [{}], "message": message or default, "status": status}
    return {"error": error, **_stamp(state.now()), "type": kind}


def _stream_error(state: FakeState, code: int, message: str | None = None) -> Response:
    """An error answered instead of the stream: the HTTP status is the code, the body one error event."""
    return Response(_event(_error_frame(state, code, message)), code, media_type="text/event-stream")


def _gateway_serial(system: FakeSystem) -> str:
    return f"1220{system.system_id % 10**8:08d}"


def _live_frame(state: FakeState, system: FakeSystem, rows: pl.DataFrame, at: datetime) -> dict[str, Any]:
    """The system at `at`, between the simulator's 5-minute rows around it (so PV follows its production curve
    second by second); grid = consumption - pv - battery."""
    before = rows.filter(pl.col("ts") <= at)
    row, following = before.row(-1, named=True), rows.row(min(before.height, rows.height - 1), named=True)
    share = (at - row["ts"]).total_seconds() / 300

    def value(name: str) -> int:
        return round(row[name] + (following[name] - row[name]) * share)

    pv, load = value("pv_w"), value("load_w")
    has_battery = system.battery_kwh > 0
    battery = value("battery_w") if has_battery else 0
    data = {
        "battery_mode": "Self-consumption" if has_battery else None,
        "battery_power": battery,
        "battery_soc": value("soc_pct") if has_battery else None,
        "consumption_power": load,
        "envoy_serial_number": [_gateway_serial(system)],
        "generator_power": 0,
        "grid_power": load - pv - battery,
        "grid_status": "On Grid",
        "pv_power": pv,
        "system_id": system.system_id,
    }
    return {"data": data, **_stamp(at), "type": "response"}


async def _live_data(state: FakeState, request: Request) -> Response:
    """`GET /systems/{id}/live_data`: the v4 guard (counted as one call), then the plan, the `duration` header and the
    system's error, then one frame every `stream_cadence_s` for `duration * stream_time_scale` seconds."""
    system_id = request.path_params["system_id"]
    denied = await _guard(state, request, system_id)
    if denied is not None:  # the guard's refusals, as the stream sends them; failure switches answer as they do
        translated = {401: 401, 429: 429, 404: 468}.get(denied.status_code)
        return _stream_error(state, translated) if translated else denied
    if state.plan == "Watt":
        return _stream_error(state, 401, NO_STREAMING_PLAN)
    raw = request.headers.get("duration", "30")
    if not raw.strip().lstrip("-").isdigit():
        return _stream_error(state, 463)
    duration = int(raw)
    if duration < 30 or duration > 300:
        return _stream_error(state, 461 if duration < 30 else 462)
    system = state.systems[int(system_id)]
    code = state.stream_errors.get(system.system_id)
    if code is not None and not state.stream_error_after:
        return _stream_error(state, code)
    state.stream_durations.append(duration)
    start = state.now()
    rows = simulate(system.site, _floor(start, timedelta(minutes=5)), start + timedelta(seconds=duration + 300), 5)

    async def events() -> AsyncIterator[bytes]:
        ends = time_module.monotonic() + duration * state.stream_time_scale
        sent = 0
        while time_module.monotonic() < ends:
            if code is not None and sent >= state.stream_error_after:
                yield _event(_error_frame(state, code))
                return
            frame = _live_frame(state, system, rows, state.now())
            state.stream_sent.append(frame)
            yield _event(frame)
            sent += 1
            if sent == 1:
                for payload in state.stream_inject:
                    yield _event(payload)
            await asyncio.sleep(state.stream_cadence_s)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def create_app(state: FakeState) -> Starlette:
    return Starlette(routes=_oauth_routes(state) + _api_routes(state))


# --- conformance harness ------------------------------------------------------------------------------------

HARNESS_PLAN = "Kilowatt"  # the shared suite makes >10 calls a minute; Watt's limit is tested in test_enphase.py
HARNESS_REDIRECT_URI = "http://127.0.0.1:8501/data-connections"


def consent(base_url: str, state: FakeState, http: httpx.Client, redirect_uri: str = HARNESS_REDIRECT_URI) -> str:
    """Open the fake's consent page, follow "Approve" and return the code from the redirect, as a browser would.

    httpcore logs response headers (the redirect's `location`, with the code) at DEBUG on child loggers that
    `install_log_redaction` does not filter: use this only where logs are not checked for secrets.
    """
    page = http.get(authorize_url(state.client_id, redirect_uri, "xyz", auth_url=f"{base_url}/oauth"))
    match = re.search(r'id="approve" href="([^"]+)"', page.text)
    if page.status_code != 200 or match is None:
        raise RuntimeError(f"the fake's consent page failed (HTTP {page.status_code})")
    approved = http.get(base_url + match.group(1).replace("&amp;", "&"))
    return dict(parse_qsl(urlsplit(approved.headers["location"]).query))["code"]


def seeded_tokens(base_url: str, state: FakeState, redirect_uri: str = HARNESS_REDIRECT_URI) -> Tokens:
    """Tokens through the fake's real token endpoint, for a code the owner "approved" (seeded into the fake)."""
    return exchange_code(
        state.issue_code(redirect_uri),
        client_id=state.client_id,
        client_secret=SecretStr(state.client_secret),
        redirect_uri=redirect_uri,
        now=datetime.now(UTC),
        auth_url=f"{base_url}/oauth",
        timeout_s=5.0,
    )


@dataclass
class Harness:
    state: FakeState
    secrets: list[str]  # the same list as `state.issued`, so tokens issued later are covered too
    clients: list[EnphaseClient] = field(default_factory=list)
    minute_limit: int | None = None

    def client(
        self, base_url: str, *, ledger: QuotaLedger | None = None, timeout_s: float = 1.0, bad_credentials: bool = False
    ) -> EnphaseClient:
        """A client holding tokens from the fake's real token endpoint (the consent step is seeded, see `consent`)."""
        tokens = seeded_tokens(base_url, self.state)
        client = EnphaseClient(
            client_id=self.state.client_id,
            client_secret=SecretStr(self.state.client_secret),
            api_key=SecretStr(WRONG_API_KEY if bad_credentials else self.state.api_key),
            system_id=str(SANDBOX_SYSTEM_ID),
            token_store=InMemoryTokenStore(tokens),
            base_url=f"{base_url}/api/v4",
            auth_url=f"{base_url}/oauth",
            timeout_s=timeout_s,
            ledger=ledger,
            plan=HARNESS_PLAN,
            calls_per_minute=self.minute_limit,
            calls_per_month=self.minute_limit,  # set_quota shrinks both (None: the plan's)
        )
        self.clients.append(client)
        return client

    def calls_served(self) -> int:
        return sum(self.state.calls.values())

    def set_quota(self, limit: int) -> None:
        """Shrink the per-minute AND monthly limits on the fake and on every client made here: with the minute
        alone, a test that straddles a minute boundary would legitimately get a second allowance."""
        self.state.per_minute_limit = self.state.per_month_limit = limit
        self.minute_limit = limit
        for client in self.clients:
            client.quota_rules = (QuotaRule("account", "minute", limit), QuotaRule("account", "month", limit))

    def history_range(self) -> tuple[datetime, datetime]:
        """36 hours ending at yesterday's UTC midnight: longer than `max_window` (1 day), fully uploaded."""
        end = _floor(datetime.now(UTC), timedelta(days=1)) - timedelta(days=1)
        return end - timedelta(hours=36), end


def make_harness() -> tuple[Starlette, Harness]:
    state = FakeState()
    state.set_plan(HARNESS_PLAN)
    state.issued.extend([state.client_secret, state.api_key, WRONG_API_KEY])
    return create_app(state), Harness(state=state, secrets=state.issued)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Enphase Enlighten v4 cloud (OAuth + monitoring API).")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--plan", choices=sorted(PLAN_LIMITS), default="Watt")
    parser.add_argument("--fleet", type=int, default=0, help="add this many generated systems to the account")
    args = parser.parse_args(argv)
    state = FakeState(systems=sandbox_systems() | fleet_systems(args.fleet))
    state.set_plan(args.plan)
    base = f"http://{args.host}:{args.port}"
    print(f"Fake Enphase on {base}: API base {base}/api/v4, OAuth base {base}/oauth")
    print(f"Client ID {SANDBOX_CLIENT_ID}, secret {SANDBOX_CLIENT_SECRET}, API key {SANDBOX_API_KEY}")
    shown = ", ".join(f"{s.system_id} ({s.name})" for s in list(state.systems.values())[:5])
    print(f"Systems: {shown}{' ...' if len(state.systems) > 5 else ''}; plan {args.plan}")
    uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
