"""Wiring for processes: settings -> store, secret box, migrated schema, demo seed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from core.catalog.demo import seed_demo
from core.config import Settings
from core.providers.context import ProviderContext
from core.providers.http_pool import HttpPool
from core.providers.quota import QuotaLedger
from core.store.crypto import ConfiguredBox, SecretBox
from core.store.oauth_tokens import StoredTokens
from core.store.private_files import tighten
from core.store.quota_store import StoredQuotaLedger
from core.store.schema import migrate
from core.store.secret_store import credentials_stored
from core.store.spool import Spool
from core.store.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: Store
    box: SecretBox
    ledger: QuotaLedger = field(default_factory=QuotaLedger)  # every vendor call counts against it
    # One keep-alive client per vendor host, shared by every poll and Test Connection of this process.
    http_pool: HttpPool = field(default_factory=HttpPool)

    @property
    def providers(self) -> ProviderContext:
        return ProviderContext(
            self.settings,
            self.ledger,
            lambda source_id: StoredTokens(self.store, self.box, source_id),
            http_pool=self.http_pool,
        )

    def close(self) -> None:
        """At the process's end: give back the day/month calls leased and not made, and close the vendor
        connections (idempotent; a process that never says so still closes its connections at exit, see HttpPool)."""
        try:
            self.ledger.close()
        finally:
            self.http_pool.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def http_pool_for(settings: Settings) -> HttpPool:
    return HttpPool(timeout_s=settings.http_timeout_s, max_connections=settings.http_max_connections_per_host)


def open_runtime(settings: Settings, *, prepare: bool = True, queued: bool = False) -> Runtime:
    """Build the store and secret box; with `prepare`, migrate the schema and seed the demo if configured. With
    `queued` (the collector), vendor calls wait their turn under per-minute limits and day/month calls are counted
    in leased blocks (core.store.quota_store); otherwise (the dashboard, the CLI) they are refused at once and
    counted one by one."""
    store = Store(settings.db_path, lock_timeout_s=settings.lock_timeout_s)
    spool = Spool.beside(store.path)
    if prepare:  # files an older version (or a copy) left readable by others: one INFO line names them
        tighten([*store.private_files(), settings.key_file, *spool.private_paths()])
    # The key file is created only while no credential is stored; missing or damaged keys leave a box that refuses
    # (and says why) rather than a process that fails or a new key that strands stored credentials (core.store.crypto).
    box = ConfiguredBox(settings.secret_keys, settings.key_file, lambda: credentials_stored(store))
    if prepare:
        applied = migrate(store)
        if applied:
            log.info("database %s migrated to version %d", settings.db_path, applied[-1])
        if settings.seed_demo and seed_demo(store):
            log.info("seeded the Demo Rooftop site")
    # Vendor budgets are counted in the database: the dashboard's tests and the collector spend the same quota.
    # While an outside program holds the file, calls are counted in a journal beside the spool (core.store.quota_store).
    journal = spool.directory / "quota-journal.jsonl"
    ledger = (
        StoredQuotaLedger(
            store,
            journal=journal,
            queue_wait_s=settings.quota_queue_wait_s,
            lease_calls=settings.quota_lease_calls,
        )
        if queued
        else StoredQuotaLedger(store, journal=journal)
    )
    return Runtime(settings=settings, store=store, box=box, ledger=ledger, http_pool=http_pool_for(settings))
