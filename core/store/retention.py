"""Retention: raw readings and cached vendor responses are dropped after their limits; rollups stay.

Raw readings are only dropped once rolled up: the rollups of the range about to go are rebuilt first, in the same
transaction (rows written before the rollup tables existed are covered too), so the hourly and daily figures
outlive the raw rows they came from.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from core.actors import current_actor
from core.store import audit_log, rollups
from core.store.audit_log import AuditEntry
from core.store.gap_attempts import forget_old_attempts
from core.store.live_readings import drop_before
from core.store.store import Store

SPOOL_MEMORY = timedelta(days=7)


def apply_retention(store: Store, now: datetime, raw_days: int, cache_days: int) -> tuple[int, int]:
    """Drop final raw readings older than `raw_days` and cached responses older than `cache_days`.

    Returns (readings dropped, cached responses dropped).
    """
    raw_cutoff = now - timedelta(days=raw_days)
    with store.transaction() as con:
        old = con.execute(
            "SELECT source_id, min(ts) FROM readings WHERE ts < ? AND is_final GROUP BY source_id", [raw_cutoff]
        ).fetchall()
        for source_id, oldest in old:
            rollups.refresh(con, [int(source_id)], oldest, raw_cutoff)
        dropped = con.execute(
            "DELETE FROM readings WHERE ts + to_seconds(interval_s) <= ? AND is_final", [raw_cutoff]
        ).fetchall()[0][0]
        cached = con.execute(
            "DELETE FROM api_data_cache WHERE fetched_at < ?", [now - timedelta(days=cache_days)]
        ).fetchall()[0][0]
        # Bookkeeping that only matters for a while: re-read windows (core.store.gap_attempts) and written spool
        # entries, whose names only guard against the few moments between a commit and the removal of the entry.
        forget_old_attempts(con, now)
        # Live-stream minutes are a preview the history replaces: they go with the raw readings of their age.
        drop_before(con, raw_cutoff)
        con.execute("DELETE FROM spool_applied WHERE applied_at < ?", [now - SPOOL_MEMORY])
        if dropped:  # a deletion of data, recorded as its actor's (the collector's daily run)
            summary = f"{dropped:,} final raw readings before {raw_cutoff:%Y-%m-%d} UTC dropped (rollups kept)"
            entry = AuditEntry("retention", "readings", None, f"older than {raw_days} days", summary)
            audit_log.record(con, current_actor(), [entry], now)
    return int(dropped), int(cached)
