"""SolarEdge Monitoring API V2 client (Fleet Access API key), behind the common provider interface.

What V2 offers, mapped to our channels (the vendor facts this relies on: docs/solaredge-v2.md):

    pv_w           GET /sites/{id}/power            15-minute average W, null before the first sample of the day
    grid_import_w  GET /sites/{id}/meters/telemetry importEnergy (Wh per bucket -> W), else importPower
    grid_export_w                                   exportEnergy / exportPower
    load_w                                          consumptionEnergy / consumptionPower, else the energy balance
    battery_w      GET /sites/{id}/storage/telemetry dischargeEnergy - chargeEnergy (positive = discharging)
    soc_pct                                         stateOfEnergy, sent as 0-1 or 0-100, stored as 0-100 %

Negative battery energy samples are dropped (their bucket's battery power stays unknown) and counted: the count is
logged at INFO per answer and kept in `negative_storage_samples` (see `parse.read_storage`).

Every call costs one monthly credit (Free tier: 2,000 a month, 10 a minute), so telemetry is only asked for
when the site has such devices: pass `has_meter` / `has_battery` when known; when left at None the client asks
once and stops asking for the rest of its life if the answer is `{}` (no such device) or 403 (no access).
A history window therefore costs 1 to 3 calls, `test_connection` 2 (site details + power: the details carry no
power reading), `current_power` 1 to 3.

Errors follow `core.providers.base`: 401 -> AuthError, 403/404 -> AuthError naming the setting to check,
410 -> ApiRetired, 429 -> RateLimited (per-minute: `Retry-After`; monthly credits: remaining-minute > 0 and no
`Retry-After`, so retry at the next billing cycle), 5xx/timeouts -> ProviderConnectionError, anything
unreadable -> BadResponse with a redacted excerpt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import polars as pl
from pydantic import SecretStr

from core.providers.answers import decode_json, excerpt, json_or_none, scrub, scrubbed_text
from core.providers.base import (
    READINGS_SCHEMA,
    ApiRetired,
    AuthError,
    BadResponse,
    ConnectionInfo,
    ProviderConnectionError,
    ProviderSite,
    QuotaRule,
    RateLimited,
    empty_readings,
    normalise_readings,
    split_windows,
)
from core.providers.exchange import Exchange, quota_position
from core.providers.http import HttpFunnel
from core.providers.http_pool import HttpPool
from core.providers.quota import QuotaLedger, account_scope, period_bounds
from core.providers.solaredge_v2.parse import (
    Series,
    SiteDetails,
    combine_channels,
    format_time,
    next_cycle_start,
    parse_device_types,
    parse_meters,
    parse_power,
    parse_problem,
    parse_retry_after,
    parse_site_details,
    parse_site_list,
    read_storage,
)
from core.providers.solaredge_v2.spec import (
    CALLS_PER_MINUTE,
    CREDITS_PER_MONTH,
    MAX_WINDOW,
    TELEMETRY_CHANNELS,
    VENDOR,
)

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://monitoringapi.solaredge.com/v2"
SITES_PAGE_SIZE = 1_000  # documented maximum of `sites-in-page`: fewest calls for a fleet key
MAX_SITE_PAGES = 100  # a server that ignores `page` must not loop forever
CURRENT_LOOKBACK = timedelta(hours=1)  # "current power" = the last non-null 15-minute bucket within this span

# Endpoint facts as data: relative path template and what the analyst is told it was fetching.
ENDPOINTS: dict[str, tuple[str, str]] = {
    "sites": ("sites", "the site list"),
    "details": ("sites/{site}", "the site details"),
    "power": ("sites/{site}/power", "the power series"),
    "meters": ("sites/{site}/meters/telemetry", "the meter telemetry"),
    "storage": ("sites/{site}/storage/telemetry", "the battery telemetry"),
    "devices": ("sites/{site}/devices", "the device list"),
}


class _Forbidden(AuthError):
    """403: telemetry callers treat it as "this data is not available to the key" rather than a dead key."""


class SolarEdgeV2Client:
    """One SolarEdge site read through the V2 API with a Fleet Access API key (header `X-API-Key`)."""

    vendor = VENDOR
    resolution = timedelta(minutes=15)

    def __init__(
        self,
        api_key: SecretStr,
        site_id: str,
        *,
        account_key: SecretStr | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 20.0,
        http_client: httpx.Client | None = None,
        http_pool: HttpPool | None = None,
        ledger: QuotaLedger | None = None,
        calls_per_minute: int = CALLS_PER_MINUTE,
        credits_per_month: int = CREDITS_PER_MONTH,
        billing_cycle_day: int = 1,
        max_window: timedelta = MAX_WINDOW,
        has_meter: bool | None = None,
        has_battery: bool | None = None,
        site_timezone: str | None = None,
        sites_page_size: int = SITES_PAGE_SIZE,
        channels: frozenset[str] | None = None,
    ) -> None:
        """`timeout_s` applies when the client makes its own httpx client; an injected one (`http_client`, or the
        process's `http_pool`) keeps its own timeout and is never closed by `close`.

        `channels` are the channels the caller will read (None: all of them); telemetry that serves none of them is
        never asked for, so a PV-only group costs 1 call per window instead of 3 (see `TELEMETRY_CHANNELS`).

        `billing_cycle_day` is the day of month the key's credits reset (the billing-cycle anniversary); it only
        sets `retry_at` when SolarEdge says the monthly credits are spent. The local ledger counts calendar months
        in UTC (see core.providers.quota), which is as strict as the vendor when the cycle starts on the 1st.
        """
        if not 1 <= billing_cycle_day <= 31:
            raise ValueError("billing_cycle_day must be between 1 and 31")
        if max_window <= timedelta(0) or not 1 <= sites_page_size <= SITES_PAGE_SIZE:
            raise ValueError("max_window must be positive and sites_page_size between 1 and 1000")
        self.site_id = str(site_id).strip()
        self.max_window = max_window
        self.quota_rules: Sequence[QuotaRule] = (
            QuotaRule("account", "minute", calls_per_minute),
            QuotaRule("account", "month", credits_per_month),
        )
        self._key = api_key.get_secret_value().strip()
        self._account = account_scope(self._key)
        self._scope = {"account": self._account, "site": self.site_id or "-"}  # what the quota ledger counts
        self._ledger = ledger or QuotaLedger()
        self._billing_cycle_day = billing_cycle_day
        if channels is not None:  # telemetry nobody reads is "not there" for this client
            has_meter = has_meter if channels & TELEMETRY_CHANNELS["meters"] else False
            has_battery = has_battery if channels & TELEMETRY_CHANNELS["storage"] else False
        self._has_meter, self._has_battery = has_meter, has_battery
        self.negative_storage_samples = 0  # negative charge/discharge samples dropped over this client's life
        self._tz = ZoneInfo(site_timezone) if site_timezone else None
        self._page_size = sites_page_size
        headers = {"X-API-Key": self._key, "Accept": "application/json"}
        if account_key is not None and account_key.get_secret_value().strip():
            headers["X-Account-Key"] = account_key.get_secret_value().strip()
        self._http = HttpFunnel(
            base_url, vendor=VENDOR, timeout_s=timeout_s, client=http_client, headers=headers, pool=http_pool
        )

    # --- the one funnel ----------------------------------------------------------------------------------------

    def _request(self, endpoint: str, params: Mapping[str, Any] | None = None, now: datetime | None = None) -> Any:
        """Reserve quota, call, and turn the answer into JSON or a provider error.

        `now` comes from the caller where the interface gives one; `list_sites` and `history` have none, so
        the wall clock is read here, for quota buckets and `retry_at` only.
        """
        template, what = ENDPOINTS[endpoint]
        if "{site}" in template and not self.site_id:
            raise AuthError(f"No {VENDOR} Site ID is configured: enter it in Data Connections.")
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        self._ledger.reserve(VENDOR, self._scope, self.quota_rules, moment)
        with self._ledger.in_flight(VENDOR, self._scope, self.quota_rules):
            response = self._http.request("GET", template.format(site=quote(self.site_id, safe="")), params=params)
        return self._interpret(response, what, moment)

    def _interpret(self, response: httpx.Response, what: str, moment: datetime) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            return self._decode(response, what)
        text = scrubbed_text(response)  # the keys sent in the headers are blanked, should the server echo them
        body = json_or_none(text)
        detail = scrub(parse_problem(body))
        said = f": {detail}" if detail else ""
        if status == 401:
            raise AuthError(
                f"{VENDOR} rejected the API key (401{said}): check the key in Data Connections. V1 keys do not "
                "work with V2; create a V2 key on the SolarEdge Developer Platform."
            )
        if status == 403:
            raise _Forbidden(
                f"{VENDOR} refused access to {what} of site {self.site_id} (403{said}): check that the Site ID "
                "belongs to this API key and that the key's plan includes this data."
            )
        if status == 404:
            if "unknown endpoint" in detail.lower():
                raise AuthError(
                    f"{VENDOR} does not know the address used for {what} (404 Unknown endpoint): check that the "
                    f"base URL setting is {DEFAULT_BASE_URL}."
                )
            raise AuthError(f"{VENDOR} knows no site {self.site_id} for this API key (404): check the Site ID.")
        if status == 410:
            raise ApiRetired(
                f"{VENDOR} answered 410 Gone for {what}: this API address has been switched off (SolarEdge retired "
                f"the V1 API on 2026-11-03). Set the base URL to {DEFAULT_BASE_URL} and use a V2 API key."
            )
        if status == 429:
            raise self._rate_limited(response, moment)
        if status >= 500:
            raise ProviderConnectionError(f"{VENDOR} had a server problem ({status}) with {what}; will retry later.")
        raise BadResponse(
            f"{VENDOR} refused the request for {what} ({status}{said}); this window was skipped.",
            excerpt=excerpt(body if body is not None else text),
        )

    def _rate_limited(self, response: httpx.Response, moment: datetime) -> RateLimited:
        """Two kinds of 429: per-minute (remaining 0 + `Retry-After`) and monthly credits (remaining > 0, no header)."""
        retry_at = parse_retry_after(response.headers.get("retry-after"), moment)
        try:
            remaining: int | None = int(response.headers.get("x-ratelimit-remaining-minute", ""))
        except ValueError:
            remaining = None
        if retry_at is None and remaining is not None and remaining > 0:
            retry_at = next_cycle_start(moment, self._billing_cycle_day)
            return RateLimited(
                f"{VENDOR}'s monthly credits for this API key are spent; calls resume when the billing cycle "
                f"restarts on {retry_at:%Y-%m-%d}. Poll less often or move to a larger plan.",
                retry_at=retry_at,
            )
        if retry_at is None:
            retry_at = period_bounds("minute", moment)[1]
        return RateLimited(
            f"{VENDOR}'s per-minute call limit for this API key is used up; retrying after {retry_at:%H:%M:%S} UTC.",
            retry_at=retry_at,
        )

    @staticmethod
    def _decode(response: httpx.Response, what: str) -> Any:
        return decode_json(
            response,
            html=f"{VENDOR} answered {what} with a web page instead of data (a proxy or maintenance page?); "
            "this answer was skipped.",
            malformed=f"{VENDOR} sent malformed JSON for {what}; this answer was skipped.",
        )

    # --- the provider interface --------------------------------------------------------------------------------

    def test_connection(self, now: datetime) -> ConnectionInfo:
        """Site details, then the last hour of power (the details carry no power reading): 2 credits."""
        details = self._details(now)
        pv = self._series(now - CURRENT_LOOKBACK, now + timedelta(seconds=1), now, telemetry=False)[0]["pv_w"]
        latest = _latest(pv)
        last_update = details.last_update
        if last_update is None:  # the API left it out: the newest bucket with data, else this successful test
            last_update = latest[0] + self.resolution if latest else now.astimezone(UTC)
        return ConnectionInfo(
            site_name=details.name,
            capacity_kw=details.capacity_kw,
            timezone=details.timezone or (str(self._tz) if self._tz else "UTC"),
            current_power_w=latest[1] if latest else None,
            last_update=last_update,
        )

    def list_sites(self) -> list[ProviderSite]:
        """Every site the key can see, page by page until a short page (no next link, `count` is ambiguous)."""
        sites: list[ProviderSite] = []
        seen: set[str] = set()
        for page in range(1, MAX_SITE_PAGES + 1):
            batch = parse_site_list(self._request("sites", {"page": page, "sites-in-page": self._page_size}))
            fresh = [site for site in batch if site.id not in seen]
            sites.extend(fresh)
            seen.update(site.id for site in fresh)
            if len(batch) < self._page_size or not fresh:
                break
        return sites

    def device_types(self, now: datetime | None = None) -> frozenset[str]:
        """Whether the site has meters and batteries: {"METER", "BATTERY"} or part of it (`/devices`, one credit)."""
        return parse_device_types(self._request("devices", {"types": ["METER", "BATTERY"]}, now))

    def current_power(self, now: datetime) -> dict[str, float]:
        """The newest non-null 15-minute average per channel within the last hour (the current bucket is null)."""
        series, _ = self._series(now - CURRENT_LOOKBACK, now + timedelta(seconds=1), now, telemetry=True)
        out = {}
        for channel, values in series.items():
            latest = _latest(values)
            if latest is not None:
                out[channel] = latest[1]
        return out

    def history(self, start: datetime, end: datetime) -> pl.DataFrame:
        """Readings for buckets starting in [start, end), fetched in windows of at most `max_window`."""
        rows: list[tuple[datetime, int, str, float | None]] = []
        for lower, upper in split_windows(start, end, self.max_window):
            series, intervals = self._series(lower, upper, None, telemetry=True)
            for channel, values in series.items():
                rows.extend((ts, intervals[channel], channel, v) for ts, v in values.items() if lower <= ts < upper)
        if not rows:
            return empty_readings()
        return normalise_readings(pl.DataFrame(rows, schema=READINGS_SCHEMA, orient="row"))

    def close(self) -> None:
        self._http.close()

    # --- helpers -----------------------------------------------------------------------------------------------

    def _details(self, now: datetime | None) -> SiteDetails:
        details = parse_site_details(self._request("details", now=now))
        if details.timezone and self._tz is None:
            self._tz = ZoneInfo(details.timezone)
        return details

    def _series(
        self, lower: datetime, upper: datetime, now: datetime | None, *, telemetry: bool
    ) -> tuple[dict[str, Series], dict[str, int]]:
        """All channels for buckets in [lower, upper): 1 call for PV, plus telemetry calls the site needs.

        The API returns every bucket from the one containing `from` to the one containing `to`, so `to` is sent
        one second before `upper` (a bucket starting exactly at `upper` belongs to the next window).
        """
        first = lower.astimezone(UTC).replace(microsecond=0)
        last = max(first, (upper.astimezone(UTC) - timedelta(microseconds=1)).replace(microsecond=0))
        params = {"from": format_time(first), "to": format_time(last), "resolution": "QUARTER_HOUR"}
        pv_interval, pv = parse_power(self._request("power", params, now), self._tz)
        meters: dict[str, Series] = {}
        storage: dict[str, Series] = {}
        intervals = dict.fromkeys(("pv_w",), pv_interval)
        if telemetry and self._has_meter is not False:
            found = self._telemetry("meters", params, now)
            if found is not None:
                interval, meters = parse_meters(found, self._tz)
                intervals.update(dict.fromkeys(("grid_import_w", "grid_export_w", "load_w"), interval))
                if not meters and self._has_meter is None:
                    self._has_meter = False
        if telemetry and self._has_battery is not False:
            found = self._telemetry("storage", params, now)
            if found is not None:
                read = read_storage(found, self._tz)
                interval, storage = read.interval, read.series
                intervals.update(dict.fromkeys(("battery_w", "soc_pct"), interval))
                if read.negative_dropped:
                    self.negative_storage_samples += read.negative_dropped
                    logger.info(
                        "%s site %s sent %d negative battery energy sample(s) between %s and %s; dropped, so "
                        "battery power is unknown for the quarter hour(s) concerned",
                        VENDOR,
                        self.site_id,
                        read.negative_dropped,
                        params["from"],
                        params["to"],
                    )
                if not storage and self._has_battery is None:
                    self._has_battery = False
        return combine_channels(pv, meters, storage), intervals

    def _telemetry(self, endpoint: str, params: Mapping[str, Any], now: datetime | None) -> Any:
        """A telemetry body, or None when the key may not read it (403): PV still works without it."""
        try:
            return self._request(endpoint, params, now)
        except _Forbidden as exc:
            if endpoint == "meters":
                self._has_meter = False
            else:
                self._has_battery = False
            logger.warning("%s; collecting without it from now on", exc)
            return None

    # --- what the collector records (core.providers.exchange) ---------------------------------------------------

    def exchanges(self) -> list[Exchange]:
        """The vendor exchanges made since the last call, oldest first (for `api_data_cache`); then forgotten."""
        return self._http.drain()

    def quota_snapshot(self, now: datetime) -> tuple[int | None, int | None]:
        """(calls used, calls remaining) this month: V2's only counted day/month budget is the monthly credits."""
        return quota_position(self._ledger, VENDOR, self._scope, self.quota_rules, now.astimezone(UTC))


def _latest(series: Series) -> tuple[datetime, float] | None:
    """The newest bucket with a value: "current power" on an API whose in-progress bucket is always null."""
    for ts in sorted(series, reverse=True):
        value = series[ts]
        if value is not None:
            return ts, value
    return None
