"""History of a site: power, energy and state-of-charge series per site, meter or source, for local date ranges.

Reads the rollups only (never raw readings): 15-minute and hourly buckets from `readings_15min`/`readings_hourly`,
days from `readings_daily` (whose buckets already start at the site's local midnight, so a DST day lasts 23 or 25
hours), months by grouping those days by their local month. Every query is bounded by a bucket range written as a
literal, so DuckDB's zone maps skip the row groups outside it.

Gaps stay gaps: every expected bucket of the range appears, with null power and energy where no data exists, and
a coverage column (seconds with data / seconds of the bucket that have elapsed); nothing is filled or interpolated.
A series of several sources (a role at the site level) is null in a bucket where any of its sources has no data at
all: two PV arrays with one missing would otherwise show half the production as a plain number. Its coverage still
says how much is there (one array of two complete: 50 %).
Buckets that start after `now` are not expected yet and are left out.

Series per level: a site shows one series per role (production, load, grid import, grid export, battery, state
of charge: the sources of that role summed, the state of charge averaged); a meter shows each of its sources; a
source shows itself.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import duckdb
import polars as pl

from core.analytics.history_balance import energy_balance
from core.catalog.catalog import Catalog, NotFound, read_catalog
from core.localtime import local_midnight, site_today
from core.models import Site, known_timezones
from core.roles import ROLE_LABELS, Role, role_of
from core.store.store import Store, ts_literal


class Resolution(StrEnum):
    MIN15 = "15min"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"

    @property
    def label(self) -> str:
        return {"15min": "15 min", "hour": "hour", "day": "day", "month": "month"}[self.value]


class Level(StrEnum):
    SITE = "site"
    METER = "meter"
    SOURCE = "source"


# The series name of each role at the site level; the battery's says which sign is which.
ROLE_NAMES = ROLE_LABELS | {Role.BATTERY: "Battery (+ discharge)"}

_TABLES = {
    Resolution.MIN15: "readings_15min",
    Resolution.HOUR: "readings_hourly",
    Resolution.DAY: "readings_daily",
    Resolution.MONTH: "readings_daily",
}
_STEPS = {Resolution.MIN15: timedelta(minutes=15), Resolution.HOUR: timedelta(hours=1)}
_PER_DAY = {Resolution.MIN15: 96, Resolution.HOUR: 24, Resolution.DAY: 1}

# 92 days of 15-minute buckets: beyond this a chart has more points than pixels and the page slows down.
MAX_BUCKETS = 92 * 96
MAX_COMPARISON_YEARS = 10


@dataclass(frozen=True)
class SeriesGroup:
    """Sources read as one series: summed (power, energy) or, for state of charge, averaged (%)."""

    key: str  # "role:production" (a core.roles.Role value), "source:12"
    name: str
    source_ids: tuple[int, ...]
    percent: bool


def role_groups(catalog: Catalog, site_id: int) -> dict[Role, SeriesGroup]:
    """The site's roles that have at least one source, in the order of `Role`."""
    members: dict[Role, list[int]] = {}
    for meter in catalog.meters_of(site_id):
        for source in catalog.sources_of(meter.id):
            if (role := role_of(meter.category, source.source_type)) is not None:
                members.setdefault(role, []).append(source.id)
    return {
        role: SeriesGroup(f"role:{role.value}", ROLE_NAMES[role], tuple(members[role]), not role.is_energy)
        for role in Role
        if role in members
    }


def series_groups(catalog: Catalog, site_id: int, level: Level, entity_id: int | None = None) -> list[SeriesGroup]:
    """The series shown for a site (its roles), a meter (its sources) or one source."""
    if level == Level.SITE:
        return list(role_groups(catalog, site_id).values())
    if entity_id is None:
        raise NotFound(f"choose a {level.value} to show")
    if level == Level.METER:
        meter = catalog.meter(entity_id)
        if meter.site_id != site_id:
            raise NotFound(f"meter {entity_id} is not part of this site")
        return [_source_group(catalog, source.id) for source in catalog.sources_of(meter.id)]
    owner = catalog.site_of_source(entity_id)
    if owner is None or owner.id != site_id:
        raise NotFound(f"source {entity_id} is not part of this site")
    return [_source_group(catalog, entity_id)]


def _source_group(catalog: Catalog, source_id: int) -> SeriesGroup:
    source = catalog.source(source_id)
    meter = catalog.meter(source.meter_id)
    return SeriesGroup(
        f"source:{source.id}", source.name, (source.id,), role_of(meter.category, source.source_type) is Role.SOC
    )


# --- ranges ------------------------------------------------------------------------------------------------


def bucket_count(first_day: date, last_day: date, resolution: Resolution) -> int:
    """Buckets in the range (DST days counted as 24 hours: this sizes a chart, it does not build one)."""
    if resolution == Resolution.MONTH:
        return (last_day.year - first_day.year) * 12 + last_day.month - first_day.month + 1
    return ((last_day - first_day).days + 1) * _PER_DAY[resolution]


def check_range(first_day: date, last_day: date, resolution: Resolution, timezone: str, now: datetime) -> list[str]:
    """What is wrong with this range, as messages for the user; empty when it can be shown."""
    if last_day < first_day:
        return [f"The end date {last_day} is before the start date {first_day}: pick an end on or after the start."]
    problems = []
    today = site_today(now, timezone)
    if first_day > today:
        problems.append(
            f"The range {first_day} to {last_day} lies entirely in the future (today is {today} in {timezone}):"
            " there is no data yet. Pick a range that starts today or earlier."
        )
    count = bucket_count(first_day, last_day, resolution)
    if count > MAX_BUCKETS:
        days = (last_day - first_day).days + 1
        fitting = [r.label for r in Resolution if bucket_count(first_day, last_day, r) <= MAX_BUCKETS]
        choices = f"{', '.join(fitting[:-1])} or {fitting[-1]}" if len(fitting) > 1 else "".join(fitting)
        advice = f"Choose {choices} resolution, or a shorter range." if fitting else "Choose a shorter range."
        limit = f" (at most {MAX_BUCKETS // _PER_DAY[resolution]} days)" if resolution in _PER_DAY else ""
        problems.append(
            f"{resolution.label} resolution over {days} days makes {count:,} buckets, more than the {MAX_BUCKETS:,}"
            f" a chart can show{limit}. {advice}"
        )
    return problems


def bucket_grid(timezone: str, resolution: Resolution, first_day: date, last_day: date, now: datetime) -> pl.DataFrame:
    """Every bucket of the local range that has started by `now`.

    Columns: `key` (the UTC start for 15 min and hours, the local date for days, the local first of the month for
    months), `bucket_start`/`bucket_end` (UTC), `expected_s` (seconds of the bucket elapsed by `now`). Months are
    cut to the range: a range from the 15th starts its first month on the 15th.
    """
    start, end = local_midnight(first_day, timezone), local_midnight(last_day + timedelta(days=1), timezone)
    if resolution in _STEPS:
        # The rollups cut UTC quarters and hours. In a zone whose offset is not a whole number of them (India,
        # +05:30) local midnight falls inside a bucket: the range widens to whole buckets, labelled e.g. 23:30.
        step = _STEPS[resolution]
        start, end = _align(start, step, up=False), _align(end, step, up=True)
        instants = pl.datetime_range(start, end, step, closed="left", time_unit="us", eager=True)
        grid = pl.DataFrame({"key": instants.dt.convert_time_zone("UTC")}).with_columns(
            pl.col("key").alias("bucket_start"), (pl.col("key") + _STEPS[resolution]).alias("bucket_end")
        )
    else:
        keys, bounds = _calendar_buckets(resolution, first_day, last_day)
        grid = pl.DataFrame(
            {
                "key": keys,
                "bucket_start": [local_midnight(a, timezone) for a, _ in bounds],
                "bucket_end": [local_midnight(b, timezone) for _, b in bounds],
            },
            schema={"key": pl.Date, "bucket_start": pl.Datetime("us", "UTC"), "bucket_end": pl.Datetime("us", "UTC")},
        )
    moment = pl.lit(now.astimezone(UTC), dtype=pl.Datetime("us", "UTC"))
    return grid.filter(pl.col("bucket_start") < moment).with_columns(
        (pl.min_horizontal("bucket_end", moment) - pl.col("bucket_start")).dt.total_seconds().alias("expected_s")
    )


def _align(moment: datetime, step: timedelta, *, up: bool) -> datetime:
    seconds, width = int(moment.timestamp()), int(step.total_seconds())
    aligned = -(-seconds // width) * width if up else seconds // width * width
    return datetime.fromtimestamp(aligned, UTC)


def _calendar_buckets(
    resolution: Resolution, first_day: date, last_day: date
) -> tuple[list[date], list[tuple[date, date]]]:
    """Keys and [first, next) local days of each day or (range-cut) month bucket."""
    if resolution == Resolution.DAY:
        days = [first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1)]
        return days, [(d, d + timedelta(days=1)) for d in days]
    keys, bounds = [], []
    month = first_day.replace(day=1)
    while month <= last_day:
        following = (month + timedelta(days=32)).replace(day=1)
        keys.append(month)
        bounds.append((max(month, first_day), min(following, last_day + timedelta(days=1))))
        month = following
    return keys, bounds


# --- reading -------------------------------------------------------------------------------------------------


def _read_groups(
    con: duckdb.DuckDBPyConnection,
    groups: list[SeriesGroup],
    resolution: Resolution,
    timezone: str,
    grid: pl.DataFrame,
) -> pl.DataFrame:
    """Per group and bucket key: energy_wh (sum), value_sum / value_avg of the sources' average values, covered_s,
    and with_data, the number of the group's sources with any covered second in the bucket.

    A source's value in a bucket is its covered-time-weighted average (for one rollup row, its avg_value), so a
    month built from days is the true average over the covered time.
    """
    schema = pl.Schema({"grp": pl.Int64(), "key": grid.schema["key"], "energy_wh": pl.Float64(),
                        "value_sum": pl.Float64(), "value_avg": pl.Float64(), "covered_s": pl.Int64(),
                        "with_data": pl.Int64()})  # fmt: skip
    pairs = [(source_id, index) for index, group in enumerate(groups) for source_id in group.source_ids]
    if not pairs or grid.is_empty():
        return pl.DataFrame(schema=schema)
    if timezone not in known_timezones():  # it is written into the SQL below
        raise ValueError(f"unknown time zone {timezone!r}")
    low, high = grid["bucket_start"].min(), grid["bucket_end"].max()
    assert isinstance(low, datetime) and isinstance(high, datetime)
    zone = f"'{timezone}'"
    if resolution in _STEPS:
        key, bounds = "r.bucket", f"r.bucket >= {ts_literal(low)} AND r.bucket < {ts_literal(high)}"
    else:
        local_day = f"CAST(timezone({zone}, r.bucket) AS DATE)"
        key = local_day if resolution == Resolution.DAY else f"CAST(date_trunc('month', {local_day}) AS DATE)"
        # Daily buckets start at local midnights; a day of margin on each side, then the exact local dates.
        bounds = (
            f"r.bucket >= {ts_literal(low - timedelta(days=1))} AND r.bucket < {ts_literal(high + timedelta(days=1))}"
            f" AND {local_day} >= DATE '{_local_date(low, timezone)}'"
            f" AND {local_day} < DATE '{_local_date(high, timezone)}'"
        )
    values = ", ".join(f"({int(s)}, {int(g)})" for s, g in pairs)
    ids = ", ".join(str(int(s)) for s in sorted({s for s, _ in pairs}))
    query = f"""
        WITH g(source_id, grp) AS (VALUES {values}),
        per_source AS (
            SELECT g.grp, r.source_id, {key} AS key, sum(r.energy_wh) AS energy_wh,
                   sum(r.avg_value * r.covered_s) / nullif(sum(r.covered_s), 0) AS value,
                   sum(r.covered_s) AS covered_s
            FROM {_TABLES[resolution]} r JOIN g ON g.source_id = r.source_id
            WHERE r.source_id IN ({ids}) AND {bounds}
            GROUP BY ALL
        )
        SELECT grp, key, sum(energy_wh) AS energy_wh, sum(value) AS value_sum, avg(value) AS value_avg,
               sum(covered_s) AS covered_s, count(*) FILTER (WHERE per_source.covered_s > 0) AS with_data
        FROM per_source GROUP BY ALL
    """
    return con.sql(query).pl().cast(dict(schema))


def _local_date(ts: datetime, timezone: str) -> date:
    return ts.astimezone(ZoneInfo(timezone)).date()


# The bucket's bounds in site time and its length (a DST day's 23 or 25 hours), for the series and the balance.
_HOURS = ((pl.col("bucket_end") - pl.col("bucket_start")).dt.total_seconds() / 3600).alias("hours")


def _local_bounds(timezone: str) -> list[pl.Expr]:
    return [
        pl.col("bucket_start").dt.convert_time_zone(timezone).alias("bucket_start_local"),
        pl.col("bucket_end").dt.convert_time_zone(timezone).alias("bucket_end_local"),
    ]


def _series_frame(groups: list[SeriesGroup], grid: pl.DataFrame, data: pl.DataFrame, timezone: str) -> pl.DataFrame:
    """The long frame of the groups over the whole grid: a bucket without data is a row of nulls."""
    names = pl.DataFrame(
        {
            "grp": list(range(len(groups))),
            "series": [g.name for g in groups],
            "group": [g.key for g in groups],
            "percent": [g.percent for g in groups],
            "sources": [len(g.source_ids) for g in groups],
        },
        schema={"grp": pl.Int64, "series": pl.String, "group": pl.String, "percent": pl.Boolean, "sources": pl.Int64},
    )
    percent = pl.col("percent")
    # Coverage counts missing rows as zero seconds: that describes the gap, it does not fill it.
    covered = pl.col("covered_s").fill_null(0)
    # Every source of the group has data in the bucket; otherwise a sum or mean of the rest would pass for the whole.
    complete = pl.col("with_data").fill_null(0) == pl.col("sources")
    return (
        names.join(grid, how="cross")
        .join(data, on=["grp", "key"], how="left")
        .sort("grp", "bucket_start")
        .select(
            "series",
            "group",
            "key",
            *_local_bounds(timezone),
            pl.col("bucket_start").alias("bucket_start_utc"),
            _HOURS,
            pl.when(~percent & complete).then(pl.col("value_sum")).alias("power_w"),
            pl.when(~percent & complete).then(pl.col("energy_wh") / 1000).alias("energy_kwh"),
            pl.when(percent & complete).then(pl.col("value_avg")).alias("soc_pct"),
            (100 * covered / (pl.col("sources") * pl.col("expected_s"))).clip(upper_bound=100.0).alias("coverage_pct"),
            "percent",
            covered.alias("covered_s"),
            (pl.col("sources") * pl.col("expected_s")).alias("expected_s"),
        )
    )


@dataclass(frozen=True)
class History:
    """What the History page shows for one site, level, resolution and range."""

    series: pl.DataFrame  # long: one row per series and bucket
    balance: pl.DataFrame  # one row per bucket
    groups: list[SeriesGroup]
    coverage_pct: float | None  # of the energy series shown, over the whole range
    unmetered: list[str]  # grid flows the site has no source for: unknown in the balance, never zero


def load_history(
    store: Store,
    site_id: int,
    level: Level,
    entity_id: int | None,
    resolution: Resolution,
    first_day: date,
    last_day: date,
    now: datetime,
) -> History:
    """Series and energy balance for the range, read in one short connection. Check the range first."""
    with store.connect(read_only=True) as con:
        catalog = read_catalog(con)
        site = catalog.site(site_id)
        shown = series_groups(catalog, site_id, level, entity_id)
        roles = role_groups(catalog, site_id)
        grid = bucket_grid(site.timezone, resolution, first_day, last_day, now)
        extra = [g for g in roles.values() if g not in shown]
        data = _read_groups(con, shown + extra, resolution, site.timezone, grid)
    frame = _series_frame(shown + extra, grid, data, site.timezone)
    series = frame.filter(pl.col("group").is_in([g.key for g in shown]))
    return History(
        series=series,
        balance=_balance(frame, grid, roles, site),
        groups=shown,
        coverage_pct=_coverage(series),
        unmetered=[ROLE_NAMES[role] for role in (Role.GRID_IMPORT, Role.GRID_EXPORT) if role not in roles],
    )


def _balance(frame: pl.DataFrame, grid: pl.DataFrame, roles: dict[Role, SeriesGroup], site: Site) -> pl.DataFrame:
    role_of_group = {group.key: role.value for role, group in roles.items()}
    role_rows = frame.filter(pl.col("group").is_in(list(role_of_group))).with_columns(
        pl.col("group").replace_strict(role_of_group).alias("role")
    )
    buckets = grid.select("key", *_local_bounds(site.timezone), _HOURS)
    return energy_balance(buckets, role_rows, {role.value for role in roles})


def _coverage(series: pl.DataFrame) -> float | None:
    energy = series.filter(~pl.col("percent"))
    if energy.is_empty():
        energy = series
    expected = float(energy["expected_s"].sum())
    return None if not expected else 100.0 * float(energy["covered_s"].sum()) / expected


# --- same period in earlier years ------------------------------------------------------------------------------


def shift_back(day: date, years: int) -> date:
    """The same local date `years` earlier; Feb 29 becomes Feb 28 in a year without one."""
    year = day.year - years
    return day.replace(year=year, day=min(day.day, calendar.monthrange(year, day.month)[1]))


@dataclass(frozen=True)
class YearComparison:
    """Energy of one series in the chosen period and the same dates of earlier years, by position in the period."""

    frame: pl.DataFrame  # period, years_back, position, first_day, last_day, energy_kwh (or soc_pct), coverage_pct
    without_data: list[str]  # "2025 (2025-02-01 to 2025-02-28)" for each earlier period with no data at all


def period_label(first_day: date, last_day: date) -> str:
    return str(first_day.year) if first_day.year == last_day.year else f"{first_day.year}/{last_day.year}"


def load_year_comparison(
    store: Store,
    site_id: int,
    group_key: str,
    level: Level,
    entity_id: int | None,
    resolution: Resolution,
    first_day: date,
    last_day: date,
    years: int,
    now: datetime,
) -> YearComparison:
    """The series `group_key` at day or month resolution over the range and the same dates 1..`years` back.

    Periods are aligned by position (day or month 1, 2, ... of the period), not by date: a Feb 29 in the chosen
    period has no counterpart in a year without one, so that year's period is a day shorter.
    """
    if resolution not in (Resolution.DAY, Resolution.MONTH):
        raise ValueError("years are compared at day or month resolution")
    if not 1 <= years <= MAX_COMPARISON_YEARS:
        raise ValueError(f"compare with 1 to {MAX_COMPARISON_YEARS} earlier years")
    reads = []
    with store.connect(read_only=True) as con:
        catalog = read_catalog(con)
        site = catalog.site(site_id)
        group = next((g for g in series_groups(catalog, site_id, level, entity_id) if g.key == group_key), None)
        if group is None:
            raise NotFound(f"series {group_key} is not part of this selection")
        for back in range(years + 1):
            first, last = shift_back(first_day, back), shift_back(last_day, back)
            grid = bucket_grid(site.timezone, resolution, first, last, now)
            reads.append((back, first, last, grid, _read_groups(con, [group], resolution, site.timezone, grid)))
    # Shaping happens after the connection is closed: a read connection is held only while reading.
    frames, without_data = [], []
    value = "soc_pct" if group.percent else "energy_kwh"
    for back, first, last, grid, data in reads:
        series = _series_frame([group], grid, data, site.timezone)
        frame = series.select(
            pl.lit(period_label(first, last)).alias("period"),
            pl.lit(back, dtype=pl.Int64).alias("years_back"),
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("position"),
            # Local calendar dates: the first and last day of the bucket (a month may be cut by the range).
            pl.col("bucket_start_local").dt.date().alias("first_day"),
            (pl.col("bucket_end_local") - pl.duration(hours=1)).dt.date().alias("last_day"),
            pl.col(value),
            "coverage_pct",
        )
        if back and frame[value].null_count() == frame.height:
            without_data.append(f"{period_label(first, last)} ({first} to {last})")
        frames.append(frame)
    return YearComparison(pl.concat(frames), without_data)
