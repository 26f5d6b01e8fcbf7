"""Enphase Enlighten API v4 client: OAuth 2.0 bearer token + application `key`, plan limits enforced client-side.

Every monitoring call carries `Authorization: Bearer <access token>` AND `?key=<application API key>` (see
docs/enphase-v4.md), so URLs hold a credential: they only ever reach messages through `redact`. Tokens come from a
`TokenStore` (the app keeps them encrypted); the client renews them itself, before expiry and after a 401, and saves
the rotated pair before using it (see `EnphaseClient._refresh_locked`). The live status stream
(`core/providers/enphase/live_stream.py`) goes through the same client (`EnphaseClient.stream`): same grant, key,
quota and funnel.

Errors (what the caller does next):
    401 on the API (after one renewal)      AuthError: key of another application, or authorisation revoked
    400/401 on the token endpoint           NeedsReauthorization: the owner must approve again in Data Connections
    403 / 404                               AuthError: the account cannot see that system / no such system
    410                                     ApiRetired
    422 (future date, invalid range)        RangeRejected (a BadResponse); history treats it as "no data yet"
    429 {"period","period_end",...}         RateLimited(retry_at=period_end); "month" means stop until next month
    500 {"errorCode":7,...} and other 5xx   ProviderConnectionError: retry later
    HTML / invalid JSON / odd shapes        BadResponse with a redacted excerpt
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import polars as pl
from pydantic import SecretStr

from core.providers.answers import decode_json, scrub, scrubbed_text, secrets_of
from core.providers.base import (
    BadResponse,
    ConnectionInfo,
    NeedsReauthorization,
    ProviderConnectionError,
    ProviderSite,
    QuotaRule,
    empty_readings,
    normalise_readings,
    split_windows,
)
from core.providers.enphase.endpoints import DEFAULT_ENDPOINTS, ENDPOINT_CHANNELS, ENDPOINTS
from core.providers.enphase.oauth import (
    DEFAULT_AUTH_URL,
    DEFAULT_REFRESH_TTL,
    REAUTHORIZE_HINT,
    Tokens,
    TokenStore,
    request_tokens,
    token_url,
)
from core.providers.enphase.parse import (
    TELEMETRY_PARSERS,
    RangeRejected,
    SystemInfo,
    error_for,
    parse_summary,
    parse_system,
    parse_systems_page,
)
from core.providers.enphase.spec import PLANS, VENDOR, plan_key
from core.providers.exchange import Exchange, quota_position
from core.providers.http import HttpFunnel
from core.providers.http_pool import HttpPool
from core.providers.quota import QuotaLedger, account_scope

DEFAULT_BASE_URL = "https://api.enphaseenergy.com/api/v4"
SYSTEMS_PAGE_SIZE = 100  # the documented maximum of GET /systems
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _floor(instant: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((instant - epoch) // step) * step


class EnphaseClient:
    """One Enphase system through the v4 Monitoring API, for one OAuth grant (implements `MonitoringProvider`).

    `history` costs one call per endpoint per window (up to 5 per day with the default endpoints, fewer when
    `channels` leaves some out): on the Watt plan (1,000 calls/month) poll sparingly. Token calls are not counted:
    plan limits apply to `/api/v4` hits.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: SecretStr,
        api_key: SecretStr,
        system_id: str,
        token_store: TokenStore,
        base_url: str = DEFAULT_BASE_URL,
        auth_url: str = DEFAULT_AUTH_URL,
        timeout_s: float = 20.0,
        http_client: httpx.Client | None = None,
        http_pool: HttpPool | None = None,
        ledger: QuotaLedger | None = None,
        plan: str = "watt",
        calls_per_minute: int | None = None,
        calls_per_month: int | None = None,
        endpoints: Sequence[str] = DEFAULT_ENDPOINTS,
        refresh_margin: timedelta = timedelta(minutes=5),
        refresh_ttl: timedelta = DEFAULT_REFRESH_TTL,
        channels: frozenset[str] | None = None,
    ) -> None:
        """`channels` (None: all) keeps only the `endpoints` that serve one of them (see `ENDPOINT_CHANNELS`), so each
        history window costs one call per endpoint actually read; none left means `history` calls nobody."""
        chosen_plan = plan_key(plan)
        if not _SAFE_ID.match(system_id.strip()):
            raise ValueError("system_id must be the numeric Enphase System ID")
        unknown = [name for name in endpoints if name not in ENDPOINTS]
        if unknown or not endpoints:
            raise ValueError(f"endpoints must be a non-empty selection of {', '.join(ENDPOINTS)}; got {unknown}")
        if not client_id.strip() or not client_secret.get_secret_value() or not api_key.get_secret_value():
            raise ValueError("client_id, client_secret and api_key are all required for Enphase")
        per_minute, per_month = PLANS[chosen_plan]
        self.plan = chosen_plan
        self.system_id = system_id.strip()
        self.endpoints = tuple(name for name in endpoints if channels is None or ENDPOINT_CHANNELS[name] & channels)
        chosen = [ENDPOINTS[name] for name in self.endpoints or endpoints]  # windows as if all were read
        self.resolution = min(ep.interval for ep in chosen)
        self.max_window = min(ep.max_window for ep in chosen)
        self._grid = max(ep.interval for ep in chosen)  # windows start on it so every endpoint's intervals align
        self.quota_rules: tuple[QuotaRule, ...] = (
            QuotaRule("account", "minute", calls_per_minute or per_minute),
            QuotaRule("account", "month", calls_per_month or per_month),
        )
        self._client_id = client_id.strip()
        self._client_secret = client_secret
        self._api_key = api_key
        self._token_store = token_store
        self._token_url = token_url(auth_url)
        self._refresh_margin = refresh_margin
        self._refresh_ttl = refresh_ttl
        self._ledger = ledger or QuotaLedger()
        # Plan limits count per application, and the API key names the application.
        account = account_scope(api_key.get_secret_value())
        self._scope = {"account": account, "site": self.system_id}
        self._funnel = HttpFunnel(base_url, vendor=VENDOR, timeout_s=timeout_s, client=http_client, pool=http_pool)
        self._token_lock = token_store.lock  # shared by every client of the same grant (see TokenStore)
        self._tokens: Tokens | None = None
        self._unsaved: Tokens | None = None
        self._system: SystemInfo | None = None

    # --- MonitoringProvider -----------------------------------------------------------------------------------

    def test_connection(self, now: datetime) -> ConnectionInfo:
        """System name and zone (first time only: they are cached) plus the summary: 2 calls, then 1.

        The summary alone has no name or time zone, and no single v4 endpoint has both them and current power.
        """
        system = self._system_info(now)
        summary = parse_summary(self._request(f"systems/{self.system_id}/summary", {}, now))
        last = summary.last_report_at or summary.last_interval_end_at or system.last_report_at
        if last is None:
            raise BadResponse(f"{VENDOR} did not say when system {self.system_id} last reported.")
        return ConnectionInfo(
            site_name=system.name,
            capacity_kw=summary.size_w / 1000.0 if summary.size_w is not None else None,
            timezone=system.timezone or "UTC",
            current_power_w=summary.current_power_w,
            last_update=last,
        )

    def current_power(self, now: datetime) -> dict[str, float]:
        """PV power from the summary only (one call): load and battery would cost a call each on a tight plan."""
        summary = parse_summary(self._request(f"systems/{self.system_id}/summary", {}, now))
        return {} if summary.current_power_w is None else {"pv_w": summary.current_power_w}

    def list_sites(self) -> list[ProviderSite]:
        """Every system the grant can see, 100 per page (one call per page)."""
        sites: list[ProviderSite] = []
        page = 1
        while True:
            found, total = parse_systems_page(self._request("systems", {"page": page, "size": SYSTEMS_PAGE_SIZE}))
            sites.extend(found)
            if not found or len(sites) >= total:
                return sites
            page += 1

    def history(self, start: datetime, end: datetime) -> pl.DataFrame:
        """Readings whose interval starts in [start, end), one call per endpoint per `max_window`.

        Windows start on the coarsest endpoint grid (15 min) so no interval is cut; a 422 (future or
        out-of-range start) means "no data" for that window, and the first future window ends the walk.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        frames: list[pl.DataFrame] = []
        for window_start, window_end in split_windows(_floor(start, self._grid), end, self.max_window):
            for name in self.endpoints:
                endpoint = ENDPOINTS[name]
                params = {
                    "start_at": int(window_start.timestamp()),
                    "granularity": endpoint.granularity_for(window_end - window_start),
                }
                try:
                    body = self._request(f"systems/{self.system_id}/{endpoint.path}", params)
                except RangeRejected as exc:
                    if exc.future:  # this window and every later one: nothing to ask for yet
                        return self._readings(frames, start, end)
                    continue
                frames.append(TELEMETRY_PARSERS[name](body))
        return self._readings(frames, start, end)

    @staticmethod
    def _readings(frames: list[pl.DataFrame], start: datetime, end: datetime) -> pl.DataFrame:
        if not frames:
            return empty_readings()
        frame = pl.concat(frames).filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        return normalise_readings(frame)

    def close(self) -> None:
        self._funnel.close()

    # --- the funnel -----------------------------------------------------------------------------------------

    def _system_info(self, now: datetime) -> SystemInfo:
        if self._system is None:
            self._system = parse_system(self._request(f"systems/{self.system_id}", {}, now))
        return self._system

    def _request(self, path: str, params: dict[str, Any], now: datetime | None = None) -> Any:
        """One API call: valid token, quota, `key` + Bearer, one renewal on 401, status -> error, JSON decode.

        `now` defaults to the clock for `list_sites`/`history` (quota buckets and token expiry only).
        """
        now = now or datetime.now(UTC)
        tokens = self._valid_tokens(now)
        response = self._send(path, params, tokens, now)
        if response.status_code == 401:
            tokens = self._renew_after_401(now, tokens)
            response = self._send(path, params, tokens, now)
        if response.status_code != 200:
            text = scrubbed_text(response, self._known_secrets())
            raise error_for(response.status_code, text, system_id=self.system_id, now=now)
        return self._decode(response)

    @contextmanager
    def stream(self, path: str, headers: Mapping[str, str], now: datetime) -> Iterator[httpx.Response]:
        """One API call whose answer is read while it arrives (the live status stream, `live_stream.py`): the same
        token, quota, credentials and single renewal after a 401 as every other call. Yields the response with its
        status unchecked; a non-200 answer's body is read (quote it through `scrubbed`), a 200's is left to the
        caller. Leaving the block closes the stream."""
        tokens = self._valid_tokens(now)
        with self._open_stream(path, headers, tokens, now) as response:
            if response.status_code != 401:
                if response.status_code != 200:
                    response.read()
                yield response
                return
            response.read()
        tokens = self._renew_after_401(now, tokens)
        with self._open_stream(path, headers, tokens, now) as response:
            if response.status_code != 200:
                response.read()
            yield response

    def scrubbed(self, text: str, response: httpx.Response) -> str:
        """`text` (from `response`) without any credential the request sent or the grant holds."""
        return scrub(text, secrets_of(response, self._known_secrets()))

    @contextmanager
    def _open_stream(
        self, path: str, headers: Mapping[str, str], tokens: Tokens, now: datetime
    ) -> Iterator[httpx.Response]:
        self._ledger.reserve(VENDOR, self._scope, self.quota_rules, now)
        with (
            self._ledger.in_flight(VENDOR, self._scope, self.quota_rules),
            self._funnel.stream(
                "GET",
                path,
                params={"key": self._api_key.get_secret_value()},
                headers={**headers, "Authorization": f"Bearer {tokens.access_token.get_secret_value()}"},
            ) as response,
        ):
            yield response

    def _send(self, path: str, params: dict[str, Any], tokens: Tokens, now: datetime) -> httpx.Response:
        self._ledger.reserve(VENDOR, self._scope, self.quota_rules, now)
        with self._ledger.in_flight(VENDOR, self._scope, self.quota_rules):
            return self._funnel.request(
                "GET",
                path,
                params={**params, "key": self._api_key.get_secret_value()},
                headers={
                    "Authorization": f"Bearer {tokens.access_token.get_secret_value()}",
                    "Accept": "application/json",
                },
            )

    def _decode(self, response: httpx.Response) -> Any:
        return decode_json(
            response,
            html=f"{VENDOR} answered with an HTML page instead of data (maintenance or a proxy error).",
            malformed=f"{VENDOR} answered something that is not valid JSON.",
            extra_secrets=self._known_secrets(),
        )

    def _known_secrets(self) -> list[str]:
        """Secrets a call may not have sent but a server might still echo: the client secret and the grant's current
        tokens (after a renewal they differ from the Bearer that was sent). The `key` parameter and the Bearer token
        sent are known from the request itself (`core.providers.answers.secrets_of`)."""
        secrets = [self._client_secret.get_secret_value()]
        if self._tokens is not None:
            secrets += [self._tokens.access_token.get_secret_value(), self._tokens.refresh_token.get_secret_value()]
        return secrets

    # --- tokens ---------------------------------------------------------------------------------------------

    def _valid_tokens(self, now: datetime) -> Tokens:
        """The access token to use now, renewed first if it expires within `refresh_margin`."""
        with self._token_lock:
            self._save_unsaved()
            if self._tokens is None:
                self._tokens = self._token_store.load()
            if self._tokens is None:
                raise NeedsReauthorization(
                    f"{VENDOR} has not been authorised for system {self.system_id} yet: {REAUTHORIZE_HINT}."
                )
            if self._tokens.access_expires_at - self._refresh_margin <= now:
                return self._refresh_locked(now, self._tokens)
            return self._tokens

    def _renew_after_401(self, now: datetime, rejected: Tokens) -> Tokens:
        with self._token_lock:
            self._save_unsaved()
            current = self._tokens
            if current is not None and _secret(current.access_token) != _secret(rejected.access_token):
                return current  # another thread renewed them while this call was in flight
            return self._refresh_locked(now, rejected, trust_expiry=False)

    def _refresh_locked(self, now: datetime, stale: Tokens, *, trust_expiry: bool = True) -> Tokens:
        """Rotate the tokens; the caller holds `_token_lock`.

        Order matters because Enphase rotates the refresh token: once the refresh call returns, the old refresh
        token is dead and the new one exists only in this process. So the new pair is SAVED FIRST and only then
        used: if the process dies after the save, the store holds a working grant; if the save fails, the new pair
        is kept in memory as "unsaved", nothing is fetched with it, and the save is retried before the next call.
        Using it first and saving after would let a crash in between lose the only valid refresh token, and with
        it the owner's consent.

        Another process (the collector next to the page) may have rotated the grant already: the store is read
        again first, and its tokens are adopted instead of refreshing with a refresh token that is now dead.
        """
        stored = self._token_store.load()
        newer = stored is not None and _secret(stored.access_token) != _secret(stale.access_token)
        if stored is not None and newer and (not trust_expiry or stored.access_expires_at - self._refresh_margin > now):
            self._tokens = stored
            return stored
        source = stored if stored is not None else stale
        fresh = request_tokens(
            self._funnel,
            self._token_url,
            {"grant_type": "refresh_token", "refresh_token": _secret(source.refresh_token)},
            client_id=self._client_id,
            client_secret=self._client_secret,
            now=now,
            refresh_ttl=self._refresh_ttl,
        )
        self._unsaved = fresh
        self._save_unsaved()
        return fresh

    def _save_unsaved(self) -> None:
        """Persist renewed tokens before anything uses them (see `_refresh_locked`)."""
        if self._unsaved is None:
            return
        try:
            self._token_store.save(self._unsaved)
        except Exception as exc:  # the store is the app's; any failure must keep the new grant in memory
            raise ProviderConnectionError(
                f"{VENDOR} renewed this source's authorisation but it could not be saved ({type(exc).__name__}); "
                "nothing was fetched with it and saving is retried on the next call."
            ) from exc
        self._tokens, self._unsaved = self._unsaved, None

    # --- what the collector records (core.providers.exchange) ---------------------------------------------------

    def exchanges(self) -> list[Exchange]:
        """The API exchanges made since the last call, oldest first (for `api_data_cache`); then forgotten.

        Token endpoint calls are never among them: their answers are the OAuth tokens (see `request_tokens`).
        """
        return self._funnel.drain()

    def quota_snapshot(self, now: datetime) -> tuple[int | None, int | None]:
        """(calls used, calls remaining) this month on the application's plan (token calls are not counted)."""
        return quota_position(self._ledger, VENDOR, self._scope, self.quota_rules, now.astimezone(UTC))


def _secret(value: SecretStr) -> str:
    return value.get_secret_value()
