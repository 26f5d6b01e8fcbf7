"""A database as a newcomer's first minute leaves it: the demo site with a month of simulated history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.collect.collection import collect_once
from core.config import load_settings
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.runtime import Runtime, open_runtime


def seed_history(now: datetime | None = None) -> Runtime:
    """Migrate, seed the demo and run one collection pass (the simulator backfills 31 days) at `now`."""
    runtime = open_runtime(load_settings())
    moment = now or datetime.now(UTC)
    moment = moment - timedelta(seconds=moment.second, microseconds=moment.microsecond)
    collect_once(runtime.store, runtime.box, ProviderContext(runtime.settings, QuotaLedger()), moment)
    return runtime
