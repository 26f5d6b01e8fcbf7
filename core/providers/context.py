"""What every provider client of a process shares; light on purpose (no vendor or pvlib imports), so the CLI and
other processes that only carry it around start fast."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.config import Settings
from core.providers.quota import QuotaLedger

if TYPE_CHECKING:  # the Enphase client's modules and httpx are heavy; specs import this one
    from core.providers.enphase.oauth import TokenStore
    from core.providers.http_pool import HttpPool


@dataclass(frozen=True)
class ProviderContext:
    """The settings, the quota ledger (one per process: every call counts against it), where a source's OAuth
    tokens live (the database, in the app) and the process's HTTP clients, one per vendor host (None: each vendor
    client makes and closes its own, as in tests that build a context by hand)."""

    settings: Settings
    ledger: QuotaLedger
    token_store_for: Callable[[int], TokenStore] | None = None
    http_pool: HttpPool | None = None
