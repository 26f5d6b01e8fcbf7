"""A behavioural fake of the SolarEdge Monitoring API V1, as SolarEdge documented it and users observed it.

What it does like the vendor:
- `api_key` query parameter. A bad key answers 401 `application/problem+json` (2026 behaviour) or, in legacy
  modes, 403 `{"String":"Invalid token"}` or a Tomcat-style HTML page. A known key asking for a site it cannot
  read gets 403 "Access is denied" (so does a site-level key asking for `/sites/list`, which the doc reserves for
  account keys); an unknown site or path gets 404.
- Daily quotas per site (300) and per key (300; site calls count against both), counted in windows of
  `quota_window` (the real reset is undocumented), and a gate of 3 concurrent calls: both answer 429 with an
  empty body and no Retry-After. (The vendor's 429 also has an empty reason phrase; uvicorn always writes the
  standard phrase, so the client test checks that case against a raw socket server instead.)
- Range limits from the doc table (1 calendar month for power/powerDetails/energyDetails at 15 min or hourly):
  403 with a text description, as an HTML page (clambin/solaredge saw HTML) or `{"String": ...}`.
- Data for any range from `core.providers.simulator.client`, labelled with naive site-local slot starts: the autumn
  repeated hour appears twice, the spring gap not at all. The current and future slots have no value,
  `*Details` omit the `value` key where there is no data (also Production at night), `power` uses null.
- `currentPowerFlow` in "kW" with mixed-case connection names; `{}` for a site without a flow meter.
- `retired=True` answers 410 everywhere, as V1 does since 2026-11-03; some paths are 410 already (March 2026).
- Failure switches: "429", "5xx", "timeout", "malformed", "html", "410".

Sandbox: `python -m tests.fakes.solaredge_v1 --port 8702`, key `SANDBOX_API_KEY` (account: all sites) or
`SANDBOX_SITE_KEY` (site-level: `SANDBOX_SITE_ID` only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import polars as pl
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from core.providers.quota import QuotaLedger
from core.providers.simulator.client import SimulatedSite, simulate
from core.providers.solaredge_v1.client import DEFAULT_DAILY_SITE_LIMIT, DEFAULT_MAX_WINDOW, SolarEdgeV1Client
from tests.fakes.server import FailureSwitch

SANDBOX_API_KEY = "SANDBOXV1ACCOUNTKEY0000000000000"  # 32 characters, like real keys; reads every sandbox site
SANDBOX_SITE_KEY = "SANDBOXV1SITEKEY1234567000000000"  # a site-level key: reads SANDBOX_SITE_ID only
SANDBOX_SITE_ID = "1234567"
BAD_API_KEY = "WRONGV1KEY0000000000000000000000"
LOCAL_FORMAT = "%Y-%m-%d %H:%M:%S"
METER_TYPES = ("Consumption", "Purchased", "Production", "SelfConsumption", "FeedIn")  # doc sample order
RETIRED_PATHS = ("version/", "accounts/list", "equipment/", "site/{site}/sensors", "site/{site}/changeLog")
RANGE_ENDPOINTS = {"power", "powerDetails", "energyDetails"}  # 1 month at 15 min / hourly ([doc] table)
TIME_UNIT_MINUTES = {"QUARTER_OF_AN_HOUR": 15, "HOUR": 60}


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakeSite:
    """One site the fake serves; `meters` are the meter types it has (empty: `"meters": []`)."""

    id: str
    name: str
    timezone: str
    capacity_kw: float
    latitude: float
    longitude: float
    battery_kwh: float = 10.0
    seed: int = 0
    meters: tuple[str, ...] = METER_TYPES
    flow_meter: bool = True  # False: currentPowerFlow answers `{}` like a site without import/export metering
    installation_date: date = date(2021, 4, 12)
    city: str = "Brussels"
    country: str = "Belgium"

    def simulated(self) -> SimulatedSite:
        return SimulatedSite(
            self.latitude, self.longitude, self.timezone, self.capacity_kw, self.battery_kwh, seed=self.seed
        )


@dataclass
class FakeState:
    """Everything the fake knows and counts; tests tune it between calls."""

    api_keys: dict[str, tuple[str, ...]]  # key -> ids of the sites it may read
    sites: dict[str, FakeSite]
    site_level_keys: set[str] = field(default_factory=set)  # keys made in Site Admin: no /sites/list
    site_daily_limit: int = 300
    account_daily_limit: int = 300
    max_concurrent: int = 3
    quota_window: timedelta = timedelta(days=1)
    auth_style: Literal["problem", "legacy_json", "legacy_html"] = "problem"
    range_error_style: Literal["html", "json"] = "html"
    sites_list_key: Literal["site", "list"] = "site"
    flow_unit: Literal["kW", "W"] = "kW"
    retired: bool = False
    latency_s: float = 0.0  # every answer waits this long (lets tests overlap calls)
    clock: Callable[[], datetime] = _utc_now
    failures: FailureSwitch = field(default_factory=FailureSwitch)
    calls_served: Counter[tuple[str, str]] = field(default_factory=Counter)  # (key, site id or "") -> answers
    quota_used: Counter[tuple[str, int]] = field(default_factory=Counter)  # (scope, window number) -> calls
    largest_window: timedelta = timedelta(0)
    in_flight: int = 0
    max_in_flight: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, params without api_key)


def sandbox_state() -> FakeState:
    """Three sites: Brussels (battery, all meters), Lisbon (no battery), Denver (inverter only, no meters)."""
    sites = [
        FakeSite(SANDBOX_SITE_ID, "Brussels office", "Europe/Brussels", 8.0, 50.85, 4.35, seed=1),
        FakeSite(
            "2345678",
            "Lisbon warehouse",
            "Europe/Lisbon",
            50.0,
            38.72,
            -9.14,
            0.0,
            seed=2,
            city="Lisbon",
            country="Portugal",
        ),
        FakeSite(
            "3456789",
            "Denver depot",
            "America/Denver",
            12.0,
            39.74,
            -104.99,
            0.0,
            seed=3,
            meters=(),
            flow_meter=False,
            city="Denver",
            country="United States",
        ),
    ]
    return FakeState(
        api_keys={SANDBOX_API_KEY: tuple(s.id for s in sites), SANDBOX_SITE_KEY: (SANDBOX_SITE_ID,)},
        sites={s.id: s for s in sites},
        site_level_keys={SANDBOX_SITE_KEY},
    )


# --- vendor-style answers -----------------------------------------------------------------------------------


def _tomcat_page(status: int, title: str, message: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><title>HTTP Status {status} - {title}</title></head><body>'
        f'<h1>HTTP Status {status} - {title}</h1><hr class="line" /><p><b>Type</b> Status Report</p>'
        f"<p><b>Message</b> {message}</p><p><b>Description</b> The server understood the request but refuses to "
        'authorize it.</p><hr class="line" /><h3>Apache Tomcat</h3></body></html>'
    )


def _bad_key(state: FakeState) -> Response:
    if state.auth_style == "legacy_json":
        return JSONResponse({"String": "Invalid token"}, status_code=403)
    if state.auth_style == "legacy_html":
        return HTMLResponse(_tomcat_page(403, "Forbidden", "Invalid token"), status_code=403)
    body = {
        "type": "https://se-api.stoplight.io/docs/monitoring",
        "title": "Unauthorized - Authentication Failed",
        "status": 401,
        "detail": "Invalid API key",
        "instance": None,
        "properties": {"traceId": uuid.uuid4().hex},
    }
    return Response(json.dumps(body), status_code=401, media_type="application/problem+json")


def _validation_error(state: FakeState, message: str) -> Response:
    if state.range_error_style == "json":
        return JSONResponse({"String": message}, status_code=403)
    return HTMLResponse(_tomcat_page(403, "Forbidden", message), status_code=403)


def _too_many() -> Response:
    return Response(b"", status_code=429)  # the vendor's way: no body, no Retry-After


def _failure(kind: str) -> Response:
    if kind == "429":
        return _too_many()
    if kind == "5xx":
        return HTMLResponse("<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>", 503)
    if kind == "malformed":
        return Response('{"details":{"id":1234567,"name":"Brussels', 200, media_type="application/json")
    if kind == "html":
        return HTMLResponse("<html><body><h1>We'll be back soon</h1><p>Scheduled maintenance.</p></body></html>", 200)
    return _retired()


def _retired() -> Response:
    return HTMLResponse(
        "<html><body><h1>410 Gone</h1><p>The SolarEdge Monitoring API V1 has been retired. See "
        "https://marketing.solaredge.com/legacy-api-sign-up-for-interest</p></body></html>",
        status_code=410,
    )


# --- time and data ------------------------------------------------------------------------------------------


def _local(instant: datetime, zone: ZoneInfo) -> str:
    return instant.astimezone(zone).strftime(LOCAL_FORMAT)


def _from_local(text: str, zone: ZoneInfo) -> datetime:
    """A request's naive local time as UTC; an ambiguous one is read as its first occurrence (fold=0)."""
    return datetime.strptime(text, LOCAL_FORMAT).replace(tzinfo=zone).astimezone(UTC)


def _plus_month(naive: datetime) -> datetime:
    """Naive local time one calendar month later (day clamped), the doc's "1 month"."""
    year, month = (naive.year + 1, 1) if naive.month == 12 else (naive.year, naive.month + 1)
    following = date(year + (month == 12), month % 12 + 1, 1)
    last_day = (following - timedelta(days=1)).day
    return naive.replace(year=year, month=month, day=min(naive.day, last_day))


def _floor(instant: datetime, minutes: int) -> datetime:
    step = minutes * 60
    return datetime.fromtimestamp(int(instant.timestamp()) // step * step, UTC)


def _slots(site: FakeSite, start: datetime, end: datetime, minutes: int) -> pl.DataFrame:
    """Simulated slots whose start lies in [start, end] (the vendor's endTime is inclusive)."""
    return simulate(site.simulated(), start, end + timedelta(seconds=1), minutes)


def _meter_value(row: dict[str, Any], meter: str) -> float:
    if meter == "Production":
        return float(row["pv_w"])
    if meter == "Consumption":
        return float(row["load_w"])
    if meter == "Purchased":
        return float(row["grid_import_w"])
    if meter == "FeedIn":
        return float(row["grid_export_w"])
    return max(0.0, float(row["pv_w"]) - float(row["grid_export_w"]))  # SelfConsumption


# --- endpoint handlers --------------------------------------------------------------------------------------


def _site_json(site: FakeSite, now: datetime) -> dict[str, Any]:
    zone = ZoneInfo(site.timezone)
    return {
        "id": int(site.id),
        "name": site.name,
        "accountId": 4711,
        "status": "Active",
        "peakPower": site.capacity_kw,
        "lastUpdateTime": _local(_floor(now, 15), zone),
        "currency": "EUR",
        "installationDate": site.installation_date.isoformat(),
        "ptoDate": None,
        "notes": "",
        "type": "Optimizers & Inverters",
        "location": {
            "country": site.country,
            "city": site.city,
            "address": "1 Sandbox Street",
            "address2": "",
            "zip": "1000",
            "timeZone": site.timezone,
            "countryCode": site.country[:2].upper(),
        },
        "primaryModule": {"manufacturerName": "Sandbox", "modelName": "SB-400", "maximumPower": 400.0},
        "uris": {
            "DETAILS": f"/site/{site.id}/details",
            "DATA_PERIOD": f"/site/{site.id}/dataPeriod",
            "OVERVIEW": f"/site/{site.id}/overview",
        },
        "publicSettings": {"isPublic": False},
    }


def _details(state: FakeState, site: FakeSite, query: dict[str, str], now: datetime) -> Response:
    return JSONResponse({"details": _site_json(site, now)})


def _data_period(state: FakeState, site: FakeSite, query: dict[str, str], now: datetime) -> Response:
    zone = ZoneInfo(site.timezone)
    start = f"{site.installation_date.isoformat()} 00:00:00"
    return JSONResponse({"dataPeriod": {"startDate": start, "endDate": _local(_floor(now, 15), zone)}})


def _overview(state: FakeState, site: FakeSite, query: dict[str, str], now: datetime) -> Response:
    """Today's and this month's energy are simulated; year and lifetime are rough (2.7 kWh/kWp a day)."""
    zone = ZoneInfo(site.timezone)
    local_now = now.astimezone(zone)
    midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    month_start = local_now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    last_slot = _floor(now, 15)
    today = float(simulate(site.simulated(), midnight, last_slot, 15)["pv_w"].sum()) * 0.25
    month = float(simulate(site.simulated(), month_start, _floor(now, 60), 60)["pv_w"].sum())
    current = simulate(site.simulated(), _floor(now, 5), _floor(now, 5) + timedelta(minutes=5), 5)["pv_w"][0]
    daily = site.capacity_kw * 2700.0
    year_days = (local_now.date() - date(local_now.year, 1, 1)).days
    life_days = (local_now.date() - site.installation_date).days
    return JSONResponse(
        {
            "overview": {
                "lastUpdateTime": _local(last_slot, zone),
                "lifeTimeData": {"energy": round(life_days * daily + month, 1)},
                "lastYearData": {"energy": round(year_days * daily + month, 1)},
                "lastMonthData": {"energy": round(float(month), 1)},
                "lastDayData": {"energy": round(float(today), 1)},
                "currentPower": {"power": round(float(current), 3)},
                "measuredBy": "INVERTER",
            }
        }
    )


def _power_flow(state: FakeState, site: FakeSite, query: dict[str, str], now: datetime) -> Response:
    if not site.flow_meter:
        return JSONResponse({"siteCurrentPowerFlow": {}})
    row = simulate(site.simulated(), _floor(now, 5), _floor(now, 5) + timedelta(minutes=5), 5).row(0, named=True)
    scale, digits = (1000.0, 2) if state.flow_unit == "kW" else (1.0, 0)

    def power(watts: float) -> float:
        return round(abs(watts) / scale, digits)

    pv, load, battery = row["pv_w"], row["load_w"], row["battery_w"]
    connections = []
    if pv > 0:
        connections.append({"from": "PV", "to": "Load"})
    if battery < 0:
        connections.append({"from": "PV" if pv > 0 else "LOAD", "to": "Storage"})
    elif battery > 0:
        connections.append({"from": "STORAGE", "to": "Load"})
    if row["grid_import_w"] > 0:
        connections.append({"from": "GRID", "to": "Load"})
    elif row["grid_export_w"] > 0:
        connections.append({"from": "Load", "to": "GRID"})
    flow: dict[str, Any] = {
        "updateRefreshRate": 3,
        "unit": state.flow_unit,
        "connections": connections,
        "GRID": {"status": "Active", "currentPower": power(row["grid_import_w"] + row["grid_export_w"])},
        "LOAD": {"status": "Active", "currentPower": power(load)},
        "PV": {"status": "Active" if pv > 0 else "Idle", "currentPower": power(pv)},
    }
    if site.battery_kwh > 0:
        status = "Charging" if battery < 0 else "Discharging" if battery > 0 else "Idle"
        flow["STORAGE"] = {
            "status": status,
            "currentPower": power(battery),
            "chargeLevel": round(row["soc_pct"]),
            "critical": row["soc_pct"] < 10,
        }
    return JSONResponse({"siteCurrentPowerFlow": flow})


def _parse_range(
    state: FakeState, site: FakeSite, query: dict[str, str], endpoint: str
) -> Response | tuple[datetime, datetime]:
    """startTime/endTime checked the vendor's way: 403 with a description for a bad or too long range."""
    try:
        start_local = datetime.strptime(query.get("startTime", ""), LOCAL_FORMAT)
        end_local = datetime.strptime(query.get("endTime", ""), LOCAL_FORMAT)
    except ValueError:
        return _validation_error(state, "startTime and endTime are required, in the format yyyy-MM-dd hh:mm:ss")
    if end_local < start_local:
        return _validation_error(state, "endTime must not be before startTime")
    if endpoint in RANGE_ENDPOINTS and end_local > _plus_month(start_local):
        return _validation_error(state, "The requested time frame exceeds one month, the maximum for this API")
    zone = ZoneInfo(site.timezone)
    start, end = _from_local(query["startTime"], zone), _from_local(query["endTime"], zone)
    state.largest_window = max(state.largest_window, end - start)
    return start, end


def _details_series(endpoint: str) -> Callable[[FakeState, FakeSite, dict[str, str], datetime], Response]:
    def handler(state: FakeState, site: FakeSite, query: dict[str, str], now: datetime) -> Response:
        parsed = _parse_range(state, site, query, endpoint)
        if isinstance(parsed, Response):
            return parsed
        start, end = parsed
        unit = query.get("timeUnit", "DAY").upper() if endpoint == "energyDetails" else "QUARTER_OF_AN_HOUR"
        if unit not in TIME_UNIT_MINUTES:
            return _validation_error(state, f"timeUnit {unit} is not supported by this sandbox")
        minutes = TIME_UNIT_MINUTES[unit]
        asked = {m.strip().lower() for m in query.get("meters", "").split(",") if m.strip()}
        meters = [m for m in METER_TYPES if m in site.meters and (not asked or m.lower() in asked)]
        rows = _slots(site, start, end, minutes).to_dicts()
        zone, factor = ZoneInfo(site.timezone), (minutes / 60.0 if endpoint == "energyDetails" else 1.0)
        out = []
        for meter in meters:
            values = []
            for row in rows:
                entry: dict[str, Any] = {"date": _local(row["ts"], zone)}
                available = row["ts"] + timedelta(minutes=minutes) <= now
                night = meter == "Production" and row["pv_w"] == 0
                if available and not night:
                    entry["value"] = round(_meter_value(row, meter) * factor, 4)
                values.append(entry)
            out.append({"type": meter, "values": values})
        body = {"timeUnit": unit, "unit": "Wh" if endpoint == "energyDetails" else "W", "meters": out}
        return JSONResponse({endpoint: body})

    return handler


def _power(state: FakeState, site: FakeSite, query: dict[str, str], now: datetime) -> Response:
    parsed = _parse_range(state, site, query, "power")
    if isinstance(parsed, Response):
        return parsed
    zone = ZoneInfo(site.timezone)
    values = []
    for row in _slots(site, *parsed, 15).to_dicts():
        available = row["ts"] + timedelta(minutes=15) <= now and row["pv_w"] > 0
        values.append({"date": _local(row["ts"], zone), "value": round(row["pv_w"], 4) if available else None})
    body = {"timeUnit": "QUARTER_OF_AN_HOUR", "unit": "W", "measuredBy": "INVERTER", "values": values}
    return JSONResponse({"power": body})


SITE_HANDLERS: dict[str, Callable[[FakeState, FakeSite, dict[str, str], datetime], Response]] = {
    "details": _details,
    "dataPeriod": _data_period,
    "overview": _overview,
    "currentPowerFlow": _power_flow,
    "power": _power,
    "powerDetails": _details_series("powerDetails"),
    "energyDetails": _details_series("energyDetails"),
}


def _sites_list(state: FakeState, key: str, query: dict[str, str], now: datetime) -> Response:
    try:
        size, first = int(query.get("size", "100")), int(query.get("startIndex", "0"))
    except ValueError:
        return _validation_error(state, "size and startIndex must be numbers")
    if not 0 < size <= 100 or first < 0:
        return _validation_error(state, "size must be between 1 and 100")
    visible = [state.sites[i] for i in state.api_keys[key] if i in state.sites]
    page = [_site_json(s, now) for s in visible[first : first + size]]
    return JSONResponse({"sites": {"count": len(visible), state.sites_list_key: page}})


# --- the app ------------------------------------------------------------------------------------------------


def _charge(state: FakeState, key: str, site_id: str, now: datetime) -> bool:
    """Count one call against the key (and the site); False when either daily budget is used up."""
    window = int((now - datetime(1970, 1, 1, tzinfo=UTC)) / state.quota_window)
    account, site = (f"account:{key}", window), (f"site:{site_id}", window)
    if state.quota_used[account] >= state.account_daily_limit:
        return False
    if site_id and state.quota_used[site] >= state.site_daily_limit:
        return False
    state.quota_used[account] += 1
    if site_id:
        state.quota_used[site] += 1
    return True


async def _answer(state: FakeState, parts: list[str], key: str, query: dict[str, str]) -> Response:
    kind = state.failures.take()
    if kind == "timeout":
        await asyncio.sleep(state.failures.timeout_s)
    elif kind is not None:
        return _failure(kind)
    if state.latency_s:
        await asyncio.sleep(state.latency_s)
    path = "/".join(parts)
    site_id = parts[1] if len(parts) > 1 and parts[0] == "site" else ""
    if state.retired or any(path.startswith(p.format(site=site_id)) for p in RETIRED_PATHS):
        return _retired()
    if key not in state.api_keys:
        return _bad_key(state)
    now = state.clock()
    if parts == ["sites", "list"] and key in state.site_level_keys:
        # [doc] the site list is for "the account api_key"; a site-level key is refused like a forbidden site
        return HTMLResponse(_tomcat_page(403, "Forbidden", "Access is denied"), status_code=403)
    if parts == ["sites", "list"]:
        return _sites_list(state, key, query, now) if _charge(state, key, "", now) else _too_many()
    if len(parts) != 3 or parts[0] != "site" or parts[2] not in SITE_HANDLERS or site_id not in state.sites:
        return JSONResponse({"String": f"Resource /{path} was not found"}, status_code=404)
    if site_id not in state.api_keys[key]:
        return HTMLResponse(_tomcat_page(403, "Forbidden", "Access is denied"), status_code=403)
    if not _charge(state, key, site_id, now):
        return _too_many()
    return SITE_HANDLERS[parts[2]](state, state.sites[site_id], query, now)


def create_app(state: FakeState) -> Starlette:
    async def endpoint(request: Request) -> Response:
        parts = [p for p in request.path_params["path"].split("/") if p]
        if parts and parts[-1].endswith(".json"):  # [doc] an optional `.json` suffix selects the format
            parts[-1] = parts[-1][: -len(".json")]
        key = request.query_params.get("api_key", "")
        query = {k: v for k, v in request.query_params.items() if k != "api_key"}
        site_id = parts[1] if len(parts) > 1 and parts[0] == "site" else ""
        state.calls_served[(key, site_id)] += 1
        state.requests.append(("/".join(parts), query))
        if state.in_flight >= state.max_concurrent:
            return _too_many()
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            return await _answer(state, parts, key, query)
        finally:
            state.in_flight -= 1

    return Starlette(routes=[Route("/{path:path}", endpoint)])


# --- conformance harness ------------------------------------------------------------------------------------


@dataclass
class Harness:
    state: FakeState
    secrets: list[str]
    site_id: str = SANDBOX_SITE_ID
    quota_limit: int | None = None
    clients: list[SolarEdgeV1Client] = field(default_factory=list)

    def client(
        self,
        base_url: str,
        *,
        ledger: QuotaLedger | None = None,
        timeout_s: float = 1.0,
        bad_credentials: bool = False,
    ) -> SolarEdgeV1Client:
        limit = DEFAULT_DAILY_SITE_LIMIT if self.quota_limit is None else self.quota_limit
        client = SolarEdgeV1Client(
            SecretStr(BAD_API_KEY if bad_credentials else SANDBOX_API_KEY),
            self.site_id,
            base_url=base_url,
            timeout_s=timeout_s,
            ledger=ledger,
            daily_site_limit=limit,
            daily_account_limit=limit,
        )
        self.clients.append(client)
        return client

    def calls_served(self) -> int:
        return sum(self.state.calls_served.values())

    def set_quota(self, limit: int) -> None:
        self.state.site_daily_limit = self.state.account_daily_limit = limit
        self.quota_limit = limit
        for client in self.clients:
            client.quota_rules = tuple(
                type(rule)(rule.scope, rule.period, limit) if rule.period == "day" else rule
                for rule in client.quota_rules
            )

    def history_range(self) -> tuple[datetime, datetime]:
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        return end - DEFAULT_MAX_WINDOW - timedelta(days=2), end


def make_harness() -> tuple[Starlette, Harness]:
    state = sandbox_state()
    return create_app(state), Harness(state=state, secrets=[SANDBOX_API_KEY, SANDBOX_SITE_KEY, BAD_API_KEY])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake SolarEdge Monitoring API V1 (sandbox)")
    parser.add_argument("--port", type=int, default=8702)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--retired", action="store_true", help="answer 410 Gone everywhere, as V1 does since 2026-11-03"
    )
    args = parser.parse_args(argv)
    state = sandbox_state()
    state.retired = args.retired
    print(f"SolarEdge V1 sandbox on http://{args.host}:{args.port}  api_key={SANDBOX_API_KEY}  site={SANDBOX_SITE_ID}")
    uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
