"""The built-in simulated site: plausible PV, building load and battery data without any vendor account.

Every value depends on the site and the timestamp only, never on the requested window: re-polling, backfilling
and zooming must show the same numbers for the same instant, or the stored history would disagree with itself.
Randomness therefore comes from a counter-based hash keyed by (seed, stream, time) rather than from a stateful
RNG, and everything is computed on a fixed 5-minute UTC base grid that coarser resolutions average.

The battery is a physical store (see `_run_battery`): its state of charge carries over from one day to the next,
it charges from PV surplus only and discharges to serve load only, within C/2 power and 10-95 % state of charge,
and every watt-hour is accounted for with a round-trip efficiency of 90 % (`ROUND_TRIP_EFFICIENCY`, split evenly
between charging and discharging), so over any period

    change in stored energy == charged x CHARGE_EFFICIENCY - discharged / DISCHARGE_EFFICIENCY.

State of charge needs history, yet a window must not change what an instant shows. Integrating from one fixed
epoch would be exact but cost years of steps on a cold start; restarting every day (as the first version did)
makes energy out of nothing at each midnight. The middle way: local days are cut into segments of `SEGMENT_DAYS`
days counted from 1970-01-01 (a grid every window shares, whatever its start, end or resolution), and the values
shown in segment s come from the trajectory that started at 50 % at the start of segment s - 1. A window therefore
integrates from the start of the segment before its first day (8 to 16 days of lead on a cold start; the state at
each local midnight is kept, so a collector's next poll starts at today's), and every window sees the same
trajectory for the same instant. At a segment's end the shown trajectory hands over to the next one, which has by
then run `SEGMENT_DAYS` days from its own start. The greedy policy forgets where it started as soon as the battery
reaches full or empty once (both trajectories are then set to the same bound, exactly, and stay equal), which a
battery serving a building does every night it runs empty or every sunny day it fills; so the hand-over is seamless
and state of charge continuous. Eight days are enough for that (a week holds both weekend surplus and weekday
nights) and few enough that a cold start costs one pvlib call and a few thousand steps. Only a battery that neither
fills nor empties in eight days (a building without load in a polar night) would show a step at a hand-over;
tests/test_simulator_energy.py checks a year of three sites, the demo's included, has none.

A site may have outage days (`SimulatedSite.outage_days`): local dates on which its inverter is tripped and PV is 0
from midnight to midnight, as after an isolation fault that keeps the inverter off until someone resets it. The
load is then served by the battery while it lasts and by the grid; the energy balance holds as on any day. The demo
uses one to show what an alert looks like (core/catalog/demo.py).

Sign convention: `battery_w` > 0 means the battery discharges into the site, < 0 means it charges. `soc_pct` is
the state of charge at the end of the interval. The power balance per row is
`pv_w + grid_import_w + battery_w == load_w + grid_export_w`.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import polars as pl
from pvlib import irradiance, solarposition
from pvlib.location import Location

from core.providers.base import (
    READINGS_SCHEMA,
    ConnectionInfo,
    ProviderSite,
    QuotaRule,
    empty_readings,
    split_windows,
)

BASE_MINUTES = 5
COLUMNS = ("pv_w", "load_w", "battery_w", "soc_pct", "grid_import_w", "grid_export_w")
_SCHEMA: dict[str, pl.DataType] = {"ts": pl.Datetime("us", "UTC"), **dict.fromkeys(COLUMNS, pl.Float64())}
_SORTED_COLUMNS = sorted(COLUMNS)  # the channel order of `history`'s rows, as `normalise_readings` sorts them
_BASE_S = BASE_MINUTES * 60
_US = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PERFORMANCE_RATIO = 0.8  # wiring, inverter, soiling and temperature losses lumped together
_SOC_START, _SOC_MIN, _SOC_MAX = 50.0, 10.0, 95.0
# A lithium-ion home or commercial battery returns about 90 % of what it took in (inverter and cell losses),
# split evenly: a charge of 1 kWh from the site stores 0.949 kWh, and 0.949 kWh stored serves 0.9 kWh of load.
ROUND_TRIP_EFFICIENCY = 0.90
CHARGE_EFFICIENCY = DISCHARGE_EFFICIENCY = math.sqrt(ROUND_TRIP_EFFICIENCY)
SEGMENT_DAYS = 8  # local days per battery segment (see the module docstring)
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class SimulatedSite:
    """A made-up site; `base_load_kw` (the night/weekend load) defaults to 8 % of the PV capacity."""

    latitude: float
    longitude: float
    timezone: str
    pv_capacity_kw: float
    battery_capacity_kwh: float = 10.0
    seed: int = 0
    base_load_kw: float | None = None
    # Local dates with the inverter tripped: PV 0 all day (see the module docstring).
    outage_days: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        # Validate here so a bad site fails when configured, not hours later inside the collector.
        numbers = ("latitude", "longitude", "pv_capacity_kw", "battery_capacity_kwh", "base_load_kw")
        for name, value in ((n, getattr(self, n)) for n in numbers):
            bad = isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            if value is not None and bad:
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        lat, lon, battery, base = self.latitude, self.longitude, self.battery_capacity_kwh, self.base_load_kw
        for ok, message in (
            (-90.0 <= lat <= 90.0, f"latitude must be between -90 and 90 degrees, got {lat}"),
            (-180.0 <= lon <= 180.0, f"longitude must be between -180 and 180 degrees, got {lon}"),
            (self.pv_capacity_kw > 0, f"pv_capacity_kw must be positive, got {self.pv_capacity_kw}"),
            (battery >= 0, f"battery_capacity_kwh must be 0 (no battery) or more, got {battery}"),
            (base is None or base >= 0, f"base_load_kw must not be negative, got {base}"),
            (type(self.seed) is int, f"seed must be an integer, got {self.seed!r}"),
            (isinstance(self.timezone, str), f"timezone must be an IANA name, got {self.timezone!r}"),
            (
                isinstance(self.outage_days, frozenset) and all(type(d) is date for d in self.outage_days),
                f"outage_days must be a frozenset of dates, got {self.outage_days!r}",
            ),
        ):
            if not ok:
                raise ValueError(message)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA timezone {self.timezone!r}") from exc

    @property
    def effective_base_load_kw(self) -> float:
        return 0.08 * self.pv_capacity_kw if self.base_load_kw is None else float(self.base_load_kw)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a stateless hash, so a key always maps to the same number (uint64 wraps)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform(seed: int, stream: int, keys: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers keyed by (seed, stream, key); streams keep PV and load noise independent."""
    salt = _mix(_mix(np.array([seed & _MASK64], dtype=np.uint64)) ^ np.uint64(stream))
    h = _mix(keys.astype(np.int64).astype(np.uint64) ^ salt)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _smooth_noise(seed: int, stream: int, t_s: np.ndarray, knot_s: int) -> np.ndarray:
    """Noise in [0, 1] that moves smoothly between knots fixed on the epoch, so any window sees the same curve."""
    k = t_s // knot_s
    w = (t_s - k * knot_s) / knot_s
    w = w * w * (3.0 - 2.0 * w)
    return _uniform(seed, stream, k) * (1.0 - w) + _uniform(seed, stream, k + 1) * w


def _solar_geometry(site: SimulatedSite, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zenith and azimuth in degrees from pvlib's analytical formulas.

    pvlib's full SPA costs ~0.6 s per year of 5-minute points; the analytical model is within ~0.6 degrees,
    which is far below the uncertainty of simulated clouds. Azimuth uses atan2 because pvlib's arccos form
    flips by 180 degrees in the southern hemisphere.
    """
    days = t_s // 86400
    year_start = days.astype("datetime64[D]").astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    doy = days - year_start + 1
    decl = solarposition.declination_spencer71(doy)
    eot = solarposition.equation_of_time_spencer71(doy)
    ha = np.radians(15.0 * ((t_s % 86400) / 3600.0 - 12.0) + site.longitude + eot / 4.0)
    lat = math.radians(site.latitude)
    zenith = np.degrees(solarposition.solar_zenith_analytical(lat, ha, decl))
    azimuth = np.degrees(np.arctan2(np.sin(ha), np.cos(ha) * math.sin(lat) - np.tan(decl) * math.cos(lat)))
    return zenith, (azimuth + 180.0) % 360.0


def _pv_w(site: SimulatedSite, t_s: np.ndarray, local_day: np.ndarray) -> np.ndarray:
    """PV power at instants `t_s`: clear-sky plane-of-array irradiance times a deterministic sky factor."""
    zenith, azimuth = _solar_geometry(site, t_s)
    times = pd.DatetimeIndex(t_s.astype("datetime64[s]")).tz_localize("UTC")
    solpos = pd.DataFrame(
        {"apparent_zenith": zenith, "zenith": zenith, "apparent_elevation": 90.0 - zenith}, index=times
    )
    clear = Location(site.latitude, site.longitude, site.timezone).get_clearsky(times, solar_position=solpos)
    # Panels face the equator at a latitude-like tilt, capped as on a typical roof.
    tilt = min(max(abs(site.latitude), 10.0), 35.0)
    poa = irradiance.get_total_irradiance(
        tilt, 180.0 if site.latitude >= 0 else 0.0, zenith, azimuth, clear["dni"], clear["ghi"], clear["dhi"]
    )["poa_global"]
    poa_w_m2 = np.nan_to_num(np.asarray(poa, dtype=np.float64))
    # One cloudiness level per local day (the date changes at night, when PV is 0 anyway) ...
    day_clear = np.interp(_uniform(site.seed, 1, local_day), [0.0, 0.25, 0.6, 1.0], [0.15, 0.45, 0.85, 1.0])
    # ... and passing clouds on top: strongest on partly cloudy days, absent on clear or fully overcast ones.
    amplitude = 2.4 * day_clear * (1.0 - day_clear)
    passing = 0.65 * _smooth_noise(site.seed, 2, t_s, 3600) + 0.35 * _smooth_noise(site.seed, 3, t_s, 900)
    sky = day_clear * (1.0 - amplitude * passing)
    capacity_w = site.pv_capacity_kw * 1000.0
    return np.clip(capacity_w * _PERFORMANCE_RATIO * poa_w_m2 / 1000.0 * sky, 0.0, capacity_w)


# PV is the costly part (pvlib's clear sky, ~15 ms a call whatever the window's length) and a pure function of the
# site and the instant, so it is computed a day at a time and kept: a collector polling every few minutes then pays
# pvlib about once per site and day. Cached values are the very ones a direct computation gives (same elementwise
# formulas on the same instants), so windows still agree exactly. Each site's day-long chunks start at a phase of
# its own, so sites do not all compute their next chunk in the same cycle (as they would at UTC midnight). A site
# keeps its newest few chunks (a poll window reaches back to local midnight: two or three chunks), so memory stays
# flat however long the process runs and a backfill of old days does not push out the chunks polls need.
_CHUNK_S = 86400
_CHUNK_POINTS = _CHUNK_S // _BASE_S
_CHUNKS_PER_SITE = 4
_CACHED_SITES = 4096  # least recently used sites beyond this are dropped; at most ~40 MB, ~10 kB a site
_pv_cache: OrderedDict[SimulatedSite, dict[int, np.ndarray]] = OrderedDict()
_pv_cache_lock = threading.Lock()


def _chunk_phase_s(site: SimulatedSite) -> int:
    return (site.seed * 2654435761) % _CHUNK_POINTS * _BASE_S


def _local_days(site: SimulatedSite, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The site's local day (days since 1970-01-01 on its wall clock) and local hour at instants `t_s`."""
    local = pd.DatetimeIndex(t_s.astype("datetime64[s]")).tz_localize("UTC").tz_convert(site.timezone)
    local_s = local.tz_localize(None).to_numpy().astype("datetime64[s]").astype(np.int64)
    return local_s // 86400, (local_s % 86400) / 3600.0


def _pv_cached(site: SimulatedSite, t_s: np.ndarray) -> np.ndarray:
    """`_pv_w` at the consecutive base-interval midpoints `t_s`, from (and into) the chunk cache."""
    phase = _chunk_phase_s(site)
    first = (int(t_s[0]) - _BASE_S // 2 - phase) // _CHUNK_S
    last = (int(t_s[-1]) - _BASE_S // 2 - phase) // _CHUNK_S
    with _pv_cache_lock:
        kept = _pv_cache.get(site, {})
        chunks = [kept.get(chunk) for chunk in range(first, last + 1)]
        if kept:
            _pv_cache.move_to_end(site)
    missing = [i for i, values in enumerate(chunks) if values is None]
    if missing:
        # One pvlib call for the whole missing span (the first pass of a fresh process misses two or three days).
        lo, hi = first + missing[0], first + missing[-1] + 1
        t = phase + lo * _CHUNK_S + _BASE_S // 2 + np.arange((hi - lo) * _CHUNK_POINTS, dtype=np.int64) * _BASE_S
        computed = _pv_w(site, t, _local_days(site, t)[0]).reshape(hi - lo, _CHUNK_POINTS)
        for i in missing:
            chunks[i] = computed[first + i - lo]
        with _pv_cache_lock:
            kept = _pv_cache.setdefault(site, {})
            _pv_cache.move_to_end(site)
            for i in missing[-_CHUNKS_PER_SITE:]:
                kept[first + i] = computed[first + i - lo].copy()  # a copy: a long window's array is not kept
            for chunk in sorted(kept)[:-_CHUNKS_PER_SITE]:  # the oldest in time go first
                del kept[chunk]
            while len(_pv_cache) > _CACHED_SITES:
                _pv_cache.popitem(last=False)
    offset = (int(t_s[0]) - _BASE_S // 2 - phase - first * _CHUNK_S) // _BASE_S
    return np.concatenate([c for c in chunks if c is not None])[offset : offset + len(t_s)]


def _load_w(site: SimulatedSite, t_s: np.ndarray, local_day: np.ndarray, local_hour: np.ndarray) -> np.ndarray:
    """An office-like building: occupied 7:30-18:30 local on weekdays, base load at night and on weekends."""
    occupancy = 1.0 / (1.0 + np.exp(-(local_hour - 7.5) / 0.6)) / (1.0 + np.exp(-(18.5 - local_hour) / 0.8))
    weekday = (local_day + 3) % 7 < 5  # 1970-01-01 was a Thursday
    peak = np.where(weekday, 2.5, 0.3) * (0.85 + 0.3 * _uniform(site.seed, 4, local_day))
    wiggle = 0.9 + 0.2 * _smooth_noise(site.seed, 5, t_s, 1800)
    return site.effective_base_load_kw * 1000.0 * (1.0 + peak * occupancy) * wiggle


# Battery state at the start of a local day, as the first 5-minute step of that day (UTC seconds) and the stored Wh
# of the trajectory shown in that day's segment and of the one that starts with the segment (see the module
# docstring). They are the exact values of the same loop, so a window started from one gives what a start at the
# segment before gives: a collector's poll then integrates from today's start, not from 8-16 days back. A site keeps
# the newest few days, and sites are dropped least recently used first, as in the PV cache.
_BatteryState = tuple[int, float, float]
_STATES_PER_SITE = 2 * SEGMENT_DAYS
_battery_states: OrderedDict[SimulatedSite, dict[int, _BatteryState]] = OrderedDict()
_battery_states_lock = threading.Lock()
_UNIX_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _day_start_s(site: SimulatedSite, local_day: int) -> int:
    """The first 5-minute step (UTC seconds) whose midpoint falls on `local_day` (days since 1970-01-01, local)."""
    midnight = datetime.combine(date.fromordinal(local_day + _UNIX_EPOCH_ORDINAL), time(0), ZoneInfo(site.timezone))
    midnight_s = int(midnight.timestamp())
    return -(-(midnight_s - _BASE_S // 2) // _BASE_S) * _BASE_S


def _battery_start(site: SimulatedSite, first_day: int) -> tuple[int, float | None, float]:
    """Where to integrate from for a window whose first step is on local day `first_day`: the newest kept state
    between the start of the segment before and that day, else the start of the segment before, at 50 %
    (the shown trajectory is then unknown until the next segment starts: None)."""
    anchor_day = (first_day // SEGMENT_DAYS - 1) * SEGMENT_DAYS
    with _battery_states_lock:
        kept = _battery_states.get(site, {})
        usable = [day for day in kept if anchor_day <= day <= first_day]
        if usable:
            return kept[max(usable)]
    return _day_start_s(site, anchor_day), None, site.battery_capacity_kwh * 1000.0 * _SOC_START / 100.0


def _keep_battery_states(site: SimulatedSite, states: dict[int, _BatteryState]) -> None:
    with _battery_states_lock:
        kept = _battery_states.setdefault(site, {})
        _battery_states.move_to_end(site)
        kept.update(states)
        for day in sorted(kept)[:-_STATES_PER_SITE]:  # the oldest in time go first
            del kept[day]
        while len(_battery_states) > _CACHED_SITES:
            _battery_states.popitem(last=False)


def _run_battery(
    site: SimulatedSite,
    t_s: np.ndarray,
    surplus_w: np.ndarray,
    local_day: np.ndarray,
    start: tuple[float | None, float],
) -> tuple[np.ndarray, np.ndarray, dict[int, _BatteryState]]:
    """Greedy self-consumption from the state `start` (shown, starting trajectory) at the first step.

    Stores PV surplus and covers deficits (never charging from the grid, never discharging to it), within C/2
    power and 10-95 % state of charge. Returns battery power (W, > 0 discharging), the shown state of charge at
    the end of each step (%), and the state at the start of each local day the shown trajectory is known for.
    `t_s` are the steps' midpoints, `local_day` their local days, never decreasing.
    """
    capacity_wh = site.battery_capacity_kwh * 1000.0
    dt_h, max_w = BASE_MINUTES / 60.0, capacity_wh / 2.0
    low, high = capacity_wh * _SOC_MIN / 100.0, capacity_wh * _SOC_MAX / 100.0
    stored_per_charge_w = CHARGE_EFFICIENCY * dt_h  # Wh stored per W of charging for one step
    drawn_per_discharge_w = dt_h / DISCHARGE_EFFICIENCY  # Wh drawn from the store per W delivered for one step

    def advance(stored: float, surplus: float) -> tuple[float, float]:
        """(battery power, stored Wh after the step); a limit reached sets the store to the bound exactly, so two
        trajectories that reach it become one (the hand-over between segments relies on it)."""
        if surplus > 0:
            room_w = (high - stored) / stored_per_charge_w
            charge_w = min(surplus, max_w)
            return (-room_w, high) if charge_w >= room_w else (-charge_w, stored + charge_w * stored_per_charge_w)
        available_w = (stored - low) / drawn_per_discharge_w
        discharge_w = min(-surplus, max_w)
        if discharge_w >= available_w:
            return available_w, low
        return discharge_w, stored - discharge_w * drawn_per_discharge_w

    n = len(surplus_w)
    power, soc = [0.0] * n, [0.0] * n
    states: dict[int, _BatteryState] = {}
    shown, starting = start
    fresh = capacity_wh * _SOC_START / 100.0
    day = int(local_day[0])
    segment = day // SEGMENT_DAYS
    step_starts = (t_s - _BASE_S // 2).tolist()
    for i, (surplus, d) in enumerate(zip(surplus_w.tolist(), local_day.tolist(), strict=True)):
        if d != day:
            day = d
            if d // SEGMENT_DAYS != segment:  # hand over to the trajectory that has run the whole last segment
                segment = d // SEGMENT_DAYS
                shown, starting = starting, fresh
            if shown is not None:
                states[d] = (step_starts[i], shown, starting)
        if shown is None:
            starting = advance(starting, surplus)[1]
            continue
        same = starting == shown
        power[i], shown = advance(shown, surplus)
        starting = shown if same else advance(starting, surplus)[1]
        soc[i] = shown / capacity_wh * 100.0
    return np.array(power), np.array(soc), states


def _epoch_us(value: datetime, name: str) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return (value - _EPOCH) // timedelta(microseconds=1)


def simulate(site: SimulatedSite, start: datetime, end: datetime, resolution_minutes: int = 15) -> pl.DataFrame:
    """Rows for every grid-aligned interval start in [start, end); values are average W over the interval."""
    if resolution_minutes <= 0 or resolution_minutes % BASE_MINUTES or 1440 % resolution_minutes:
        raise ValueError(f"resolution_minutes must be a multiple of 5 that divides 1440, got {resolution_minutes}")
    start_us, end_us = _epoch_us(start, "start"), _epoch_us(end, "end")
    if end_us < start_us:
        raise ValueError(f"end ({end.isoformat()}) is before start ({start.isoformat()})")
    res_us, base_us = resolution_minutes * 60 * _US, _BASE_S * _US
    first_us = -(-start_us // res_us) * res_us
    n_rows = max(0, -(-(end_us - first_us) // res_us))
    if n_rows == 0:
        return pl.DataFrame(schema=_SCHEMA)
    per_row = resolution_minutes // BASE_MINUTES
    has_battery = site.battery_capacity_kwh > 0
    # The battery needs history: integrate from a kept or segment-aligned state before the window (see the module
    # docstring); `lead` steps before the first row are computed for it and not returned.
    shown: float | None = None
    starting = 0.0
    base_start_us = first_us
    if has_battery:
        first_day = int(_local_days(site, np.array([first_us // _US + _BASE_S // 2]))[0][0])
        start_s, shown, starting = _battery_start(site, first_day)
        base_start_us = start_s * _US
    lead = (first_us - base_start_us) // base_us
    # Values at each 5-minute base interval's midpoint stand for that interval's average.
    t_s = base_start_us // _US + np.arange(lead + n_rows * per_row, dtype=np.int64) * _BASE_S + _BASE_S // 2
    local_day, local_hour = _local_days(site, t_s)

    pv = _pv_cached(site, t_s)
    if site.outage_days:  # a new array: the cached chunks stay as computed
        tripped = [d.toordinal() - _UNIX_EPOCH_ORDINAL for d in site.outage_days]
        pv = np.where(np.isin(local_day, tripped), 0.0, pv)
    load = _load_w(site, t_s, local_day, local_hour)
    battery, soc = np.zeros(len(t_s)), np.zeros(len(t_s))
    if has_battery:
        # Days never go back for the battery (a zone that once moved its clocks back across midnight repeats one).
        battery_day = np.maximum.accumulate(local_day)
        battery, soc, states = _run_battery(site, t_s, pv - load, battery_day, (shown, starting))
        _keep_battery_states(site, states)

    pv_r, load_r, battery_r = np.stack([pv, load, battery])[:, lead:].reshape(3, n_rows, per_row).mean(axis=2)
    # Net metering per row: a row is either importing or exporting, never both.
    net = load_r - pv_r - battery_r
    ts_us = first_us + np.arange(n_rows, dtype=np.int64) * res_us
    soc_r = soc[lead:].reshape(n_rows, per_row)[:, -1]  # SOC at the end of each row's interval
    values = (pv_r, load_r, battery_r, soc_r, np.where(net > 0, net, 0.0), np.where(net < 0, -net, 0.0))
    return pl.DataFrame({"ts": ts_us, **dict(zip(COLUMNS, values, strict=True))}, schema=_SCHEMA)


def _floor_5min(now: datetime) -> datetime:
    now_us = _epoch_us(now, "now")
    return _EPOCH + timedelta(microseconds=now_us - now_us % (_BASE_S * _US))


class SimulatorProvider:
    """Serves a `SimulatedSite` through the provider interface; `now` is always passed in, never read."""

    def __init__(self, site: SimulatedSite, site_name: str = "Simulated site") -> None:
        if not isinstance(site, SimulatedSite):
            raise ValueError(f"site must be a SimulatedSite, got {type(site).__name__}")
        self.site = site
        self.site_name = site_name

    def current_power(self, now: datetime) -> dict[str, float]:
        """All channels for the 5-minute interval containing `now` (the same interval test_connection reports)."""
        start = _floor_5min(now)
        row = simulate(self.site, start, start + timedelta(minutes=BASE_MINUTES), BASE_MINUTES).row(0, named=True)
        return {c: float(row[c]) for c in COLUMNS}

    def test_connection(self, now: datetime) -> ConnectionInfo:
        """PV power now; `last_update` is the start of the latest 5-minute interval that has fully ended."""
        power = self.current_power(now)
        return ConnectionInfo(
            site_name=self.site_name,
            capacity_kw=self.site.pv_capacity_kw,
            timezone=self.site.timezone,
            current_power_w=power["pv_w"],
            last_update=_floor_5min(now) - timedelta(minutes=BASE_MINUTES),
        )

    # The provider interface (core.providers.base.MonitoringProvider). The simulator has no quota and no window
    # limit worth the name; a 31-day window keeps one call's frame small.
    resolution = timedelta(minutes=BASE_MINUTES)
    max_window = timedelta(days=31)
    quota_rules: tuple[QuotaRule, ...] = ()

    def list_sites(self) -> list[ProviderSite]:
        site = ProviderSite("simulated", self.site_name, self.site.timezone, self.site.pv_capacity_kw)
        return [site]

    def history(self, start: datetime, end: datetime, resolution_minutes: int = BASE_MINUTES) -> pl.DataFrame:
        """Readings in the common long shape (see `core.providers.base`), window by window.

        Built already in `normalise_readings`' order (by ts, then channel name; the windows neither overlap nor
        repeat a timestamp), which spares the collector an unpivot, a dedupe and a sort per call.
        """
        frames = [
            simulate(self.site, lower, upper, resolution_minutes)
            for lower, upper in split_windows(start, end, self.max_window)
        ]
        wide = pl.concat(frames) if frames else pl.DataFrame(schema=_SCHEMA)
        if wide.is_empty():
            return empty_readings()
        values = wide.select(_SORTED_COLUMNS).to_numpy().ravel()  # row-major: every channel of a ts, in order
        return pl.DataFrame(
            {
                "ts": wide["ts"].to_physical().to_numpy().repeat(len(COLUMNS)),
                "interval_s": np.full(values.size, resolution_minutes * 60, dtype=np.int32),
                "channel": pl.Series(_SORTED_COLUMNS * wide.height, dtype=pl.Utf8),
                "value": values,
            },
            schema=READINGS_SCHEMA,
        )

    def close(self) -> None:
        """Nothing to release: no connection."""
