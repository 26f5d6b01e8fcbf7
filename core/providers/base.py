"""The provider interface and its error tree.

Every provider (SolarEdge, Enphase, the built-in simulator) answers the same questions; vendor JSON never leaves
its own module. Errors are sorted by what the caller must do next:

    ProviderError
    ├── ProviderUnavailable   no client for this provider in this version: nothing to retry
    ├── ProviderConnectionError   network, timeout, 5xx: retry later
    ├── RateLimited           quota exhausted: retry at `retry_at`
    ├── AuthError             bad or missing credentials: stop until the configuration changes
    ├── ApiRetired            the vendor switched this API off: stop and tell the user what to use instead
    └── BadResponse           the vendor answered something we cannot parse: skip, keep an excerpt

Messages are written for the analyst who reads them on the page and never contain a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class ProviderError(Exception):
    """Base of every provider failure; `str(exc)` is safe to show and to store."""


class ProviderUnavailable(ProviderError):
    """The provider has no working client in this version."""


class ProviderConnectionError(ProviderError):
    """The vendor could not be reached or failed on its side (timeout, 5xx): retry later."""


class RateLimited(ProviderError):
    """The vendor's quota is used up; `retry_at` says when calls may resume (UTC)."""

    def __init__(self, message: str, retry_at: datetime | None = None) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class AuthError(ProviderError):
    """Credentials are wrong, expired or lack permission: stop until the configuration changes."""


class ApiRetired(ProviderError):
    """The vendor switched this API off; the message says what to switch to."""


class BadResponse(ProviderError):
    """The vendor's answer could not be understood; `excerpt` keeps a redacted piece of it."""

    def __init__(self, message: str, excerpt: str = "") -> None:
        super().__init__(message)
        self.excerpt = excerpt


@dataclass(frozen=True)
class ConnectionInfo:
    """What one cheap "test connection" call tells about a provider site.

    `current_power_w` is the site's PV (or main channel) power right now; `last_update` is the UTC instant the
    vendor last heard from the site.
    """

    site_name: str
    capacity_kw: float | None
    timezone: str
    current_power_w: float | None
    last_update: datetime
