"""Enphase v4 OAuth 2.0 (authorization code grant): the consent URL, the token endpoint, and where tokens live.

The flow (Enphase's developer quickstart; docs/enphase-v4.md, "Authorization"):

1. The system owner opens `authorize_url(...)`, signs in to Enlighten and approves; Enphase sends
   `?code=...&state=...` to the redirect URI (or shows the code on its own redirect page).
2. `exchange_code(...)` swaps the code for tokens: `POST {auth}/token?grant_type=authorization_code&...` with
   `Authorization: Basic base64(client_id:client_secret)`; the parameters go in the query string, as in the
   official sample. A code works once.
3. `EnphaseClient` renews them: `POST {auth}/token?grant_type=refresh_token&refresh_token=...`. Enphase
   issues a NEW refresh token every time and the old one stops working, so the new pair must be saved before it is
   used (see `EnphaseClient`): losing it means the owner has to approve again.

Token endpoint error bodies are not documented by Enphase (docs/enphase-v4.md); we follow RFC 6749 §5.2 as the
Spring OAuth server behind it answers: 400 `{"error":"invalid_grant",...}` for a used/unknown code or refresh token,
401 for bad client credentials or an expired refresh token. Both mean the grant is unusable:
`NeedsReauthorization`. Such servers echo the rejected token in `error_description`, so that text is never shown.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
from pydantic import SecretStr

from core.providers.answers import decode_json, excerpt, json_or_none, scrubbed_text
from core.providers.base import (
    AuthError,
    BadResponse,
    NeedsReauthorization,
    ProviderConnectionError,
    RateLimited,
)
from core.providers.enphase.spec import VENDOR
from core.providers.http import HttpFunnel

DEFAULT_AUTH_URL = "https://api.enphaseenergy.com/oauth"  # the OAuth BASE: /authorize and /token live under it
# Quickstart: refresh token valid 1 week on Watt/Kilowatt/Megawatt (api-evangelist says 1 month [?]; design for 1 week).
# The token response does not say, so this is an estimate used for "authorisation expires on" hints only: the
# client always tries the refresh and lets Enphase decide.
DEFAULT_REFRESH_TTL = timedelta(days=7)
REAUTHORIZE_HINT = "authorise again in Data Connections (Authorize with Enphase) and paste the new code"

_OAUTH_ERROR = re.compile(r"^[a-z_]{1,40}$")


@dataclass(frozen=True)
class Tokens:
    """One OAuth grant's current tokens; instants are UTC-aware.

    `refresh_expires_at` is an estimate (Enphase's token response gives no refresh lifetime), or None if unknown.
    """

    access_token: SecretStr
    refresh_token: SecretStr
    access_expires_at: datetime
    refresh_expires_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("access_expires_at", "refresh_expires_at"):
            value = getattr(self, name)
            if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                raise ValueError(f"{name} must be timezone-aware (UTC)")


class TokenStore(Protocol):
    """Where a grant's tokens persist between runs (the app keeps them encrypted in DuckDB).

    `save` must be durable when it returns: the client uses a rotated refresh token only after `save` succeeded.
    `lock` is held around each read-renew-save of the grant: clients of several systems that share one grant
    (one owner's authorisation) take the same lock, so only one of them renews it and the others adopt the result
    (Enphase rotates the refresh token: a second renewal with the old one would fail).
    """

    @property
    def lock(self) -> threading.Lock: ...

    def load(self) -> Tokens | None: ...

    def save(self, tokens: Tokens) -> None: ...


# --- pure functions ------------------------------------------------------------------------------------------


def authorize_url(client_id: str, redirect_uri: str | None, state: str | None, auth_url: str = DEFAULT_AUTH_URL) -> str:
    """The page Enphase shows to the system owner; it sends `?code=...&state=...` back to `redirect_uri`, or, with
    none, to Enphase's own `default_redirect_uri`, which shows the code for the owner to copy.

    `auth_url` is the OAuth base ("https://api.enphaseenergy.com/oauth"); a full ".../authorize" URL is accepted too,
    as earlier versions of this function took one.
    """
    query = {"response_type": "code", "client_id": client_id}
    if redirect_uri is not None:
        query["redirect_uri"] = redirect_uri
    if state is not None:
        query["state"] = state
    return f"{_oauth_base(auth_url)}/authorize?{urlencode(query)}"


def default_redirect_uri(auth_url: str = DEFAULT_AUTH_URL) -> str:
    """Where Enphase sends the owner when the consent link names no redirect: a page showing the code. The token
    exchange of such a code must name this same address."""
    return f"{_oauth_base(auth_url)}/redirect_uri"


def _oauth_base(auth_url: str) -> str:
    base = auth_url.rstrip("/")
    return base[: -len("/authorize")] if base.endswith("/authorize") else base


def token_url(auth_url: str = DEFAULT_AUTH_URL) -> str:
    return f"{_oauth_base(auth_url)}/token"


def basic_auth(client_id: str, client_secret: SecretStr) -> str:
    raw = f"{client_id}:{client_secret.get_secret_value()}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def parse_token_response(body: Any, now: datetime, refresh_ttl: timedelta = DEFAULT_REFRESH_TTL) -> Tokens:
    """The quickstart's token JSON -> `Tokens`; `expires_in` counts from `now` (when the answer arrived)."""
    if not isinstance(body, Mapping):
        raise BadResponse(f"{VENDOR}'s token endpoint did not answer with a JSON object.")
    access, refresh, expires_in = body.get("access_token"), body.get("refresh_token"), body.get("expires_in")
    if not isinstance(access, str) or not access or not isinstance(refresh, str) or not refresh:
        raise BadResponse(f"{VENDOR}'s token answer lacks access_token or refresh_token.")
    if isinstance(expires_in, str) and expires_in.strip().isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
        raise BadResponse(f"{VENDOR}'s token answer has no usable expires_in.")
    now = now.astimezone(UTC)
    return Tokens(
        access_token=SecretStr(access),
        refresh_token=SecretStr(refresh),
        access_expires_at=now + timedelta(seconds=float(expires_in)),
        refresh_expires_at=now + refresh_ttl,
    )


def token_error(
    status: int, text: str, grant_type: str, retry_after: str | None = None, now: datetime | None = None
) -> Exception:
    """Map a non-200 token endpoint answer to the error tree (message never quotes the body's description)."""
    body = json_or_none(text)
    error = body.get("error") if isinstance(body, dict) else None
    code = f" ({error})" if isinstance(error, str) and _OAUTH_ERROR.match(error) else ""
    if status in (400, 401):
        if grant_type == "authorization_code":
            return NeedsReauthorization(
                f"{VENDOR} refused the authorization code{code}, HTTP {status}: a code works only once and only "
                f"with the Client ID/Secret of the same application; {REAUTHORIZE_HINT}."
            )
        return NeedsReauthorization(
            f"{VENDOR} no longer accepts this source's authorisation{code}, HTTP {status}: the refresh token expired "
            f"or was revoked, or the Client ID/Secret changed; {REAUTHORIZE_HINT}."
        )
    if status == 403:
        return AuthError(f"{VENDOR} refused the token request (403): check the application's Client ID and Secret.")
    if status == 429:
        retry_at = None
        if isinstance(body, dict) and isinstance(body.get("period_end"), int):
            retry_at = datetime.fromtimestamp(body["period_end"], UTC)
        elif retry_after and retry_after.strip().isdigit():
            retry_at = (now or datetime.now(UTC)) + timedelta(seconds=int(retry_after))
        return RateLimited(f"{VENDOR}'s token endpoint is rate limiting this application; try again later.", retry_at)
    if status >= 500:
        return ProviderConnectionError(f"{VENDOR}'s token endpoint failed (HTTP {status}); will retry later.")
    return BadResponse(f"{VENDOR}'s token endpoint answered HTTP {status} unexpectedly.", excerpt=excerpt(text))


# --- the token endpoint --------------------------------------------------------------------------------------


def request_tokens(
    funnel: HttpFunnel,
    url: str,
    params: Mapping[str, str],
    *,
    client_id: str,
    client_secret: SecretStr,
    now: datetime,
    refresh_ttl: timedelta = DEFAULT_REFRESH_TTL,
) -> Tokens:
    """POST the token endpoint with Basic client auth and the grant in the query string (official sample).

    `record=False`: the answer carries the access and refresh tokens, so it never reaches `api_data_cache`.
    """
    response = funnel.request(
        "POST",
        "",
        url=url,
        params=params,
        headers={"Authorization": basic_auth(client_id, client_secret)},
        record=False,
    )
    # The code and refresh token went in the query string (the funnel knows them); the client secret only inside
    # the Basic header's base64, so it is named here in case a server echoes it in plain text.
    secret = (client_secret.get_secret_value(),)
    if response.status_code != 200:
        error = token_error(
            response.status_code,
            scrubbed_text(response, secret),
            params.get("grant_type", ""),
            response.headers.get("Retry-After"),
            now,
        )
        raise error
    not_json = f"{VENDOR}'s token endpoint answered something that is not JSON."
    body = decode_json(response, html=not_json, malformed=not_json, extra_secrets=secret)
    return parse_token_response(body, now, refresh_ttl)


def _with_funnel(auth_url: str, timeout_s: float, http_client: httpx.Client | None) -> HttpFunnel:
    return HttpFunnel(auth_url, vendor=VENDOR, timeout_s=timeout_s, client=http_client)


def exchange_code(
    code: SecretStr | str,
    *,
    client_id: str,
    client_secret: SecretStr,
    redirect_uri: str,
    now: datetime,
    auth_url: str = DEFAULT_AUTH_URL,
    timeout_s: float = 20.0,
    http_client: httpx.Client | None = None,
    refresh_ttl: timedelta = DEFAULT_REFRESH_TTL,
) -> Tokens:
    """Swap the owner's one-time authorization code for tokens; `redirect_uri` must be the one used to authorise.

    Raises `NeedsReauthorization` when Enphase refuses the code (already used, expired, other application).
    """
    raw = code.get_secret_value() if isinstance(code, SecretStr) else code
    raw = raw.strip()
    if not raw:
        raise NeedsReauthorization(f"No Enphase authorization code was given: {REAUTHORIZE_HINT}.")
    params = {"grant_type": "authorization_code", "redirect_uri": redirect_uri, "code": raw}
    return _token_call(params, client_id, client_secret, now, auth_url, timeout_s, http_client, refresh_ttl)


def _token_call(
    params: dict[str, str],
    client_id: str,
    client_secret: SecretStr,
    now: datetime,
    auth_url: str,
    timeout_s: float,
    http_client: httpx.Client | None,
    refresh_ttl: timedelta,
) -> Tokens:
    """One call to the token endpoint on a funnel of its own (closed afterwards)."""
    funnel = _with_funnel(auth_url, timeout_s, http_client)
    try:
        return request_tokens(
            funnel,
            token_url(auth_url),
            params,
            client_id=client_id,
            client_secret=client_secret,
            now=now,
            refresh_ttl=refresh_ttl,
        )
    finally:
        funnel.close()
