"""The provider interface and its error tree.

Every provider (SolarEdge, Enphase, the built-in simulator) answers the same questions; vendor JSON never leaves
its own module. Errors are sorted by what the caller must do next:

    ProviderError
    ├── ProviderConnectionError   network, timeout, 5xx: retry later
    ├── RateLimited           quota exhausted: retry at `retry_at`
    ├── AuthError             bad or missing credentials: stop until the configuration changes
    │   └── NeedsReauthorization   OAuth grant dead (refresh token expired/revoked): the owner must authorise again
    ├── ApiRetired            the vendor switched this API off: stop and tell the user what to use instead
    └── BadResponse           the vendor answered something we cannot parse: skip, keep an excerpt

Messages are written for the analyst who reads them on the page and never contain a secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import polars as pl

if TYPE_CHECKING:
    from pathlib import Path

    from core.providers.exchange import Exchange


class ProviderError(Exception):
    """Base of every provider failure; `str(exc)` is safe to show and to store."""


class ProviderConnectionError(ProviderError):
    """The vendor could not be reached or failed on its side (timeout, 5xx): retry later."""


class RateLimited(ProviderError):
    """The vendor's quota is used up; `retry_at` says when calls may resume (UTC)."""

    def __init__(self, message: str, retry_at: datetime | None = None) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class AuthError(ProviderError):
    """Credentials are wrong, expired or lack permission: stop until the configuration changes."""


class NeedsReauthorization(AuthError):
    """The OAuth refresh token is dead: the user must run the authorization again ("re-authorise")."""


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


# --- readings ------------------------------------------------------------------------------------------------

# Every provider returns readings in this one long shape. `ts` is the UTC start of the interval the row describes,
# `interval_s` its length; `value` is the average power in W over the interval for `*_w` channels (energy in Wh is
# value * interval_s / 3600) and the state of charge at the end of the interval for `soc_pct`. A null value means
# the vendor said "no data" for that interval (not zero). Rows are sorted by (ts, channel) and unique on them.
CHANNELS = ("pv_w", "load_w", "grid_import_w", "grid_export_w", "battery_w", "soc_pct")
READINGS_SCHEMA = pl.Schema(
    [("ts", pl.Datetime("us", "UTC")), ("interval_s", pl.Int32()), ("channel", pl.Utf8()), ("value", pl.Float64())]
)


def empty_readings() -> pl.DataFrame:
    return pl.DataFrame(schema=READINGS_SCHEMA)


def normalise_readings(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast to the schema, drop exact duplicates (last wins), sort: what every provider returns."""
    frame = frame.select(
        pl.col("ts").cast(pl.Datetime("us", "UTC")),
        pl.col("interval_s").cast(pl.Int32),
        pl.col("channel").cast(pl.Utf8),
        pl.col("value").cast(pl.Float64),
    )
    return frame.unique(subset=["ts", "channel"], keep="last", maintain_order=True).sort(["ts", "channel"])


# --- what a provider declares --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaRule:
    """At most `limit` calls per `period` counted per `scope` ("account": the credential; "site": one vendor site).

    `period` "concurrent" means at most `limit` calls in flight at once.
    """

    scope: Literal["account", "site"]
    period: Literal["minute", "day", "month", "concurrent"]
    limit: int


@dataclass(frozen=True)
class ProviderSite:
    """A site or system a credential can see; `location` is the vendor's address as one line ("Gent, BE")."""

    id: str
    name: str
    timezone: str | None = None
    capacity_kw: float | None = None
    location: str | None = None


def address_line(address: object, fields: tuple[str, ...] = ("city", "state", "country")) -> str | None:
    """The non-empty text fields of a vendor's address object as one line ("Gent, Flanders, BE"), else None."""
    if not isinstance(address, Mapping):
        return None
    parts = [address[f].strip() for f in fields if isinstance(address.get(f), str) and address[f].strip()]
    return ", ".join(parts)[:120] or None


class MonitoringProvider(Protocol):
    """What every provider client offers. Methods take `now` (UTC) instead of reading the clock."""

    resolution: timedelta  # native interval of history data
    max_window: timedelta  # longest history window one call may ask for; `history` splits longer ranges

    @property
    def quota_rules(self) -> Sequence[QuotaRule]: ...  # read-only, so a client may hold a tuple

    def test_connection(self, now: datetime) -> ConnectionInfo: ...

    def list_sites(self) -> list[ProviderSite]: ...

    def current_power(self, now: datetime) -> dict[str, float]: ...

    def history(self, start: datetime, end: datetime) -> pl.DataFrame: ...

    def close(self) -> None: ...


@runtime_checkable
class RecordsExchanges(Protocol):
    """Optional extras of the vendor clients (not the simulator, which makes no calls): callers check with
    `isinstance(client, RecordsExchanges)`.

    `exchanges()` returns the vendor exchanges made since its last call, oldest first, and forgets them (OAuth token
    calls are never recorded); `quota_snapshot(now)` gives (calls used, calls remaining) in the current period of
    the client's tightest counted day or month rule, or (None, None).
    """

    def exchanges(self) -> list[Exchange]: ...

    def quota_snapshot(self, now: datetime) -> tuple[int | None, int | None]: ...


@runtime_checkable
class JournalledLedger(Protocol):
    """Optional extra of a quota ledger (the stored one, `core.store.quota_store.StoredQuotaLedger`): callers check
    with `isinstance(ledger, JournalledLedger)`.

    Calls counted while the database file was held by another process wait in the `journal` file (None: this
    ledger keeps none); `flush_journal()` adds them to the stored counts.
    """

    journal: Path | None

    def flush_journal(self) -> None: ...


def split_windows(start: datetime, end: datetime, max_window: timedelta) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive windows no longer than `max_window`, oldest first."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    windows = []
    cursor = start
    while cursor < end:
        upper = min(cursor + max_window, end)
        windows.append((cursor, upper))
        cursor = upper
    return windows
