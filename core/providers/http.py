"""The HTTP funnel every vendor client goes through, and the redaction that keeps credentials out of logs.

httpx logs each request's full URL at INFO and puts it into `HTTPStatusError` messages; SolarEdge V1 and Enphase
carry credentials in the query string (`api_key=`, `key=`, `code=`, `refresh_token=`). So: URLs are redacted
before any of our messages are built, transport failures become `ProviderConnectionError` with a redacted
message, and `install_log_redaction()` puts a filter on the httpx/httpcore loggers as a second line of defence.

The funnel also records every exchange it makes (`HttpFunnel.drain`) for `api_data_cache`: the endpoint goes
through `redact`, and the literal values of the credentials sent with the request (sensitive query parameters,
Authorization and API-key headers) are blanked in the endpoint and the body, in case a server echoes them. Calls
made with `record=False` (OAuth token endpoints, whose answers ARE credentials) are never recorded. `stream` is the
same funnel for an answer read while it arrives (Enphase's live status stream).

What a client does with an answer (JSON or a web page, the excerpt for a message, scrubbing the request's
credentials out of what it quotes) is done once for every vendor in `core.providers.answers`, which learns those
credentials from here (`request_secrets`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx

from core.providers.base import ProviderConnectionError
from core.providers.exchange import MAX_EXCHANGES, Exchange, truncate_body
from core.providers.http_pool import HttpPool

SENSITIVE_PARAMS = ("api_key", "apikey", "key", "code", "refresh_token", "access_token", "client_secret", "token")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:" + "|".join(SENSITIVE_PARAMS) + r")=)[^&\s\"'#]+")
_BEARER = re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
REDACTED = "***"


def redact(text: str) -> str:
    """Hide credential query parameters and Authorization values in any text."""
    return _BEARER.sub(r"\1 " + REDACTED, _QUERY_SECRET.sub(r"\1" + REDACTED, text))


def redact_url(url: httpx.URL | str) -> str:
    return redact(str(url))


class RedactingFilter(logging.Filter):
    """Rewrites a record's message and arguments with `redact` before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(redact(str(a)) if isinstance(a, str | httpx.URL) else a for a in args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


_FILTER = RedactingFilter()


def install_log_redaction() -> None:
    """Idempotent. A logger's filters apply only to records that logger itself creates, not its children's, so
    httpcore's child loggers (which log response headers such as a redirect's `location: ...?code=`) get it too."""
    for name in (
        "httpx",
        "httpcore",
        "httpcore.connection",
        "httpcore.http11",
        "httpcore.http2",
        "httpcore.proxy",
    ):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class HttpFunnel:
    """One vendor base URL, one timeout, one place that turns transport failures into provider errors.

    Vendor modules interpret status codes and bodies themselves; this class never raises on a status. It keeps
    the newest `MAX_EXCHANGES` exchanges until `drain` hands them over.

    Where requests go out: through the process's `pool` (one shared client per host, chosen per request, so a call
    to another host such as an OAuth token endpoint uses that host's client), else through the injected `client`,
    else through a client of its own. `close` closes only a client of its own: pooled and injected ones belong to
    whoever made them.
    """

    def __init__(
        self,
        base_url: str,
        *,
        vendor: str,
        timeout_s: float = 20.0,
        client: httpx.Client | None = None,
        headers: Mapping[str, str] | None = None,
        pool: HttpPool | None = None,
    ) -> None:
        if pool is not None and client is not None:
            raise ValueError("give an HTTP client or a pool, not both")
        install_log_redaction()
        self.vendor = vendor
        self._pool = pool
        self._owns_client = client is None and pool is None
        self._client = client if client is not None or pool is not None else httpx.Client(timeout=timeout_s)
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self._exchanges: deque[Exchange] = deque(maxlen=MAX_EXCHANGES)
        self._exchanges_lock = threading.Lock()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        url: str | None = None,
        record: bool = True,
    ) -> httpx.Response:
        """Send one request. `record=False` keeps the exchange out of `drain` (for answers that are credentials)."""
        target = url or f"{self.base_url}/{path.lstrip('/')}"
        sent_headers = {**self._headers, **(headers or {})}
        started, clock = datetime.now(UTC), time.monotonic()
        response: httpx.Response | None = None
        try:
            with self._transport_errors(target, "Cannot reach"):
                response = self._client_for(target).request(
                    method, target, params=params, headers=sent_headers, json=json
                )
            return response
        finally:
            if record:
                self._record(target, params, sent_headers, started, clock, response)

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """`request` for an answer read while it arrives (a server-sent event stream): yields the response with its
        body unread. Transport failures while it is read inside the block (a timeout between two events, a
        connection cut) become `ProviderConnectionError` as at the start; leaving the block closes the connection.
        The exchange is recorded when the block ends, its body only if the caller read it whole (an error answer)."""
        target = f"{self.base_url}/{path.lstrip('/')}"
        sent_headers = {**self._headers, **(headers or {})}
        started, clock = datetime.now(UTC), time.monotonic()
        response: httpx.Response | None = None
        try:
            with (
                self._transport_errors(target, "Lost the connection to"),
                self._client_for(target).stream(method, target, params=params, headers=sent_headers) as response,
            ):
                yield response
        finally:
            self._record(target, params, sent_headers, started, clock, response)

    def _client_for(self, target: str) -> httpx.Client:
        client = self._pool.client_for(target) if self._pool is not None else self._client
        assert client is not None  # one of the two is always set (__init__)
        return client

    @contextmanager
    def _transport_errors(self, target: str, failed: str) -> Iterator[None]:
        """httpx's transport failures as the `ProviderConnectionError` users read ("Cannot reach SolarEdge ...")."""
        try:
            yield
        except httpx.TimeoutException:
            raise ProviderConnectionError(f"{self.vendor} did not answer in time; will retry later.") from None
        except httpx.InvalidURL:
            raise ProviderConnectionError(
                f"The {self.vendor} base URL setting is not a valid URL; correct it and try again."
            ) from None
        except httpx.TransportError as exc:
            raise ProviderConnectionError(
                f"{failed} {self.vendor} ({type(exc).__name__} for {redact_url(httpx.URL(target))}); "
                "check the network or the base URL setting."
            ) from None

    def drain(self) -> list[Exchange]:
        """The exchanges recorded since the last drain, oldest first; the funnel forgets them."""
        with self._exchanges_lock:
            taken = list(self._exchanges)
            self._exchanges.clear()
        return taken

    def _record(
        self,
        target: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str],
        started: datetime,
        clock: float,
        response: httpx.Response | None,
    ) -> None:
        duration_ms = (time.monotonic() - clock) * 1000.0
        secrets = sent_secrets((params or {}).items(), headers.items())
        status, body = None, ""
        if response is not None:
            status = response.status_code
            try:
                body = blank(truncate_body(response.text), secrets)
            except Exception:  # an undecodable body is still an exchange; its text is not worth a failure
                body = ""
        endpoint = blank(self._endpoint(target, params), secrets)
        exchange = Exchange(endpoint, started, status, body, duration_ms)
        with self._exchanges_lock:
            self._exchanges.append(exchange)

    def _endpoint(self, target: str, params: Mapping[str, Any] | None) -> str:
        """The request path relative to the base URL, query string included, credentials redacted."""
        try:
            url = httpx.URL(target)
            text = str(url.copy_merge_params(dict(params)) if params else url)
        except (httpx.InvalidURL, TypeError, ValueError):
            text = target
        prefix = self.base_url + "/"
        return redact(text[len(prefix) :] if text.startswith(prefix) else text)

    def close(self) -> None:
        if self._owns_client and self._client is not None:
            self._client.close()


# Headers whose value is a credential (matched case-insensitively by substring).
_SECRET_HEADER_WORDS = ("authorization", "key", "token", "secret")
_MIN_SECRET_LEN = 4  # shorter values would blank ordinary text; no vendor issues credentials that short


def sent_secrets(params: Iterable[tuple[str, Any]], headers: Iterable[tuple[str, str]]) -> list[str]:
    """Literal credential values sent with a request (sensitive query parameters and credential headers), longest
    first so that a secret containing another is blanked whole."""
    found: list[str] = []
    for name, value in params:
        if name.lower() in SENSITIVE_PARAMS and value is not None:
            found.append(str(value))
    for name, value in headers:
        if any(word in name.lower() for word in _SECRET_HEADER_WORDS):
            found.append(value)
            found.extend(value.split()[1:])  # "Bearer <token>", "Basic <credentials>": the token alone too
    return sorted({v for v in found if len(v) >= _MIN_SECRET_LEN}, key=len, reverse=True)


def request_secrets(request: httpx.Request) -> list[str]:
    """`sent_secrets` of a request as it went out (its URL's query and its headers, the funnel's own included)."""
    return sent_secrets(request.url.params.multi_items(), request.headers.items())


def blank(text: str, secrets: Iterable[str]) -> str:
    """`text` with every literal occurrence of each secret replaced by `REDACTED`."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text
