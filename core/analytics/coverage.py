"""Coverage: per source and local day, how much of the day its stored readings cover, so gaps show at a glance.

Rules, each for a reason:
- Received = the intervals the vendor answered: `readings_daily.readings` (rows, NULL values included) x the
  source's reading interval, capped at expected. A NULL row is the vendor answering for that interval without a
  figure (SolarEdge reports PV power as `null` all night), so it is received, as in `core.collect.gaps` where it stops a
  re-read; counting only values would show such a source at ~50 % every day. When the interval is unknown (no raw
  reading in the last two days), received falls back to `covered_s`, the seconds with a value.
- Expected = the length of the site's local day in seconds, from its midnight to the next one, so a DST day
  expects 23 or 25 hours. The count starts when the source started collecting, its first stored reading (a source
  added last week is not red for the month before); a source with no reading at all expects whole days. Today
  counts only as far as the source's data could have arrived (`core.analytics.availability`: its update frequency and
  its vendor's delay), so a healthy source is not short of the intervals its next poll will bring.
- Days are matched by their local date (`timezone(zone, bucket)::DATE`), not by recomputing bucket instants, so
  the heatmap agrees with the rollups whatever a zone does at midnight.
- Intervals (for the hover) divide both by the source's reading interval, the most common `interval_s` of its
  last two days of raw readings; unknown when it has none, and the figures stay in hours.
- The count starts at the source's first stored row, with or without a value (its first contact).

Reads: the daily rollup over the window (a few rows per source and day), the first day of every source from the
daily rollup, raw readings only over two narrow ranges (a new source's first day, and the last two days).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import polars as pl

from core.analytics.availability import judged_until, newest_ends
from core.models import ApiSettings
from core.store.store import Store, ts_literal

DEFAULT_DAYS = 31
MAX_DAYS = 366
INTERVAL_SAMPLE = timedelta(days=2)

COVERAGE_SCHEMA = pl.Schema(
    {
        "site_id": pl.Int64(),
        "site": pl.String(),
        "timezone": pl.String(),
        "source_id": pl.Int64(),
        "source": pl.String(),
        "day": pl.Date(),
        "day_start": pl.Datetime("us", "UTC"),
        "day_hours": pl.Float64(),
        "expected_s": pl.Int64(),
        "received_s": pl.Int64(),
        "coverage_pct": pl.Float64(),
        "interval_s": pl.Int64(),
        "expected_intervals": pl.Int64(),
        "received_intervals": pl.Int64(),
    }
)


def local_days(zone_name: str, now: datetime, days: int) -> list[tuple[date, datetime, datetime]]:
    """The last `days` local dates up to today in the zone, oldest first, as (date, UTC start, UTC end)."""
    zone = ZoneInfo(zone_name)
    today = now.astimezone(zone).date()
    found = []
    for back in range(days - 1, -1, -1):
        day = today - timedelta(days=back)
        start = datetime.combine(day, time(), zone).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
        found.append((day, start, end))
    return found


def load_coverage(store: Store, now: datetime, *, days: int = DEFAULT_DAYS, site_id: int | None = None) -> pl.DataFrame:
    """One row per source (of one site, or all) and local day of the last `days`: expected and received seconds,
    coverage % (None when nothing was expected, e.g. before the source's first reading) and the same in intervals."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS} (got {days})")
    with store.connect(read_only=True) as con:
        sources = _sources(con, site_id)
        if sources.is_empty():
            return pl.DataFrame(schema=COVERAGE_SCHEMA)
        calendar = _calendar(sources, now, days)
        window_start = calendar["day_start"].min()
        assert isinstance(window_start, datetime)
        con.register("_coverage_sources", sources.drop("metadata"))
        try:
            daily = _daily(con, window_start, now)
            first_seen = _first_seen(con, window_start)
            intervals = _intervals(con, now)
            newest = newest_ends(con, sources["source_id"].to_list(), now)
        finally:
            con.unregister("_coverage_sources")
    judged = [
        judged_until(ApiSettings.from_metadata(json.loads(metadata)), newest.get(source_id), now)
        for source_id, metadata in sources.select("source_id", "metadata").iter_rows()
    ]
    until = pl.DataFrame(
        {"source_id": sources["source_id"], "until": judged},
        schema={"source_id": pl.Int64, "until": pl.Datetime("us", "UTC")},
    )
    return _shape(calendar.join(until, on="source_id"), daily, first_seen, intervals)


def _sources(con: duckdb.DuckDBPyConnection, site_id: int | None) -> pl.DataFrame:
    where = f"WHERE s.id = {int(site_id)}" if site_id is not None else ""
    return con.sql(
        "SELECT s.id AS site_id, s.name AS site, s.timezone, e.id AS source_id, e.name AS source, e.metadata"
        " FROM energy_sources e JOIN meters m ON m.id = e.meter_id JOIN sites s ON s.id = m.site_id"
        f" {where} ORDER BY lower(s.name), s.id, e.id"
    ).pl()


def _calendar(sources: pl.DataFrame, now: datetime, days: int) -> pl.DataFrame:
    rows = [
        (zone, day, start, end)
        for zone in sources["timezone"].unique().to_list()
        for day, start, end in local_days(zone, now, days)
    ]
    days_frame = pl.DataFrame(
        rows,
        schema={
            "timezone": pl.String,
            "day": pl.Date,
            "day_start": pl.Datetime("us", "UTC"),
            "day_end": pl.Datetime("us", "UTC"),
        },
        orient="row",
    )
    return sources.join(days_frame, on="timezone")


def _daily(con: duckdb.DuckDBPyConnection, window_start: datetime, now: datetime) -> pl.DataFrame:
    # A day earlier than the window's first local midnight: zones differ, and the join on the date drops the rest.
    return con.sql(
        "SELECT d.source_id, timezone(z.timezone, d.bucket)::DATE AS day, sum(d.covered_s)::BIGINT AS covered_s,"
        " sum(d.readings)::BIGINT AS rows_received"
        " FROM readings_daily d JOIN _coverage_sources z USING (source_id)"
        f" WHERE d.bucket >= {ts_literal(window_start - timedelta(days=1))} AND d.bucket < {ts_literal(now)}"
        " GROUP BY ALL"
    ).pl()


def _first_seen(con: duckdb.DuckDBPyConnection, window_start: datetime) -> pl.DataFrame:
    """Per source, its first stored row (NULL values too): exact (from raw readings) when it falls inside the
    window, else the start of its first day (anything before the window is as good)."""
    firsts = con.sql(
        "SELECT source_id, min(bucket) AS first_day FROM readings_daily"
        " WHERE source_id IN (SELECT source_id FROM _coverage_sources) GROUP BY source_id"
    ).pl()
    recent = firsts.filter(pl.col("first_day") >= window_start - timedelta(days=1))
    if recent.is_empty():
        return firsts.select("source_id", pl.col("first_day").alias("first_seen"))
    low, high = recent["first_day"].min(), recent["first_day"].max()
    assert isinstance(low, datetime) and isinstance(high, datetime)
    con.register("_coverage_firsts", recent)
    try:
        exact = con.sql(
            "SELECT r.source_id, min(r.ts) AS first_ts FROM readings r JOIN _coverage_firsts f USING (source_id)"
            f" WHERE r.ts >= {ts_literal(low)} AND r.ts < {ts_literal(high + timedelta(days=2))}"
            " AND r.ts >= f.first_day AND r.ts < f.first_day + INTERVAL 2 DAY"
            " GROUP BY r.source_id"
        ).pl()
    finally:
        con.unregister("_coverage_firsts")
    return firsts.join(exact, on="source_id", how="left").select(
        "source_id", pl.coalesce("first_ts", "first_day").alias("first_seen")
    )


def _intervals(con: duckdb.DuckDBPyConnection, now: datetime) -> pl.DataFrame:
    return con.sql(
        "SELECT source_id, mode(interval_s)::BIGINT AS interval_s FROM readings"
        f" WHERE ts >= {ts_literal(now - INTERVAL_SAMPLE)} AND source_id IN (SELECT source_id FROM _coverage_sources)"
        " GROUP BY source_id"
    ).pl()


def _shape(
    calendar: pl.DataFrame, daily: pl.DataFrame, first_seen: pl.DataFrame, intervals: pl.DataFrame
) -> pl.DataFrame:
    start = pl.max_horizontal("day_start", pl.col("first_seen").fill_null(pl.col("day_start")))
    end = pl.min_horizontal("day_end", "until")  # as far as its data could have arrived (core.analytics.availability)
    expected = pl.max_horizontal((end - start).dt.total_seconds(), pl.lit(0))
    per_interval = pl.col("interval_s")
    # Rows answered x the interval; seconds with a value only when the interval is unknown.
    received = (
        pl.when(per_interval.is_not_null())
        .then(pl.col("rows_received") * per_interval)
        .otherwise(pl.col("covered_s"))
        .fill_null(0)
    )
    frame = (
        calendar.join(first_seen, on="source_id", how="left")
        .join(daily, on=["source_id", "day"], how="left")
        .join(intervals, on="source_id", how="left")
        .with_columns(
            expected.cast(pl.Int64).alias("expected_s"),
            # An interval still running at `now` (or straddling a first reading) counts no more than was expected.
            pl.min_horizontal(received, expected).cast(pl.Int64).alias("received_s"),
            ((pl.col("day_end") - pl.col("day_start")).dt.total_seconds() / 3600.0).alias("day_hours"),
        )
        .with_columns(
            pl.when(pl.col("expected_s") > 0)
            .then(pl.min_horizontal(100.0 * pl.col("received_s") / pl.col("expected_s"), pl.lit(100.0)))
            .alias("coverage_pct"),
            (pl.col("expected_s") / per_interval).round().cast(pl.Int64).alias("expected_intervals"),
            (pl.col("received_s") / per_interval).round().cast(pl.Int64).alias("received_intervals"),
        )
    )
    return frame.select(COVERAGE_SCHEMA.names()).cast(COVERAGE_SCHEMA).sort("site", "site_id", "source_id", "day")


def heatmap(frame: pl.DataFrame) -> tuple[list[str], list[date], list[list[float | None]], list[list[str]]]:
    """The frame as a heatmap: row labels (sources, in the frame's order), columns (days), coverage % per cell
    (None where nothing was expected) and a hover text per cell ("288 / 288 intervals (5 min) · 24 h day")."""
    if frame.is_empty():
        return [], [], [], []
    days = sorted(frame["day"].unique().to_list())
    labels: list[str] = []
    values: list[list[float | None]] = []
    texts: list[list[str]] = []
    multi_site = frame["site_id"].n_unique() > 1
    for (_, _, source_id), rows in frame.group_by(["site", "site_id", "source_id"], maintain_order=True):
        by_day = {r["day"]: r for r in rows.iter_rows(named=True)}
        first = rows.row(0, named=True)
        labels.append(f"{first['site']} · {first['source']}" if multi_site else f"{first['source']} (#{source_id})")
        values.append([by_day[d]["coverage_pct"] if d in by_day else None for d in days])
        texts.append([hover_text(by_day[d]) if d in by_day else "" for d in days])
    return labels, days, values, texts


def hover_text(row: dict[str, Any]) -> str:
    """ "276 / 288 intervals (5 min), 95.8 % · 24 h day"; in hours when the interval is unknown."""
    day = f"{row['day_hours']:g} h day"
    if not row["expected_s"]:
        return f"nothing expected (before the first reading) · {day}"
    pct = f"{row['coverage_pct']:.1f} %"
    if row["interval_s"]:
        minutes = row["interval_s"] / 60
        return f"{row['received_intervals']} / {row['expected_intervals']} intervals ({minutes:g} min), {pct} · {day}"
    return f"{row['received_s'] / 3600:.2f} h / {row['expected_s'] / 3600:.2f} h, {pct} · {day}"
