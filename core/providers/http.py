"""The HTTP funnel every vendor client goes through, and the redaction that keeps credentials out of logs.

httpx logs each request's full URL at INFO and puts it into `HTTPStatusError` messages; SolarEdge V1 and Enphase
carry credentials in the query string (`api_key=`, `key=`, `code=`, `refresh_token=`). So: URLs are redacted
before any of our messages are built, transport failures become `ProviderConnectionError` with a redacted
message, and `install_log_redaction()` puts a filter on the httpx/httpcore loggers as a second line of defence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import httpx

from core.providers.base import ProviderConnectionError

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

    Vendor modules interpret status codes and bodies themselves; this class never raises on a status.
    """

    def __init__(
        self,
        base_url: str,
        *,
        vendor: str,
        timeout_s: float = 20.0,
        client: httpx.Client | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        install_log_redaction()
        self.vendor = vendor
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=timeout_s)
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        url: str | None = None,
    ) -> httpx.Response:
        target = url or f"{self.base_url}/{path.lstrip('/')}"
        try:
            return self._client.request(
                method, target, params=params, headers={**self._headers, **(headers or {})}, json=json
            )
        except httpx.TimeoutException:
            raise ProviderConnectionError(f"{self.vendor} did not answer in time; will retry later.") from None
        except httpx.InvalidURL:
            raise ProviderConnectionError(
                f"The {self.vendor} base URL setting is not a valid URL; correct it and try again."
            ) from None
        except httpx.TransportError as exc:
            raise ProviderConnectionError(
                f"Cannot reach {self.vendor} ({type(exc).__name__} for {redact_url(httpx.URL(target))}); "
                "check the network or the base URL setting."
            ) from None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
