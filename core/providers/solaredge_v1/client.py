"""SolarEdge Monitoring API V1 client (legacy): the `api_key` API at monitoringapi.solaredge.com.

SolarEdge retired V1 on 2026-11-03 and now answers 410 Gone; this client stays for servers and accounts that
still speak V1, and turns a 410 into `ApiRetired` (switch the source to "SolarEdge", i.e. V2) instead of retrying.
The facts it relies on, as SolarEdge documented V1 and users observed it:

- The key travels as the `api_key` query parameter, so no URL or body text reaches a message unredacted (the
  key's literal value is also scrubbed, in case a server echoes it).
- 300 calls a day per site and per account key, at most 3 at once, all enforced here before a call is sent:
  SolarEdge punishes overuse with 429 (empty reason phrase, no Retry-After) for an undocumented time.
- Every time is naive site-local; the zone comes from `details` (or the `timezone` setting) and DST folds and
  gaps are resolved in `parse`.
- History comes from `energyDetails` at QUARTER_OF_AN_HOUR (energy per slot, so the average W is exact) or
  `powerDetails`; both allow "1 month" per call and answer 403 beyond it, so ranges are split first.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx
import polars as pl
from pydantic import SecretStr

from core.providers.answers import decode_json, excerpt, scrubbed_text
from core.providers.base import (
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
from core.providers.quota import QuotaLedger, account_scope
from core.providers.solaredge_v1.parse import (
    REQUEST_METERS,
    SiteDetails,
    error_text,
    format_local,
    is_range_error,
    local_to_utc,
    parse_details,
    parse_meter_readings,
    parse_overview,
    parse_power_flow,
    parse_sites_list,
    retry_after,
    slice_readings,
    zone_for,
)
from core.providers.solaredge_v1.spec import (
    DEFAULT_DAILY_ACCOUNT_LIMIT,
    DEFAULT_DAILY_SITE_LIMIT,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_WINDOW,
    VENDOR,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://monitoringapi.solaredge.com"
# V1 sends no Retry-After and the 429 block length is undocumented: ~16 min observed (TeslaSolarCharger #167),
# "rest of the hour" per the solar-api crate. One hour is the conservative choice.
DEFAULT_RATE_LIMIT_BACKOFF = timedelta(hours=1)
# Each history request reaches this far beyond its window on both sides, so the local start/end we send never
# sits inside an ambiguous DST hour of the rows we keep (shifts are at most 2 h, Antarctica/Troll); the padding
# rows are sliced off after parsing.
DST_PADDING = timedelta(hours=2)
SITES_PAGE_SIZE = 100  # [doc] maximum `size` of /sites/list
MAX_SITE_PAGES = 100

RETIRED_MESSAGE = (
    "SolarEdge retired Monitoring API V1 on 2026-11-03 and this server answers 410 Gone, so no data can be "
    'collected through it. Switch this source to "SolarEdge" (V2) in Data Connections and enter a V2 API key '
    "(V1 keys do not work with V2)."
)
_SITE_ID = re.compile(r"\d*")


@dataclass(frozen=True)
class Endpoint:
    """One V1 endpoint: its path (with `{site}`), whether it counts against a site's quota, extra fixed params."""

    path: str
    label: str
    site_scoped: bool = True
    params: tuple[tuple[str, str], ...] = ()


ENDPOINTS: dict[str, Endpoint] = {
    "sites_list": Endpoint("sites/list", "site list", site_scoped=False),
    "details": Endpoint("site/{site}/details", "details"),
    "overview": Endpoint("site/{site}/overview", "overview"),
    "currentPowerFlow": Endpoint("site/{site}/currentPowerFlow", "current power flow"),
    "powerDetails": Endpoint("site/{site}/powerDetails", "power history", params=(("meters", REQUEST_METERS),)),
    "energyDetails": Endpoint(
        "site/{site}/energyDetails",
        "energy history",
        params=(("meters", REQUEST_METERS), ("timeUnit", "QUARTER_OF_AN_HOUR")),
    ),
}


def account_key(api_key: SecretStr) -> str:
    """The quota scope of a key: never the key itself (ledgers may be persisted and shown)."""
    return account_scope(api_key.get_secret_value())


class SolarEdgeV1Client:
    """One SolarEdge site (or an account key's site list) through the V1 API; implements `MonitoringProvider`."""

    resolution = timedelta(minutes=15)

    def __init__(
        self,
        api_key: SecretStr,
        site_id: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 20.0,
        http_client: httpx.Client | None = None,
        http_pool: HttpPool | None = None,
        ledger: QuotaLedger | None = None,
        timezone: str | None = None,
        history_source: Literal["energyDetails", "powerDetails"] = "energyDetails",
        daily_site_limit: int = DEFAULT_DAILY_SITE_LIMIT,
        daily_account_limit: int = DEFAULT_DAILY_ACCOUNT_LIMIT,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        max_window: timedelta = DEFAULT_MAX_WINDOW,
        rate_limit_backoff: timedelta = DEFAULT_RATE_LIMIT_BACKOFF,
    ) -> None:
        """`site_id` may be "" for an account key used only to list sites; `timezone` (IANA) saves a details call."""
        site_id = site_id.strip()
        if not _SITE_ID.fullmatch(site_id):
            raise ValueError(f"SolarEdge site IDs are numbers, got {site_id!r}")
        if timezone is not None and zone_for(timezone) is None:
            raise ValueError(f"unknown IANA time zone {timezone!r}")
        if history_source not in ("energyDetails", "powerDetails"):
            raise ValueError(f"history_source must be energyDetails or powerDetails, got {history_source!r}")
        if max_window <= timedelta(0):
            raise ValueError("max_window must be positive")
        self._api_key = api_key
        self._account = account_key(api_key)
        self.site_id = site_id
        self.history_source = history_source
        self.max_window = max_window
        self.rate_limit_backoff = rate_limit_backoff
        self.quota_rules: tuple[QuotaRule, ...] = (
            QuotaRule("site", "day", daily_site_limit),
            QuotaRule("account", "day", daily_account_limit),
            QuotaRule("account", "concurrent", max_concurrent),
        )
        self._ledger = ledger if ledger is not None else QuotaLedger()
        self._http = HttpFunnel(base_url, vendor=VENDOR, timeout_s=timeout_s, client=http_client, pool=http_pool)
        self._timezone = timezone
        self._details: SiteDetails | None = None

    # --- MonitoringProvider ------------------------------------------------------------------------------------

    def test_connection(self, now: datetime) -> ConnectionInfo:
        """Two calls, as V1 has no single one that gives both: `details` (name, kWp, zone) and `overview` (power)."""
        details = self._fetch_details(now)
        overview = parse_overview(self._request("overview", now=now))
        zone_name = self._timezone or details.timezone
        zone = zone_for(zone_name)
        if zone is None or zone_name is None:
            raise self._no_zone(details.timezone)
        last_local = overview.last_update_local or details.last_update_local
        if last_local is None:
            raise BadResponse(
                f"{VENDOR} site {self.site_id} has not reported any data yet (no lastUpdateTime); check that the "
                "site is commissioned and transmitting in the SolarEdge portal."
            )
        return ConnectionInfo(
            site_name=details.name,
            capacity_kw=details.capacity_kw,
            timezone=zone_name,
            current_power_w=overview.current_power_w,
            last_update=local_to_utc(last_local, zone),
        )

    def list_sites(self) -> list[ProviderSite]:
        """Every site of an account key (paged by 100). A site-level key cannot list: fall back to its own site."""
        sites: list[ProviderSite] = []
        for page in range(MAX_SITE_PAGES):
            params = {"size": str(SITES_PAGE_SIZE), "startIndex": str(page * SITES_PAGE_SIZE)}
            try:
                payload = self._request("sites_list", params)
            except AuthError:
                if page > 0 or not self.site_id:
                    raise
                details = self._fetch_details(None)
                return [ProviderSite(details.id, details.name, details.timezone, details.capacity_kw)]
            found, count = parse_sites_list(payload)
            sites.extend(found)
            if not found or len(sites) >= count:
                break
        return sites

    def current_power(self, now: datetime) -> dict[str, float]:
        """Signed power per channel from `currentPowerFlow`; PV from `overview` when the site cannot measure flows."""
        flow = parse_power_flow(self._request("currentPowerFlow", now=now))
        if not flow:  # [doc] an empty object when the site has no meter for import/export/consumption
            overview = parse_overview(self._request("overview", now=now))
            if overview.current_power_w is not None:
                flow["pv_w"] = overview.current_power_w
        return flow

    def history(self, start: datetime, end: datetime) -> pl.DataFrame:
        """Readings for [start, end): one call per `max_window`, padded for DST and sliced back to the window.

        Uses `datetime.now(UTC)` only for quota buckets (see `_request`).
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        if end <= start:
            return empty_readings()
        zone = self._zone()
        source = self.history_source
        frames = []
        for lower, upper in split_windows(start, end, self.max_window):
            params = {
                "startTime": format_local(lower - DST_PADDING, zone),
                "endTime": format_local(upper + DST_PADDING, zone),
            }
            payload = self._request(source, params)
            frames.append(slice_readings(parse_meter_readings(payload, source, zone), lower, upper))
        return normalise_readings(pl.concat(frames)) if frames else empty_readings()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SolarEdgeV1Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------------------------------

    def _fetch_details(self, now: datetime | None) -> SiteDetails:
        self._details = parse_details(self._request("details", now=now))
        return self._details

    def _zone(self) -> ZoneInfo:
        """The site's zone: the setting, else `details` (fetched once per client; a site's zone does not move)."""
        details = None if self._timezone else self._details or self._fetch_details(None)
        zone = zone_for(self._timezone or (details.timezone if details else None))
        if zone is None:
            raise self._no_zone(details.timezone if details else self._timezone)
        return zone

    def _no_zone(self, name: str | None) -> BadResponse:
        return BadResponse(
            f"{VENDOR} site {self.site_id} reports no usable time zone ({name!r}), so its local times cannot be "
            "converted to UTC; set the site's time zone in the SolarEdge portal.",
            excerpt(name or ""),
        )

    def _request(self, name: str, params: dict[str, str] | None = None, now: datetime | None = None) -> Any:
        """The one funnel: quota, concurrency slot, HTTP, status mapping, JSON decoding.

        `now` defaults to `datetime.now(UTC)`: it only picks the quota bucket and the retry time after a 429.
        """
        endpoint = ENDPOINTS[name]
        when = now or datetime.now(UTC)
        if endpoint.site_scoped and not self.site_id:
            raise AuthError(f"No {VENDOR} site ID is configured: enter the site ID in Data Connections.")
        scope = self._quota_scope(endpoint.site_scoped)
        self._ledger.reserve(VENDOR, scope, self.quota_rules, when)
        query = {**dict(endpoint.params), **(params or {}), "api_key": self._api_key.get_secret_value()}
        with self._ledger.in_flight(VENDOR, scope, self.quota_rules):
            response = self._http.request("GET", endpoint.path.format(site=self.site_id), params=query)
        log.debug("%s %s -> %s", VENDOR, endpoint.label, response.status_code)
        what = f"site {self.site_id} {endpoint.label}" if endpoint.site_scoped else endpoint.label
        if response.is_success:
            return self._decode(response, what)
        raise self._error(response, what, endpoint, when)

    @staticmethod
    def _decode(response: httpx.Response, what: str) -> Any:
        return decode_json(
            response,
            html=f"{VENDOR} answered an HTML page instead of JSON for the {what} (maintenance or a proxy error); "
            "the answer was skipped and the next poll will try again.",
            malformed=f"{VENDOR} answered malformed JSON for the {what}; the answer was skipped.",
        )

    def _error(self, response: httpx.Response, what: str, endpoint: Endpoint, now: datetime) -> Exception:
        """A non-2xx answer as the error that tells the caller what to do next."""
        status = response.status_code
        text = scrubbed_text(response)  # the `api_key` query parameter is blanked, should the server echo it
        reason = error_text(text)
        quoted = f": {reason}" if reason else ""
        if status == 410:
            return ApiRetired(RETIRED_MESSAGE)
        if status == 429:  # no Retry-After is documented, and the reason phrase is empty; honour one if present
            until = retry_after(response.headers.get("retry-after"), now) or now + self.rate_limit_backoff
            return RateLimited(
                f"{VENDOR} refused the {what} call (429: over its 300 calls a day per site or key, or more than 3 "
                f"at once); calls pause until {until:%Y-%m-%d %H:%M} UTC. Poll less often if this repeats.",
                retry_at=until,
            )
        if status >= 500:
            return ProviderConnectionError(f"{VENDOR} failed on its side ({status}) for the {what}; will retry later.")
        if status == 401:
            return AuthError(
                f"{VENDOR} rejected the API key (401{quoted}): check the key in Data Connections. A new key works "
                "only after Save is clicked on the API Access page of the SolarEdge portal."
            )
        if status == 403 and is_range_error(reason):
            return BadResponse(
                f"{VENDOR} refused the time range asked for the {what} (403{quoted}); this client should have "
                "split it into shorter windows: lower max_window.",
                excerpt(text),
            )
        if status == 403 and re.search(r"(?i)token|api[ _-]?key|invalid key", reason):
            return AuthError(
                f"{VENDOR} rejected the API key (403{quoted}): check the key in Data Connections. A new key works "
                "only after Save is clicked on the API Access page of the SolarEdge portal."
            )
        if status == 403:
            return AuthError(
                f"{VENDOR} denied access to the {what} (403{quoted}): check that the key belongs to this site or "
                "its account (a site-level key reads only its own site) and the site ID in Data Connections."
            )
        if status == 404 and endpoint.site_scoped:
            # Not retryable: a wrong site ID (or base URL) only changes when the configuration does.
            return AuthError(
                f"{VENDOR} does not know the {what} (404): check the site ID and the base URL in Data Connections."
            )
        return BadResponse(f"{VENDOR} refused the {what} call ({status}{quoted}).", excerpt(text))

    # --- what the collector records (core.providers.exchange) ---------------------------------------------------

    def exchanges(self) -> list[Exchange]:
        """The vendor exchanges made since the last call, oldest first (for `api_data_cache`); then forgotten."""
        return self._http.drain()

    def quota_snapshot(self, now: datetime) -> tuple[int | None, int | None]:
        """(calls used, calls remaining) today, for whichever daily budget (site or account key) is tighter."""
        return quota_position(
            self._ledger, VENDOR, self._quota_scope(bool(self.site_id)), self.quota_rules, now.astimezone(UTC)
        )

    def _quota_scope(self, site_scoped: bool) -> dict[str, str]:
        """The ledger keys a call counts against: the key's account, and the site for site-scoped endpoints."""
        return {"account": self._account, "site": self.site_id} if site_scoped else {"account": self._account}
