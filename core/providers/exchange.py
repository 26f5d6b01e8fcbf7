"""What a vendor client reports about its own calls: the exchanges its funnel recorded, and its quota position.

`HttpFunnel` records one `Exchange` per vendor call (OAuth token calls excepted: their answers are credentials).
The collector stores them in `api_data_cache` (see `core.store.exchange_archive`) and takes `collector_runs.http_status`
from the last one; `quota_position` gives `collector_runs.quota_used` / `quota_remaining`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: base -> exchange must not import quota (which imports base)
    from core.providers.base import QuotaRule
    from core.providers.quota import QuotaLedger

MAX_BODY_BYTES = 256 * 1024  # a longer body is cut (at a UTF-8 character boundary)
MAX_EXCHANGES = 100  # per funnel: the newest are kept when nobody drains them


@dataclass(frozen=True)
class Exchange:
    """One call to a vendor and its answer, safe to store.

    `endpoint` is the request path relative to the vendor base URL with credentials redacted from the query
    string; `fetched_at` (UTC) is when the request was sent; `http_status` is None when no answer came (timeout,
    connection refused) and `body` then is "".
    """

    endpoint: str
    fetched_at: datetime
    http_status: int | None
    body: str
    duration_ms: float


def truncate_body(text: str, limit: int = MAX_BODY_BYTES) -> str:
    """`text` cut to at most `limit` bytes of UTF-8 (never inside a character)."""
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


def quota_position(
    ledger: QuotaLedger,
    provider: str,
    scope_keys: Mapping[str, str],
    rules: Sequence[QuotaRule],
    now: datetime,
) -> tuple[int | None, int | None]:
    """(calls used, calls remaining) in the current period of the tightest counted day or month rule.

    "Tightest" is the rule with the fewest calls left; (None, None) when no day/month rule applies (e.g. only
    per-minute and concurrency limits). With a `StoredQuotaLedger` each rule costs one read of the database, so
    call this outside any open store transaction.
    """
    best: tuple[int, int] | None = None
    for rule in rules:
        if rule.period not in ("day", "month") or rule.scope not in scope_keys:
            continue
        used = ledger.used(provider, scope_keys[rule.scope], rule.period, now)
        remaining = max(rule.limit - used, 0)
        if best is None or remaining < best[1]:
            best = (used, remaining)
    return best if best is not None else (None, None)
