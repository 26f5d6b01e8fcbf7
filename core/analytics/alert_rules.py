"""Alert rules: pure functions of a source table, recent readings and daily rollups, at a given `now`.

Every rule says, for every source it applies to, one of three things:
- FIRING: the condition holds (with a message and a value);
- CLEAR: the data shows the condition is gone;
- UNKNOWN: the data says nothing either way (PV at night, a window without readings). An open alert then stays
  as it is, so the night does not "resolve" a dead inverter that reopens every morning.
`core.analytics.alerts` turns these findings into the stored lifecycle; a source a rule no longer applies to gets no
finding.

Windows end at each source's newest reading, not at `now`: readings that arrive late are judged when they arrive,
and whether data arrives at all is the job of one rule only (no data). Sun positions come from pvlib's solar
position (NREL SPA) at the middle of each reading's interval; clear-sky irradiance from pvlib's Ineichen model.
Both run offline and are memoised (a pure function of place and instant), so repeated evaluations cost little.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import polars as pl
from pvlib.location import Location

from core.localtime import local_midnight
from core.models import UpdateFrequency, every_label
from core.roles import Role, role_expr
from core.sun import sun_elevation


class Rule(StrEnum):
    NO_DATA = "no_data"
    PV_ZERO_IN_SUN = "pv_zero_in_sun"
    LOW_DAILY_YIELD = "low_daily_yield"
    OUT_OF_BOUNDS = "out_of_bounds"
    SOC_STUCK = "soc_stuck"

    @property
    def label(self) -> str:
        return RULE_LABELS[self]

    @property
    def severity(self) -> str:
        return RULE_SEVERITY[self]


RULE_LABELS = {
    Rule.NO_DATA: "No data",
    Rule.PV_ZERO_IN_SUN: "PV zero in sun",
    Rule.LOW_DAILY_YIELD: "Low daily yield",
    Rule.OUT_OF_BOUNDS: "Out of bounds",
    Rule.SOC_STUCK: "State of charge stuck",
}
# A dead PV system in daylight loses energy every minute; a low day may just be weather (the rule cannot tell).
RULE_SEVERITY = {
    Rule.NO_DATA: "warning",
    Rule.PV_ZERO_IN_SUN: "critical",
    Rule.LOW_DAILY_YIELD: "info",
    Rule.OUT_OF_BOUNDS: "warning",
    Rule.SOC_STUCK: "warning",
}


class State(StrEnum):
    FIRING = "firing"
    CLEAR = "clear"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Finding:
    rule: Rule
    source_id: int
    site_id: int
    state: State
    message: str = ""
    value: float | None = None


# Windows, each ending at the source's newest reading. PV needs a few readings of daylight; out of bounds keeps an
# alert open for an hour after the last bad reading, so a one-off spike shows up before it resolves.
PV_WINDOW = timedelta(hours=2)
BOUNDS_WINDOW = timedelta(hours=1)
READ_MARGIN = timedelta(hours=2)  # how far behind `now` a source's newest reading may be and still be judged
# A day counts as complete when its readings cover this share of it (a day of 23 or 25 hours included).
COMPLETE_DAY_SHARE = 0.9
SOC_MIN_PCT, SOC_MAX_PCT = 0.0, 100.0


@dataclass(frozen=True)
class Thresholds:
    """The rules' settings (`Settings.alert_*`, documented there and in the README)."""

    no_data_factor: float
    zero_w: float
    zero_minutes: float
    sun_elevation_deg: float
    low_yield_share: float
    performance_ratio: float
    max_capacity_factor: float
    night_elevation_deg: float
    night_max_share: float
    soc_stuck_hours: float
    soc_stuck_hours_without_power: float
    soc_range_pct: float
    soc_flow_share: float

    @classmethod
    def from_settings(cls, settings: Any) -> Thresholds:
        return cls(**{f.name: getattr(settings, f"alert_{f.name}") for f in fields(cls)})

    @property
    def pv_window(self) -> timedelta:
        return max(PV_WINDOW, timedelta(minutes=2 * self.zero_minutes))

    @property
    def no_data_limit_max(self) -> timedelta:
        """The longest no-data limit (for a source polled daily, the slowest Update Frequency): the short read reaches
        that far so the newest reading of every source not yet overdue is read exactly (2 days at the default
        factor of 2; the rules that look at values window their readings themselves)."""
        return timedelta(minutes=max(f.minutes for f in UpdateFrequency) * self.no_data_factor)

    @property
    def short_read(self) -> timedelta:
        """How far back every source's readings are read: the PV and bounds windows, and far enough to tell the
        newest reading exactly for any source that is not (long) overdue."""
        return max(self.pv_window, BOUNDS_WINDOW, self.no_data_limit_max) + READ_MARGIN

    @property
    def long_read(self) -> timedelta:
        """How far back state-of-charge and battery power readings are read."""
        return timedelta(hours=max(self.soc_stuck_hours, self.soc_stuck_hours_without_power)) + READ_MARGIN


SOURCE_SCHEMA = pl.Schema(
    [
        ("source_id", pl.Int64()),
        ("site_id", pl.Int64()),
        ("category", pl.Utf8()),
        ("source_type", pl.Utf8()),
        ("capacity_kw", pl.Float64()),
        ("use_api", pl.Boolean()),
        ("cadence_min", pl.Int64()),
        ("delivery", pl.Utf8()),  # how its readings arrive (`core.providers.spec.Delivery`): poll, push, subscribe
        ("created_at", pl.Datetime("us", "UTC")),
        ("latitude", pl.Float64()),
        ("longitude", pl.Float64()),
        ("timezone", pl.Utf8()),
    ]
)
READING_SCHEMA = pl.Schema(
    [
        ("source_id", pl.Int64()),
        ("ts", pl.Datetime("us", "UTC")),
        ("interval_s", pl.Int32()),
        ("value", pl.Float64()),
    ]
)
LATEST_SCHEMA = pl.Schema([("source_id", pl.Int64()), ("last_end", pl.Datetime("us", "UTC"))])
DAILY_SCHEMA = pl.Schema(
    [
        ("source_id", pl.Int64()),
        ("bucket", pl.Datetime("us", "UTC")),
        ("energy_wh", pl.Float64()),
        ("covered_s", pl.Int64()),
        # Seconds of the day with a stored row, a NULL value included (the vendor answered "no value": SolarEdge
        # at night). Null where not read (only yesterday's buckets of solar sources are; see core.analytics.alerts).
        ("received_s", pl.Int64()),
    ]
)


# --- the sun ---------------------------------------------------------------------------------------------------


# Memo of `sun_elevation` by (latitude, longitude, epoch second): an evaluation after every poll sees the same
# instants again and again, and pvlib's SPA costs ~3 ms a call whatever the number of instants. When it outgrows
# its bound the older half goes (windows only move forward); ~100 bytes an entry.
_MAX_ELEVATIONS = 200_000
_elevations: dict[tuple[float, float, int], float] = {}
_elevations_lock = threading.Lock()


def _cached_elevations(keys: list[tuple[float, float, int]]) -> list[float]:
    with _elevations_lock:
        missing = [key for key in keys if key not in _elevations]
    places: dict[tuple[float, float], list[int]] = {}
    for latitude, longitude, epoch in missing:
        places.setdefault((latitude, longitude), []).append(epoch)
    computed = {}
    for (latitude, longitude), epochs in places.items():  # outside the lock: the result is the same for everyone
        times = pd.DatetimeIndex(np.array(epochs, dtype="datetime64[s]")).tz_localize("UTC")
        for epoch, elevation in zip(epochs, sun_elevation(latitude, longitude, times).tolist(), strict=True):
            computed[(latitude, longitude, epoch)] = elevation
    with _elevations_lock:
        _elevations.update(computed)
        result = [_elevations.get(key, computed.get(key, np.nan)) for key in keys]
        if len(_elevations) > _MAX_ELEVATIONS:
            cutoff = sorted(key[2] for key in _elevations)[len(_elevations) // 2]
            for key in [key for key in _elevations if key[2] < cutoff]:
                del _elevations[key]
    return result


def with_sun_elevation(readings: pl.DataFrame) -> pl.DataFrame:
    """`readings` (with latitude and longitude columns) plus `elevation`: the sun at the middle of each interval."""
    mid_s = (pl.col("ts").dt.epoch("s") + pl.col("interval_s").cast(pl.Int64) // 2).alias("mid_s")
    frame = readings.with_columns(mid_s)
    instants = frame.select("latitude", "longitude", "mid_s").unique()
    keys = list(zip(*(instants[c].to_list() for c in instants.columns), strict=True))
    elevation = pl.Series("elevation", _cached_elevations(keys), dtype=pl.Float64)
    return frame.join(instants.with_columns(elevation), on=["latitude", "longitude", "mid_s"], how="left")


@lru_cache(maxsize=8_192)
def clear_sky_kwh_per_kw(latitude: float, longitude: float, timezone: str, day: date) -> float:
    """Clear-sky insolation of a site-local day in kWh/m², which is also kWh per kW of PV capacity (capacity is
    rated at 1000 W/m²): the sum of Ineichen GHI / 1000 over the day's quarter hours, times 0.25 h."""
    start, end = local_midnight(day, timezone), local_midnight(day + timedelta(days=1), timezone)
    quarters = int((end - start) / timedelta(minutes=15))  # 92, 96 or 100 on DST days
    times = pd.date_range(start + timedelta(minutes=7.5), periods=quarters, freq="15min")
    ghi = Location(latitude, longitude, tz=timezone).get_clearsky(times, model="ineichen")["ghi"]
    return float(np.nansum(np.asarray(ghi, dtype=np.float64)) * 0.25 / 1000.0)


# --- helpers -----------------------------------------------------------------------------------------------------


def _local(moment: datetime, timezone: str) -> str:
    return moment.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M %Z")


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _power(watts: float) -> str:
    return f"{watts:,.0f} W" if abs(watts) < 10_000 else f"{watts / 1000:,.1f} kW"


# The end of a reading's interval: where a window ends and a source's age counts from (core.analytics.alerts too).
READING_END = pl.col("ts") + pl.duration(seconds=pl.col("interval_s").cast(pl.Int64))


def _with_ends(readings: pl.DataFrame) -> pl.DataFrame:
    """Readings with the `end` of their interval and the `newest` end of their source."""
    return readings.with_columns(READING_END.alias("end")).with_columns(
        pl.col("end").max().over("source_id").alias("newest")
    )


def _in_window(frame: pl.DataFrame, window: timedelta) -> pl.DataFrame:
    return frame.filter(pl.col("ts") >= pl.col("newest") - window)


def _finding(
    rule: Rule, source: Mapping[str, Any], state: State, message: str = "", value: float | None = None
) -> Finding:
    return Finding(rule, int(source["source_id"]), int(source["site_id"]), state, message, value)


# Sources by role (core.roles); the PV rules look at solar production only, not wind or hydro (core.analytics.alerts
# reads yesterday's rows of the same SOLAR sources for the low-yield rule).
SOLAR = (role_expr() == Role.PRODUCTION.value) & (pl.col("source_type") == "solar")
_SOC = role_expr() == Role.SOC.value
_BATTERY = role_expr() == Role.BATTERY.value


# --- the rules ---------------------------------------------------------------------------------------------------
# Each rule aggregates per source in Polars, then walks the (few hundred) aggregated rows to phrase its findings.


# A late source's message names who went quiet when nobody polls it: a Push source's sender, an MQTT source's device
# (the update frequency is then the cadence the user said to expect of them, not a poll interval). Polled sources
# keep the plain wording.
_SILENT = {"push": "No reading pushed", "subscribe": "No reading from its MQTT device"}


def no_data(sources: pl.DataFrame, latest: pl.DataFrame, now: datetime, th: Thresholds) -> list[Finding]:
    """Sources with the API on whose newest stored reading ended more than `no_data_factor` update periods ago.

    Age counts from the END of the newest stored interval, a NULL value included: a NULL is the vendor answering
    "no value" (SolarEdge reports null PV power all night), which is contact, not silence. Or from the source's
    creation when that is later, so a source just added is not late before its first poll. The period is the
    source's Update Frequency whatever the interval of its readings (a Push sender's 1-minute readings included).
    """
    findings = []
    frame = sources.filter(pl.col("use_api")).join(latest, on="source_id", how="left")
    for row in frame.iter_rows(named=True):
        limit = timedelta(minutes=row["cadence_min"] * th.no_data_factor)
        last_end, created = row["last_end"], row["created_at"]
        since = max((t for t in (last_end, created) if t is not None), default=None)
        age = now - since if since is not None else None
        if age is not None and age <= limit:
            findings.append(_finding(Rule.NO_DATA, row, State.CLEAR))
            continue
        expected = f"expected every {every_label(row['cadence_min'])}"
        silent = _SILENT.get(row["delivery"])
        if last_end is None:
            message = f"{silent or 'No reading received'} yet ({expected})."
        else:
            newest = _local(last_end, row["timezone"])
            message = (
                f"{silent or 'No reading'} for {_minutes((now - last_end).total_seconds())} ({expected}); the newest"
                f" ended {newest}."
            )
        value = round(age.total_seconds() / 60, 1) if age is not None else None
        findings.append(_finding(Rule.NO_DATA, row, State.FIRING, message, value))
    return findings


def pv_zero_in_sun(sources: pl.DataFrame, readings: pl.DataFrame, th: Thresholds) -> list[Finding]:
    """Solar sources that produced nothing (<= zero_w) for `zero_minutes` of readings while the sun stood more than
    `sun_elevation_deg` above the horizon, since their last producing reading (within the PV window).

    Readings in the dark neither count nor clear: the night does not resolve a dead inverter. Any producing reading
    (whatever the sun) clears. With no producing reading and too little daylight in the window: unknown.
    `readings` carry `elevation` (see `with_sun_elevation`).
    """
    frame = _in_window(_with_ends(readings), th.pv_window).with_columns(
        (pl.col("value") > th.zero_w).alias("producing")
    )
    last_producing = pl.col("ts").filter(pl.col("producing")).max().over("source_id")
    after = last_producing.is_null() | (pl.col("ts") > last_producing)  # every reading after it is a zero
    sunlit_zero = after & (pl.col("elevation") > th.sun_elevation_deg)
    stats = (
        frame.with_columns(sunlit_zero.alias("sunlit_zero"))
        .group_by("source_id")
        .agg(
            pl.col("producing").any().alias("produced"),
            pl.col("interval_s").filter(pl.col("sunlit_zero")).sum().alias("zero_s"),
            pl.col("ts").filter(pl.col("sunlit_zero")).min().alias("since"),
        )
    )
    findings = []
    for row in sources.filter(SOLAR).join(stats, on="source_id", how="left").iter_rows(named=True):
        zero_s = float(row["zero_s"] or 0)
        if zero_s >= th.zero_minutes * 60:
            message = (
                f"Zero production (at most {th.zero_w:g} W) for {_minutes(zero_s)} with the sun more than"
                f" {th.sun_elevation_deg:g}° above the horizon, since {_local(row['since'], row['timezone'])}."
            )
            findings.append(_finding(Rule.PV_ZERO_IN_SUN, row, State.FIRING, message, round(zero_s / 60, 1)))
        else:
            findings.append(_finding(Rule.PV_ZERO_IN_SUN, row, State.CLEAR if row["produced"] else State.UNKNOWN))
    return findings


def _bounds_kind(th: Thresholds) -> pl.Expr:
    """Which bound a reading breaks, or null. Capacity checks skip a capacity of 0."""
    value, capacity_w = pl.col("value"), pl.col("capacity_kw") * 1000.0
    return (
        pl.when(_SOC & ((value < SOC_MIN_PCT) | (value > SOC_MAX_PCT)))
        .then(pl.lit("soc"))
        .when(~_SOC & (capacity_w > 0) & (value > th.max_capacity_factor * capacity_w))
        .then(pl.lit("above"))
        .when(~_SOC & (value < -th.zero_w))
        .then(pl.lit("negative"))
        .when(
            (pl.col("source_type") == "solar")
            & (capacity_w > 0)
            & (pl.col("elevation") < th.night_elevation_deg)
            & (value > th.night_max_share * capacity_w)
        )
        .then(pl.lit("night"))
    )


def _bounds_message(problem: Mapping[str, Any], th: Thresholds) -> str:
    value, at = problem["value"], _local(problem["ts"], problem["timezone"])
    capacity_w = problem["capacity_kw"] * 1000.0
    text = {
        "soc": lambda: f"State of charge {value:.1f} % at {at}, outside 0-100 %",
        "above": lambda: (
            f"{_power(value)} at {at}, above {th.max_capacity_factor:g} x capacity"
            f" ({_power(th.max_capacity_factor * capacity_w)})"
        ),
        "negative": lambda: f"Negative production {_power(value)} at {at}",
        "night": lambda: (
            f"{_power(value)} at {at} with the sun {-problem['elevation']:.0f}° below the horizon (night: below"
            f" {th.night_elevation_deg:g}°; at most {th.night_max_share:.0%} of capacity expected)"
        ),
    }[problem["kind"]]()
    more = problem["count"] - 1
    return text + (f" (and {more} more reading(s) out of bounds in the last hour)." if more else ".")


def out_of_bounds(sources: pl.DataFrame, readings: pl.DataFrame, th: Thresholds) -> list[Finding]:
    """Physically impossible values in the last hour of a source's data: production above
    `max_capacity_factor` x capacity, below -zero_w (negative), solar production above `night_max_share` of
    capacity while the sun is below `night_elevation_deg`; a state of charge outside 0-100 %.

    `readings` carry `elevation` for solar sources (null elsewhere). The newest bad reading is described.
    """
    applies = sources.filter(role_expr().is_in([Role.PRODUCTION.value, Role.SOC.value]))
    frame = _in_window(_with_ends(readings), BOUNDS_WINDOW).join(
        applies.select("source_id", "category", "source_type", "capacity_kw", "timezone"), on="source_id"
    )
    seen = set(frame["source_id"].unique().to_list())
    problems = (
        frame.with_columns(_bounds_kind(th).alias("kind"))
        .filter(pl.col("kind").is_not_null())
        .sort("ts", descending=True)
        .group_by("source_id")
        .agg(pl.all().first(), pl.len().alias("count"))
    )
    by_source = {int(p["source_id"]): p for p in problems.iter_rows(named=True)}
    findings = []
    for row in applies.iter_rows(named=True):
        problem = by_source.get(row["source_id"])
        if problem is not None:
            message = _bounds_message(problem, th)
            findings.append(_finding(Rule.OUT_OF_BOUNDS, row, State.FIRING, message, problem["value"]))
        else:
            findings.append(
                _finding(Rule.OUT_OF_BOUNDS, row, State.CLEAR if row["source_id"] in seen else State.UNKNOWN)
            )
    return findings


def _soc_runs(sources: pl.DataFrame, readings: pl.DataFrame, th: Thresholds) -> pl.DataFrame:
    """Per state-of-charge source: its newest end and value, and since when it has stayed within the range
    (the longest run of newest readings whose max - min < soc_range_pct), and whether the run starts at a move."""
    socs = _with_ends(readings.join(sources.filter(_SOC).select("source_id"), on="source_id"))
    spread = (pl.col("value").cum_max() - pl.col("value").cum_min()).over("source_id")
    stable = pl.col("spread") < th.soc_range_pct
    return (
        socs.sort(["source_id", "ts"], descending=[False, True])  # newest first: the run grows backwards
        .with_columns(spread.alias("spread"))
        .group_by("source_id")
        .agg(
            pl.col("newest").first(),
            pl.col("value").first().alias("soc"),
            pl.col("ts").filter(stable).min().alias("stable_since"),
            (stable.sum() < pl.len()).alias("moved_before"),
        )
    )


def _battery_flows(
    sources: pl.DataFrame, readings: pl.DataFrame, runs: pl.DataFrame, th: Thresholds
) -> dict[int, list[tuple[float, float]]]:
    """Per state-of-charge source: (mean |power| in W, capacity in W) of each battery power source of its site,
    over the `soc_stuck_hours` before the SoC's newest end (batteries without readings there left out)."""
    batteries = sources.filter(_BATTERY).select(pl.col("source_id").alias("battery_id"), "site_id", "capacity_kw")
    windows = runs.join(sources.select("source_id", "site_id"), on="source_id").select("source_id", "site_id", "newest")
    window = timedelta(hours=th.soc_stuck_hours)
    power = readings.rename({"source_id": "battery_id"}).join(batteries, on="battery_id")
    flows = (
        power.join(windows, on="site_id")
        .filter((pl.col("ts") >= pl.col("newest") - window) & (pl.col("ts") < pl.col("newest")))
        .group_by("source_id", "battery_id")
        .agg(
            ((pl.col("value").abs() * pl.col("interval_s")).sum() / pl.col("interval_s").cast(pl.Float64).sum()).alias(
                "mean_abs"
            ),
            (pl.col("capacity_kw").first() * 1000.0).alias("capacity_w"),
        )
    )
    result: dict[int, list[tuple[float, float]]] = {}
    for source_id, mean_abs, capacity_w in flows.select("source_id", "mean_abs", "capacity_w").iter_rows():
        result.setdefault(int(source_id), []).append((float(mean_abs), float(capacity_w)))
    return result


def soc_stuck(sources: pl.DataFrame, readings: pl.DataFrame, th: Thresholds) -> list[Finding]:
    """A state of charge that moved less than `soc_range_pct` points for `soc_stuck_hours` while the site's battery
    power showed real flow: mean(|power|) over those hours above `soc_flow_share` of the battery's capacity (for
    at least one battery power source of the site). A SoC resting at its minimum overnight with no flow is fine.

    A site without battery power readings in that window is judged on the SoC alone, over the longer
    `soc_stuck_hours_without_power`. Unknown while the data does not reach back far enough to tell.
    """
    runs = _soc_runs(sources, readings, th)
    flows = _battery_flows(sources, readings, runs, th)
    findings = []
    for row in sources.filter(_SOC).join(runs, on="source_id", how="left").iter_rows(named=True):
        if row["newest"] is None:
            findings.append(_finding(Rule.SOC_STUCK, row, State.UNKNOWN))
            continue
        site_flows = flows.get(row["source_id"], [])
        window = timedelta(hours=th.soc_stuck_hours if site_flows else th.soc_stuck_hours_without_power)
        stable_for = row["newest"] - row["stable_since"]
        if stable_for < window:
            findings.append(_finding(Rule.SOC_STUCK, row, State.CLEAR if row["moved_before"] else State.UNKNOWN))
            continue
        soc, hours = row["soc"], stable_for.total_seconds() / 3600
        unchanged = f"at {soc:.1f} % (moved less than {th.soc_range_pct:g} points) for {hours:.1f} h"
        if not site_flows:
            message = f"State of charge unchanged {unchanged}; the site has no battery power readings to compare with."
            findings.append(_finding(Rule.SOC_STUCK, row, State.FIRING, message, soc))
            continue
        moving = [(mean, capacity) for mean, capacity in site_flows if mean > th.soc_flow_share * capacity]
        if not moving:
            findings.append(_finding(Rule.SOC_STUCK, row, State.CLEAR))
            continue
        mean, capacity = max(moving)
        message = (
            f"State of charge stuck {unchanged} while the battery power averaged {_power(mean)} in the last"
            f" {th.soc_stuck_hours:g} h (flow: more than {th.soc_flow_share:.0%} of {_power(capacity)})."
        )
        findings.append(_finding(Rule.SOC_STUCK, row, State.FIRING, message, soc))
    return findings


def yesterday_bounds(now: datetime, timezone: str) -> tuple[date, datetime, datetime]:
    """Yesterday in the site's zone: the date and its UTC start and end (23, 24 or 25 hours apart)."""
    day = now.astimezone(ZoneInfo(timezone)).date() - timedelta(days=1)
    return day, local_midnight(day, timezone), local_midnight(day + timedelta(days=1), timezone)


def low_daily_yield(sources: pl.DataFrame, daily: pl.DataFrame, now: datetime, th: Thresholds) -> list[Finding]:
    """Solar sources whose yesterday (site-local, complete) yielded less than `low_yield_share` of the clear-sky
    expectation: capacity_kw x clear-sky insolation (kWh/m², Ineichen GHI) x `performance_ratio`.

    Complete means stored rows (a NULL value included: SolarEdge reports null all night) cover at least
    COMPLETE_DAY_SHARE of the day: `received_s`, or `covered_s` (seconds with a value) where larger or not read.
    A NULL contributes no energy. Unknown when the day is incomplete, or when the clear sky gives nothing (polar
    night). The expectation uses horizontal irradiance, not the panels' plane.
    """
    rows = {
        (int(r[0]), r[1]): (r[2], max(int(r[3] or 0), int(r[4] or 0)))
        for r in daily.select("source_id", "bucket", "energy_wh", "covered_s", "received_s").iter_rows()
    }
    findings = []
    for row in sources.filter(SOLAR & (pl.col("capacity_kw") > 0)).iter_rows(named=True):
        day, start, end = yesterday_bounds(now, row["timezone"])
        key = (row["source_id"], start)
        if key not in rows or rows[key][1] < COMPLETE_DAY_SHARE * (end - start).total_seconds():
            findings.append(_finding(Rule.LOW_DAILY_YIELD, row, State.UNKNOWN))
            continue
        energy_wh = rows[key][0] or 0.0  # a day of NULLs only has no energy sum: it produced nothing
        insolation = clear_sky_kwh_per_kw(row["latitude"], row["longitude"], row["timezone"], day)
        expected_kwh = row["capacity_kw"] * insolation * th.performance_ratio
        if expected_kwh <= 0:
            findings.append(_finding(Rule.LOW_DAILY_YIELD, row, State.UNKNOWN))
            continue
        yield_kwh = energy_wh / 1000.0
        if yield_kwh >= th.low_yield_share * expected_kwh:
            findings.append(_finding(Rule.LOW_DAILY_YIELD, row, State.CLEAR))
            continue
        message = (
            f"Yesterday ({day.isoformat()}) produced {yield_kwh:,.1f} kWh: {yield_kwh / expected_kwh:.0%} of the"
            f" clear-sky expectation of {expected_kwh:,.1f} kWh ({row['capacity_kw']:g} kW x {insolation:.2f} kWh/m²"
            f" x {th.performance_ratio:g}); alerts below {th.low_yield_share:.0%}."
        )
        findings.append(_finding(Rule.LOW_DAILY_YIELD, row, State.FIRING, message, round(yield_kwh, 3)))
    return findings


def evaluate_rules(
    sources: pl.DataFrame,
    readings: pl.DataFrame,
    latest: pl.DataFrame,
    daily: pl.DataFrame,
    now: datetime,
    th: Thresholds,
) -> list[Finding]:
    """Every rule over every source it applies to.

    `sources`: SOURCE_SCHEMA, one row per source. `readings`: READING_SCHEMA, non-null values only, at least
    `th.short_read` back for every source and `th.long_read` for state-of-charge and battery power sources.
    `latest`: LATEST_SCHEMA, the end of each source's newest stored reading, NULL values included. `daily`:
    DAILY_SCHEMA, the daily rollup's last days (with `received_s` for yesterday's solar buckets).
    """
    located = readings.join(sources.select("source_id", "latitude", "longitude"), on="source_id")
    is_solar = pl.col("source_id").is_in(sources.filter(SOLAR)["source_id"].implode())
    # The sun only where a rule looks at it: solar readings in the PV window (which holds the bounds window).
    solar = _in_window(_with_ends(located.filter(is_solar)), th.pv_window).select(located.columns)
    recent = pl.concat(
        [
            with_sun_elevation(solar).drop("mid_s"),
            located.filter(~is_solar).with_columns(pl.lit(None, dtype=pl.Float64).alias("elevation")),
        ],
        how="diagonal",
    )
    return [
        *no_data(sources, latest, now, th),
        *pv_zero_in_sun(sources, recent.filter(is_solar), th),
        *out_of_bounds(sources, recent, th),
        *soc_stuck(sources, readings, th),
        *low_daily_yield(sources, daily, now, th),
    ]


def rule_explanations(th: Thresholds) -> dict[Rule, str]:
    """What each rule checks, with the thresholds in force (for the Alerts page)."""
    return {
        Rule.NO_DATA: (
            f"A source with the API enabled whose newest reading ended more than {th.no_data_factor:g} x its update"
            " frequency ago (age from the end of the newest stored interval, one whose value the vendor reported as"
            " empty included, e.g. SolarEdge PV at night; or from when the source was added if later). For a Push or"
            " MQTT source, which nothing polls, the update frequency is the cadence its sender or device is expected"
            " to keep, whatever the interval of its readings. Resolves when data arrives."
        ),
        Rule.PV_ZERO_IN_SUN: (
            f"A solar source produced at most {th.zero_w:g} W for {th.zero_minutes:g} minutes of readings while"
            f" the sun stood more than {th.sun_elevation_deg:g}° above the horizon at the site (pvlib solar"
            " position at the middle of each interval), since its last producing reading. Readings in the dark"
            " neither count nor resolve it; any production resolves it."
        ),
        Rule.LOW_DAILY_YIELD: (
            f"Yesterday's energy (site-local day, stored readings, empty ones included, covering at least"
            f" {COMPLETE_DAY_SHARE:.0%} of it; an empty reading counts as no energy) of a"
            f" solar source below {th.low_yield_share:.0%} of the clear-sky expectation: capacity (kW) x clear-sky"
            f" insolation of the day (sum of pvlib Ineichen GHI / 1000 per quarter hour x 0.25 h, kWh/m²) x"
            f" performance ratio {th.performance_ratio:g}. Heavy overcast can trigger it: the rule knows no weather."
        ),
        Rule.OUT_OF_BOUNDS: (
            f"In the last hour of a source's data: production above {th.max_capacity_factor:g} x capacity, below"
            f" -{th.zero_w:g} W (negative), or solar production above {th.night_max_share:.0%} of capacity while the"
            f" sun is below {th.night_elevation_deg:g}°; a state of charge outside 0-100 %."
        ),
        Rule.SOC_STUCK: (
            f"A state of charge that moved less than {th.soc_range_pct:g} points for {th.soc_stuck_hours:g} h while"
            f" the site's battery power averaged (in absolute value) more than {th.soc_flow_share:.0%} of the"
            f" battery's capacity; without battery power readings, unchanged for {th.soc_stuck_hours_without_power:g}"
            " h. A SoC resting at its minimum overnight with no flow does not alert."
        ),
    }
