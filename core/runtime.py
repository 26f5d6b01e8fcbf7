"""Wiring for processes: settings -> store, secret box, migrated schema, demo seed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from core.config import Settings
from core.crypto import SecretBox, load_keys
from core.demo import seed_demo
from core.oauth_tokens import StoredTokens
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.quota_store import StoredQuotaLedger
from core.schema import migrate
from core.spool import Spool
from core.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: Store
    box: SecretBox
    ledger: QuotaLedger = field(default_factory=QuotaLedger)  # every vendor call counts against it

    @property
    def providers(self) -> ProviderContext:
        return ProviderContext(
            self.settings, self.ledger, lambda source_id: StoredTokens(self.store, self.box, source_id)
        )


def open_runtime(settings: Settings, *, prepare: bool = True) -> Runtime:
    """Build the store and secret box; with `prepare`, migrate the schema and seed the demo if configured."""
    store = Store(settings.db_path, lock_timeout_s=settings.lock_timeout_s)
    box = SecretBox(load_keys(settings.secret_keys, settings.key_file))
    if prepare:
        applied = migrate(store)
        if applied:
            log.info("database %s migrated to version %d", settings.db_path, applied[-1])
        if settings.seed_demo and seed_demo(store):
            log.info("seeded the Demo Rooftop site")
    # Vendor budgets are counted in the database: the dashboard's tests and the collector spend the same quota.
    # While an outside program holds the file, calls are counted in a journal beside the spool (core.quota_store).
    journal = Spool.beside(store.path).directory / "quota-journal.jsonl"
    return Runtime(settings=settings, store=store, box=box, ledger=StoredQuotaLedger(store, journal=journal))
