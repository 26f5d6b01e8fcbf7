"""The live view of a site: the latest reading of every source, whether it is still current, and the power flow now.

Definitions (the README's Live section repeats them):

- A reading is a row of `readings`, with or without a value. Its `ts` is the START of its interval, so it
  describes the site up to the interval's END: the reading is "as of" `ts + interval_s`. An interval still open
  when it was stored (the collector stores the running interval as non-final) describes the site only up to when it
  was stored, so "as of" is `min(ts + interval_s, received_at)`: a reading never claims to know the future.
- A NULL value is the vendor answering for that interval without a figure (SolarEdge reports PV power as `null`
  all night). The vendor was reached, so age and status come from the newest row of any value: a NULL row keeps a
  source current. Its value is unknown: the page shows "-" and "no value reported", never an older value as the
  present, and never 0 (we cannot tell "no production" from "no measurement").
- Age = now - as of (never negative).
- Cadence: the source's API update frequency; a source without API is not polled, so a nominal `MANUAL_CADENCE`.
- Status: "current" while age <= `STALE_FACTOR` x cadence; after that "stale" (or "no API" for a source nobody
  polls, whose old readings are expected rather than a fault); "no data" when the source has no reading at all.
  Only current readings feed the power flow: a stale value is shown in the source table, never as the present.
  A current source whose newest value is NULL makes its flow unknown ("-", "no value reported"), and so the load
  computed from the balance when that flow is one of its terms: at night a SolarEdge-only site shows PV and
  computed load as "-" with that reason, while a metered load source still shows its value.

Speed: the newest readings of a site lie in the last hours, and rows arrive in time order, so a scan bounded by
`ts >= now - RECENT` lets DuckDB's zone maps skip all older row groups (milliseconds on a 17.5M-row table). A source
with nothing in that window (stopped days ago) is found through its newest day in the small daily rollup, which is
rebuilt in the same transaction as every write (collector and CSV import alike), and then one bounded read of that
day. `source_state.bookmark_ts` is not used for this: it tracks final intervals only and imports never set it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import duckdb
import polars as pl

from core.catalog.catalog import Catalog, read_catalog
from core.models import Category, Meter, Site, Source
from core.roles import BALANCE, ROLE_LABELS, Role, balance_load, balance_load_expr, role_of, unmetered_terms
from core.store.change_marks import ChangeMarks, WatchMarks
from core.store.live_readings import newest_minutes
from core.store.store import Store, ts_literal
from core.store.stream_now import StreamNow

STALE_FACTOR = 2  # a source is stale once its newest reading is older than this many expected cadences
MANUAL_CADENCE = timedelta(hours=1)  # nominal cadence of a source without API (CSV imports, manual meters)
RECENT = timedelta(hours=6)  # the window scanned for the newest readings, and the span of the recent-power chart
MIN_STEP_S, MAX_STEP_S = 300, 3600  # the recent-power chart's resolution follows the sources' interval, within these
_DAY_REACH = timedelta(hours=26)  # a site-local day lasts up to 25 hours (autumn DST change), plus slack


class Status(StrEnum):
    CURRENT = "current"
    STALE = "stale"
    NO_DATA = "no data"
    NO_API = "no API"


# The label of each flow's tile and line on the Live page.
FLOW_LABELS = ROLE_LABELS | {Role.PRODUCTION: "PV production"}


NO_VALUE = "no value reported"
LIVE_STREAM = "live stream"
# A live-stream frame counts as "now" for this long: frames come about every second, and a stream that stopped (nobody
# watches, the collector stopped) must not leave its last frame standing for the source's whole cadence.
FRAME_FRESH = timedelta(seconds=30)


@dataclass(frozen=True)
class Reading:
    value: float | None  # None: the vendor answered for this interval without a figure
    ts: datetime  # UTC start of the interval
    interval_s: int  # 0 for a live-stream frame: an instant
    received_at: datetime
    live: bool = False  # from the vendor's live stream (a frame, or a minute of frames), not its history

    @property
    def as_of(self) -> datetime:
        return min(self.ts + timedelta(seconds=self.interval_s), self.received_at)


@dataclass(frozen=True)
class SourceLive:
    source: Source
    meter: Meter
    flow: Role | None  # the flow it feeds (core.roles.role_of); None for a type that feeds none
    cadence: timedelta
    reading: Reading | None
    age: timedelta | None
    status: Status

    @property
    def unit(self) -> str:
        return self.flow.unit if self.flow else "W"

    @property
    def value(self) -> float | None:
        return self.reading.value if self.reading else None

    @property
    def is_current(self) -> bool:
        return self.status is Status.CURRENT

    @property
    def status_text(self) -> str:
        """The status as the page shows it: "current, no value reported" for a current NULL reading, "current, live
        stream" for a value of the vendor's live stream."""
        if self.reading is not None and self.reading.value is None:
            return f"{self.status.value}, {NO_VALUE}"
        if self.reading is not None and self.reading.live:
            return f"{self.status.value}, {LIVE_STREAM}"
        return self.status.value

    def problem(self) -> str:
        """Why this source's value cannot count as the present, in words for the page."""
        if self.reading is None or self.age is None:
            return f"{self.source.name} has no readings" + ("" if self.source.api.use_api else " (no API)")
        if self.is_current:
            return f"{self.source.name}: {NO_VALUE} (last reading {format_age(self.age)})"
        what = "not polled (no API)" if self.status is Status.NO_API else "stale"
        return f"{self.source.name} is {what}: last reading {format_age(self.age)}"


@dataclass(frozen=True)
class FlowValue:
    kind: Role
    value: float | None
    note: str | None = None  # why the value is missing, or how it was obtained (computed load)
    computed: bool = False


@dataclass(frozen=True)
class LiveSnapshot:
    site: Site
    now: datetime
    sources: list[SourceLive]
    flow: dict[Role, FlowValue]
    recent: pl.DataFrame  # `bucket` (UTC start) and one `<flow>_w` column per power flow of the site; nulls are gaps
    recent_step_s: int
    recent_load_computed: bool


def change_mark(store: Store, source_ids: Sequence[int]) -> int | None:
    """The newest change mark of these sources (core.store.change_marks): when it has not moved since the last
    snapshot, the database has nothing new for them. A few `stat` calls, no connection."""
    return ChangeMarks(store.path).newest(source_ids)


def newest_as_of(snapshot: LiveSnapshot) -> datetime | None:
    """How far the site's newest reading reaches ("as of"), for the page's "newest value 2 s ago"."""
    moments = [s.reading.as_of for s in snapshot.sources if s.reading is not None]
    return max(moments) if moments else None


def cadence_of(source: Source) -> timedelta:
    return timedelta(minutes=source.api.update_frequency.minutes) if source.api.use_api else MANUAL_CADENCE


def judge(reading: Reading | None, cadence: timedelta, use_api: bool, now: datetime) -> tuple[timedelta | None, Status]:
    """(age, status) of a source's newest reading at `now`; the boundary, age == 2 x cadence, is still current."""
    if reading is None:
        return None, Status.NO_DATA if use_api else Status.NO_API
    age = max(now - reading.as_of, timedelta(0))
    if age <= STALE_FACTOR * cadence:
        return age, Status.CURRENT
    return age, Status.STALE if use_api else Status.NO_API


def _ids(source_ids: Sequence[int]) -> str:
    return ", ".join(str(int(i)) for i in source_ids)


def newest_readings(
    con: duckdb.DuckDBPyConnection,
    ids: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    with_value: bool = False,
) -> dict[int, Reading]:
    """Each source's newest reading with `start` <= ts <= `end`: whatever its value, or the newest with a value.

    arg_max skips a NULL argument (it would return an older value), so the columns travel in a struct, which is
    never NULL itself."""
    if not ids:
        return {}
    valued = " AND value IS NOT NULL" if with_value else ""
    rows = con.sql(
        "SELECT source_id, max(ts), arg_max({'i': interval_s, 'v': value, 'r': received_at}, ts)"
        f" FROM readings WHERE ts >= {ts_literal(start)} AND ts <= {ts_literal(end)}"
        f" AND source_id IN ({_ids(ids)}){valued} GROUP BY source_id"
    ).fetchall()
    return {
        int(source_id): Reading(
            value=None if row["v"] is None else float(row["v"]), ts=ts, interval_s=int(row["i"]), received_at=row["r"]
        )
        for source_id, ts, row in rows
    }


def latest_readings(
    con: duckdb.DuckDBPyConnection, source_ids: Sequence[int], now: datetime, window: timedelta = RECENT
) -> dict[int, Reading]:
    """The newest reading (ts <= now, value or NULL) of each source that has one."""
    if not source_ids:
        return {}
    found = newest_readings(con, source_ids, now - window, now)
    missing = [i for i in source_ids if i not in found]
    if not missing:
        return found
    # Older than the window: the newest day with data per source from the daily rollup, then one bounded read per
    # distinct day (sources that stopped together, the usual case, share one read).
    days = con.sql(
        f"SELECT source_id, max(bucket) FROM readings_daily WHERE source_id IN ({_ids(missing)})"
        f" AND readings > 0 AND bucket <= {ts_literal(now)} GROUP BY source_id"
    ).fetchall()
    by_day: dict[datetime, list[int]] = defaultdict(list)
    for source_id, day in days:
        by_day[day].append(int(source_id))
    for day, ids in by_day.items():
        found |= newest_readings(con, ids, day, min(now, day + _DAY_REACH))
    return found


def power_flow(sources: Sequence[SourceLive]) -> dict[Role, FlowValue]:
    """The site's flow now from its current sources. A flow is None ("-") when it has no source or when any of its
    sources is not current or reported no value: a partial sum would pass for the whole. Several sources of one
    flow add up (state of charge: their mean). Load without a usable load source is computed from the balance
    load = production + import - export + battery, when every present term is current and has a value."""
    by_kind: dict[Role, list[SourceLive]] = defaultdict(list)
    for s in sources:
        if s.flow is not None:
            by_kind[s.flow].append(s)
    flow = {kind: _measured(kind, by_kind.get(kind, [])) for kind in Role}
    if flow[Role.LOAD].value is None:
        flow[Role.LOAD] = _computed_load(flow, by_kind)
    return flow


_NO_SOURCE = {
    Role.PRODUCTION: "no production (PROD) source at this site",
    Role.LOAD: "no load source (CONS load) at this site",
    Role.GRID_IMPORT: "no grid import source (CONS grid) at this site",
    Role.GRID_EXPORT: "no grid export source (INJ grid) at this site",
    Role.BATTERY: "no battery source (STOR battery) at this site",
    Role.SOC: "no state-of-charge source (STOR soc) at this site",
}


def _measured(kind: Role, members: list[SourceLive]) -> FlowValue:
    if not members:
        return FlowValue(kind, None, _NO_SOURCE[kind])
    bad = [s for s in members if not s.is_current or s.value is None]
    if bad:
        return FlowValue(kind, None, "; ".join(s.problem() for s in bad))
    values = [s.value for s in members if s.value is not None]
    total = sum(values) / len(values) if kind is Role.SOC else sum(values)
    return FlowValue(kind, total)


_BALANCE_TEXT = "computed as production + grid import - grid export + battery"


def _computed_load(flow: dict[Role, FlowValue], by_kind: dict[Role, list[SourceLive]]) -> FlowValue:
    """The balance's load (`core.roles.balance_load`): unknown when a term is, an absent grid meter included."""
    prefix = f"{flow[Role.LOAD].note}; "  # why the measured load is missing: there is none, or it is not current
    unmetered = [_NO_SOURCE[kind] for kind in unmetered_terms({kind for kind, members in by_kind.items() if members})]
    if unmetered:
        return FlowValue(Role.LOAD, None, f"{prefix}cannot be computed: {'; '.join(unmetered)}")
    present = [kind for kind, _ in BALANCE if by_kind.get(kind)]
    blocked = [s.source.name for kind in present for s in by_kind[kind] if not s.is_current]
    if blocked:
        return FlowValue(Role.LOAD, None, f"{prefix}cannot be computed: {', '.join(blocked)} not current")
    # A current term without a value (PV at night on SolarEdge) is unknown, not 0: the load stays unknown too.
    silent = [s.source.name for kind in present for s in by_kind[kind] if s.value is None]
    if silent:
        return FlowValue(Role.LOAD, None, f"{prefix}cannot be computed: {', '.join(silent)} {NO_VALUE}")
    total = balance_load({kind: flow[kind].value for kind in present})
    return FlowValue(Role.LOAD, total, f"{prefix}{_BALANCE_TEXT}", computed=True)


@dataclass(frozen=True)
class RecentPlan:
    """What the recent-power chart reads: its bucket grid, step and the flow of each power source."""

    grid: pl.DataFrame  # `bucket`: every UTC bucket start from now - span to now
    step_s: int
    kinds: dict[int, str]  # source id -> flow (a Role value)
    first: datetime
    now: datetime


def plan_recent(sources: Sequence[SourceLive], now: datetime, span: timedelta = RECENT) -> RecentPlan:
    """The chart's grid: one row per `step` bucket (UTC start) from now - span to now, every bucket present so gaps
    stay gaps. The step is the longest interval among the newest readings (5-minute data gives 5-minute buckets;
    one 15-minute source makes them 15 minutes, so its buckets are not two-thirds empty)."""
    power = [s for s in sources if s.flow is not None and s.flow.is_energy]
    intervals = [s.reading.interval_s for s in power if s.reading is not None]
    step = min(max([MIN_STEP_S, *intervals]), MAX_STEP_S)
    epoch_s = int(now.timestamp())
    first = datetime.fromtimestamp((epoch_s - int(span.total_seconds())) // step * step, UTC)
    last = datetime.fromtimestamp(epoch_s // step * step, UTC)
    grid = pl.DataFrame(
        {"bucket": pl.datetime_range(first, last, timedelta(seconds=step), time_unit="us", time_zone="UTC", eager=True)}
    )
    kinds = {s.source.id: s.flow.value for s in power if s.flow is not None}
    return RecentPlan(grid, step, kinds, first, now)


def fetch_recent(con: duckdb.DuckDBPyConnection, plan: RecentPlan) -> pl.DataFrame:
    """Per power source and bucket, the mean of its non-NULL values (a bucket of only NULLs is absent: a gap)."""
    if not plan.kinds:
        return pl.DataFrame(schema={"source_id": pl.Int64, "bucket": pl.Datetime("us", "UTC"), "value": pl.Float64})
    return con.sql(
        f"SELECT source_id, time_bucket(INTERVAL {plan.step_s} SECOND, ts) AS bucket, avg(value) AS value"
        f" FROM readings WHERE ts >= {ts_literal(plan.first)} AND ts <= {ts_literal(plan.now)}"
        f" AND source_id IN ({_ids(list(plan.kinds))}) AND value IS NOT NULL GROUP BY ALL"
    ).pl()


def shape_recent(plan: RecentPlan, buckets: pl.DataFrame) -> tuple[pl.DataFrame, bool]:
    """(frame, load computed?): the grid with one `<flow>_w` column per power flow of the site. A flow with several
    sources is null in a bucket where any of them has no data. Load, when the site has no load source, follows the
    balance row by row. Pure Polars: runs after the connection is closed."""
    kinds = plan.kinds
    if not kinds:
        return plan.grid, False
    expected = pl.DataFrame({"kind": list(kinds.values())}).group_by("kind").len("expected")
    sums = (
        buckets.with_columns(
            pl.col("source_id").replace_strict(kinds, return_dtype=pl.String).alias("kind"),
            pl.col("bucket").dt.convert_time_zone("UTC").dt.cast_time_unit("us"),
        )
        .group_by("bucket", "kind")
        .agg(pl.col("value").sum().alias("w"), pl.len().alias("n"))
        .join(expected, on="kind")
        .with_columns(pl.when(pl.col("n") == pl.col("expected")).then(pl.col("w")).alias("w"))
    )
    present = sorted(set(kinds.values()), key=lambda k: list(Role).index(Role(k)))
    frame = plan.grid
    for kind in present:
        column = sums.filter(pl.col("kind") == kind).select("bucket", pl.col("w").alias(f"{kind}_w"))
        frame = frame.join(column, on="bucket", how="left")
    # Without a load source, load follows the balance, where every term the rule does not count as 0 is metered.
    computed = Role.LOAD.value not in present and not unmetered_terms({Role(kind) for kind in present})
    if computed:
        columns = {kind: f"{kind.value}_w" for kind, _ in BALANCE if kind.value in present}
        frame = frame.with_columns(balance_load_expr(columns).alias("load_w"))
        ordered = [f"{k.value}_w" for k in Role if f"{k.value}_w" in frame.columns]
        frame = frame.select("bucket", *ordered)
    return frame, computed


def live_snapshot(store: Store, site_id: int, now: datetime) -> LiveSnapshot:
    """Everything the Live page shows for one site at `now`, read in one short connection."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    with store.connect(read_only=True) as con:
        catalog = read_catalog(con)
        site = catalog.site(site_id)
        site_sources = _ordered_sources(catalog, site_id)
        ids = [s.id for s, _ in site_sources]
        newest = latest_readings(con, ids, now)
        minutes = newest_minutes(con, ids, now - RECENT, now)
        history = []
        for source, meter in site_sources:
            reading = newest.get(source.id)
            cadence = cadence_of(source)
            age, status = judge(reading, cadence, source.api.use_api, now)
            kind = role_of(meter.category, source.source_type)
            history.append(SourceLive(source, meter, kind, cadence, reading, age, status))
        plan = plan_recent(history, now)  # the chart's step follows the history's intervals, not the stream's minutes
        buckets = fetch_recent(con, plan)
    # Shaping happens after the connection is closed: a read connection is held only while reading.
    recent, computed = shape_recent(plan, buckets)
    stream = {
        source_id: Reading(value, ts, interval_s, received_at, live=True)
        for source_id, (ts, interval_s, value, received_at) in minutes.items()
    }
    sources = [_newer(s, stream.get(s.source.id), now) for s in history]
    return LiveSnapshot(site, now, sources, power_flow(sources), recent, plan.step_s, computed)


def _newer(shown: SourceLive, candidate: Reading | None, now: datetime) -> SourceLive:
    """The source with `candidate` (a live-stream reading) when it reaches further than what it shows."""
    if candidate is None or (shown.reading is not None and candidate.as_of <= shown.reading.as_of):
        return shown
    age, status = judge(candidate, shown.cadence, shown.source.api.use_api, now)
    return replace(shown, reading=candidate, age=age, status=status)


def with_stream_frames(
    snapshot: LiveSnapshot, frames: Mapping[int, tuple[datetime, float | None]], now: datetime
) -> LiveSnapshot:
    """The snapshot with the newest live-stream frames (core.store.stream_now: {source_id: (time, value)}) that are
    fresh (`FRAME_FRESH`) at `now` and newer than what a source shows, and the power flow again. (The snapshot may
    be older than the frames: it is read again only when the database has something new.)"""
    fresh = {
        source_id: Reading(value, at, 0, at, live=True)
        for source_id, (at, value) in frames.items()
        if timedelta(0) <= now - at <= FRAME_FRESH or timedelta(0) <= at - now <= timedelta(seconds=5)
    }
    if not fresh:
        return snapshot
    sources = [_newer(s, fresh.get(s.source.id), now) for s in snapshot.sources]
    return replace(snapshot, sources=sources, flow=power_flow(sources))


def stream_frames(store: Store, source_ids: Sequence[int]) -> dict[int, tuple[datetime, float | None]]:
    """The newest live-stream frame of each of these sources that has one (files beside the database, no
    connection)."""
    return StreamNow(store.path).read(source_ids)


def watching(store: Store, source_ids: Sequence[int]) -> None:
    """Say that someone is watching these sources now (Live, while it follows): the collector opens the live stream
    of an Enphase source that allows it, and closes it a few seconds after the marks stop moving."""
    WatchMarks(store.path).mark(source_ids)


_CATEGORY_ORDER = list(Category)


def _ordered_sources(catalog: Catalog, site_id: int) -> list[tuple[Source, Meter]]:
    pairs = [(s, catalog.meter(s.meter_id)) for s in catalog.sources_of_site(site_id)]
    return sorted(pairs, key=lambda p: (_CATEGORY_ORDER.index(p[1].category), p[1].name.lower(), p[0].name.lower()))


def format_age(age: timedelta) -> str:
    """ "45 s ago", "4 min ago", "2 h 5 min ago", "3 days ago"."""
    seconds = int(age.total_seconds())
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 48 * 3600:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h {minutes} min ago" if minutes else f"{hours} h ago"
    return f"{seconds // 86400} days ago"


def format_value(value: float | None, unit: str) -> str:
    """Power in W below 1 kW and kW above; state of charge in %; "-" when undefined."""
    if value is None:
        return "-"
    if unit == "%":
        return f"{value:.1f} %"
    if abs(value) >= 1000:
        return f"{value / 1000:,.2f} kW"
    return f"{value:,.0f} W"
