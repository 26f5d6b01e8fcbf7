"""15-minute, hourly and daily rollups of `readings`, refreshed for exactly the buckets a write touched.

The dashboard reads these small tables instead of scanning raw readings (measured: a 50M-row scan holds the file
for seconds and starves the collector). A refresh deletes the touched buckets of the touched sources and rebuilds
them from `readings` in the same transaction as the write, so a rollup never disagrees with its readings.

Columns: `bucket` is the UTC start of the bucket (daily buckets start at midnight in the SITE's time zone, so a DST
day has 23 or 25 hours); `avg_value` is the mean of the non-null values (average W, or % for state of charge);
`energy_wh` = sum(value * interval_s / 3600) over non-null rows (meaningful for power sources only); `covered_s`
is the number of seconds with data, so a gap shows as coverage below the bucket length, never as zero energy;
`readings` counts the rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

# (table, bucket width, how far past the touched range a bucket's readings can reach: two days for daily buckets,
# since a DST day lasts 25 hours)
ROLLUPS = (
    ("readings_15min", "INTERVAL 15 MINUTE", timedelta(minutes=15)),
    ("readings_hourly", "INTERVAL 1 HOUR", timedelta(hours=1)),
    ("readings_daily", "INTERVAL 1 DAY", timedelta(days=2)),
)


def refresh(con: duckdb.DuckDBPyConnection, source_ids: list[int], start: datetime, end: datetime) -> None:
    """Rebuild every bucket of these sources that overlaps [start, end). Run inside the writing transaction."""
    if not source_ids:
        return
    con.execute("CREATE OR REPLACE TEMP TABLE _touched AS SELECT unnest(?::BIGINT[]) AS source_id", [source_ids])
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _zones AS SELECT e.id AS source_id, s.timezone FROM energy_sources e"
        " JOIN meters m ON m.id = e.meter_id JOIN sites s ON s.id = m.site_id"
        " WHERE e.id IN (SELECT source_id FROM _touched)"
    )
    for table, width, reach in ROLLUPS:
        # `table` and `width` are our constants. Daily buckets follow each source's site zone.
        zone = ", z.timezone" if table == "readings_daily" else ""
        bucket = f"time_bucket({width}, r.ts{zone})"
        lower = f"time_bucket({width}, ?::TIMESTAMPTZ{zone})"
        con.execute(
            f"DELETE FROM {table} t USING _zones z WHERE t.source_id = z.source_id"
            f" AND t.bucket >= {lower} AND t.bucket < ?",
            [start, end],
        )
        con.execute(
            f"INSERT INTO {table} SELECT r.source_id, {bucket} AS bucket, avg(r.value),"
            " sum(r.value * r.interval_s / 3600.0), coalesce(sum(r.interval_s) FILTER (WHERE r.value IS NOT NULL), 0),"
            f" count(*) FROM readings r JOIN _zones z USING (source_id)"
            f" WHERE r.ts >= {lower} AND r.ts < ? AND {bucket} < ?"
            f" GROUP BY ALL",
            [start, end + reach, end],
        )
