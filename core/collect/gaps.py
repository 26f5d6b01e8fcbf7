"""Finding holes in stored history, so the collector can ask the vendor for them again.

The bookmark catch-up (`core.collect.pass_inputs.window_for`) fills everything after a source's newest final reading.
Holes before it remain when a vendor answered a window only in part, a backfill stopped half-way, or a source was added
to a vendor site that already had a bookmark. So each pass looks back `LOOKBACK` for 15-minute buckets without
any row (a NULL row counts as present: the vendor said "no data") and hands the OLDEST to the collector, which
re-reads one vendor window from there, after the regular poll and only with budget to spare. Oldest first, so a
hole is filled before newer ones and the attempts walk forward through a long outage.

Every re-read window is recorded in `gap_attempts` (`core.store.gap_attempts`); buckets inside an attempted window are
never asked for again (some vendors simply have nothing for a night or an outage), and attempts older than `LOOKBACK`
are dropped.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from core.store.gap_attempts import LOOKBACK

BUCKET = timedelta(minutes=15)


def oldest_gaps(
    con: duckdb.DuckDBPyConnection, upper_by_source: dict[int, datetime], now: datetime
) -> dict[int, datetime]:
    """Per source, the start of its oldest missing, never-attempted 15-minute bucket between its first stored
    bucket of the last `LOOKBACK` and its upper bound (exclusive); sources without a hole are left out."""
    if not upper_by_source:
        return {}
    ids = list(upper_by_source)
    uppers = [upper_by_source[i] for i in ids]
    since = now - LOOKBACK
    # Buckets are on the UTC 15-minute grid (rollups use time_bucket on UTC), so generate_series from the first
    # stored bucket stays on it. Every probe is bounded by `since`, so zone maps skip older row groups.
    rows = con.execute(
        """
        WITH wanted AS (SELECT unnest(?::BIGINT[]) AS source_id, unnest(?::TIMESTAMPTZ[]) AS upper),
        firsts AS (
            SELECT r.source_id, min(r.bucket) AS first, w.upper FROM readings_15min r JOIN wanted w USING (source_id)
            WHERE r.bucket >= ?::TIMESTAMPTZ GROUP BY r.source_id, w.upper
        ),
        grid AS (
            SELECT source_id, unnest(generate_series(first, upper - INTERVAL 15 MINUTE, INTERVAL 15 MINUTE)) AS bucket
            FROM firsts WHERE first < upper
        )
        SELECT g.source_id, min(g.bucket) FROM grid g
        WHERE NOT EXISTS (
            SELECT 1 FROM readings_15min r
            WHERE r.bucket >= ?::TIMESTAMPTZ AND r.source_id = g.source_id AND r.bucket = g.bucket
        )
        AND NOT EXISTS (
            SELECT 1 FROM gap_attempts a
            WHERE a.source_id = g.source_id AND g.bucket >= a.window_start AND g.bucket < a.window_end
        )
        GROUP BY g.source_id
        """,
        [ids, uppers, since, since],
    ).fetchall()
    return {int(source_id): bucket for source_id, bucket in rows}
