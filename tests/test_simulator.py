"""The simulated site behaves like a physical one and gives the same numbers for the same instant, always."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from core.providers.base import READINGS_SCHEMA, ConnectionInfo
from core.providers.simulator import client as simulator
from core.providers.simulator.client import COLUMNS, SimulatedSite, SimulatorProvider, simulate

# pvlib 0.16 still calls a pandas accessor that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:DatetimeIndex.dayofyear is deprecated")

BRUSSELS = SimulatedSite(50.85, 4.35, "Europe/Brussels", pv_capacity_kw=10.0, battery_capacity_kwh=10.0)
SYDNEY = SimulatedSite(-33.87, 151.21, "Australia/Sydney", pv_capacity_kw=25.0, battery_capacity_kwh=20.0, seed=7)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(
    site: SimulatedSite, year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """A wall-clock time at the site, as the UTC instant the simulator works in."""
    return datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(site.timezone)).astimezone(UTC)


@cache
def year(site: SimulatedSite) -> pl.DataFrame:
    return simulate(site, utc(2026, 1, 1), utc(2027, 1, 1))


def test_schema_and_grid_alignment() -> None:
    df = simulate(BRUSSELS, utc(2026, 6, 1, 0, 7), utc(2026, 6, 1, 2, 0))
    assert df.columns == ["ts", *COLUMNS]
    assert df.schema["ts"] == pl.Datetime("us", "UTC")
    assert all(df.schema[c] == pl.Float64 for c in COLUMNS)
    # First grid point at or after start, last one strictly before end.
    assert df["ts"][0] == utc(2026, 6, 1, 0, 15)
    assert df["ts"][-1] == utc(2026, 6, 1, 1, 45)
    assert df.height == 7


def test_same_seed_same_output_different_seed_different_output() -> None:
    start, end = utc(2026, 5, 1), utc(2026, 5, 8)
    assert_frame_equal(simulate(BRUSSELS, start, end), simulate(BRUSSELS, start, end), check_exact=True)
    other = SimulatedSite(50.85, 4.35, "Europe/Brussels", 10.0, 10.0, seed=1)
    different = simulate(other, start, end)
    assert not np.allclose(different["pv_w"].to_numpy(), simulate(BRUSSELS, start, end)["pv_w"].to_numpy())
    assert not np.allclose(different["load_w"].to_numpy(), simulate(BRUSSELS, start, end)["load_w"].to_numpy())


@pytest.mark.parametrize("site", [BRUSSELS, SYDNEY])
def test_sub_window_equals_slice_of_larger_window(site: SimulatedSite) -> None:
    a, b, c = utc(2026, 3, 27, 5, 0), utc(2026, 3, 29, 13, 30), utc(2026, 4, 1)
    whole = simulate(site, a, c)
    assert_frame_equal(simulate(site, a, b), whole.filter(pl.col("ts") < b), check_exact=True)
    # A window starting on a later (local) day must agree too, battery state of charge included.
    assert_frame_equal(simulate(site, b, c), whole.filter(pl.col("ts") >= b), check_exact=True)


@pytest.mark.parametrize("site", [BRUSSELS, SYDNEY])
def test_cached_pv_is_the_direct_computation_whatever_was_asked_before(site: SimulatedSite) -> None:
    # PV is kept per site in day-long chunks: cold or warm, across chunk edges, a value must not change.
    a, c = utc(2026, 3, 27, 5, 0), utc(2026, 3, 31, 2, 35)
    simulator._pv_cache.clear()
    whole = simulate(site, a, c, resolution_minutes=5)
    t_s = whole["ts"].dt.epoch("s").to_numpy() + 150  # the 5-minute midpoints the simulator evaluates
    direct = simulator._pv_w(site, t_s, simulator._local_days(site, t_s)[0])
    np.testing.assert_array_equal(whole["pv_w"].to_numpy(), direct)
    simulator._pv_cache.clear()
    for hours in range(84, -1, -7):  # short windows, newest first, each partly served from the cache
        lower = a + timedelta(hours=hours, minutes=10)
        part = simulate(site, lower, lower + timedelta(hours=3), resolution_minutes=5)
        expected = whole.filter((pl.col("ts") >= lower) & (pl.col("ts") < lower + timedelta(hours=3)))
        assert_frame_equal(part, expected, check_exact=True)


def test_coarse_resolution_is_the_average_of_fine_resolution() -> None:
    start, end = utc(2026, 7, 10), utc(2026, 7, 12)
    fine = simulate(SYDNEY, start, end, resolution_minutes=5)
    coarse = simulate(SYDNEY, start, end, resolution_minutes=15)
    averaged = fine.group_by_dynamic("ts", every="15m").agg(pl.col("pv_w", "load_w", "battery_w").mean())
    for column in ("pv_w", "load_w", "battery_w"):
        np.testing.assert_allclose(averaged[column].to_numpy(), coarse[column].to_numpy(), rtol=1e-9, atol=1e-9)
    hourly = simulate(SYDNEY, start, end, resolution_minutes=60)
    assert hourly.height == 48
    assert hourly["soc_pct"].to_list() == fine["soc_pct"].to_list()[11::12]  # SOC at the end of the interval


@pytest.mark.parametrize(
    ("site", "summer_day", "winter_day"),
    [(BRUSSELS, (2026, 6, 21), (2026, 12, 21)), (SYDNEY, (2026, 12, 21), (2026, 6, 21))],
)
def test_pv_zero_at_night_positive_at_noon_and_seasons_follow_hemisphere(
    site: SimulatedSite, summer_day: tuple[int, int, int], winter_day: tuple[int, int, int]
) -> None:
    noon = local(site, *summer_day, 12)
    df = simulate(site, local(site, *summer_day), local(site, *summer_day) + timedelta(days=1))
    at = dict(zip(df["ts"].to_list(), df["pv_w"].to_list(), strict=True))
    assert at[noon] > 0.05 * site.pv_capacity_kw * 1000
    assert at[local(site, *summer_day, 0)] == 0.0
    assert at[local(site, *summer_day, 23, 30)] == 0.0
    months = year(site).group_by(pl.col("ts").dt.month().alias("month")).agg(pl.col("pv_w").sum())
    energy = dict(zip(months["month"].to_list(), months["pv_w"].to_list(), strict=True))
    assert energy[summer_day[1]] > 1.5 * energy[winter_day[1]]


@pytest.mark.parametrize("site", [BRUSSELS, SYDNEY])
def test_physical_bounds_over_a_year(site: SimulatedSite) -> None:
    df = year(site)
    assert df.height == 365 * 96
    pv = df["pv_w"].to_numpy()
    assert pv.min() >= 0.0
    assert pv.max() <= site.pv_capacity_kw * 1000
    assert pv.max() > 0.5 * site.pv_capacity_kw * 1000  # clear days get close to nameplate
    soc = df["soc_pct"].to_numpy()
    assert soc.min() >= 10.0 - 1e-9
    assert soc.max() <= 95.0 + 1e-9
    battery = df["battery_w"].to_numpy()
    assert np.abs(battery).max() <= site.battery_capacity_kwh * 1000 / 2 + 1e-6


@pytest.mark.parametrize("site", [BRUSSELS, SYDNEY])
def test_energy_balance_and_import_export_exclusive(site: SimulatedSite) -> None:
    df = year(site)
    supply = df["pv_w"] + df["grid_import_w"] + df["battery_w"]
    demand = df["load_w"] + df["grid_export_w"]
    scale = (df["pv_w"] + df["load_w"] + df["battery_w"].abs() + 1.0).to_numpy()
    assert (np.abs((supply - demand).to_numpy()) <= 1e-6 * scale).all()
    assert df["grid_import_w"].to_numpy().min() >= 0.0
    assert df["grid_export_w"].to_numpy().min() >= 0.0
    assert df.filter((pl.col("grid_import_w") > 0) & (pl.col("grid_export_w") > 0)).height == 0


def test_battery_sign_convention() -> None:
    # A week so that both weekend surplus and weekday deficit occur; SOC carries over local midnights.
    df = simulate(BRUSSELS, local(BRUSSELS, 2026, 6, 1), local(BRUSSELS, 2026, 6, 8), resolution_minutes=5)
    df = df.with_columns(soc_change=pl.col("soc_pct").diff()).drop_nulls("soc_change")
    # Negative battery_w means charging: SOC goes up; positive means discharging: SOC goes down.
    assert (df.filter(pl.col("battery_w") < -1.0)["soc_change"] > 0).all()
    assert (df.filter(pl.col("battery_w") > 1.0)["soc_change"] < 0).all()
    assert (df.filter(pl.col("battery_w").abs() <= 1e-9)["soc_change"].abs() < 1e-9).all()
    assert (df["battery_w"] < -1.0).any()
    assert (df["battery_w"] > 1.0).any()


def test_site_without_battery() -> None:
    site = SimulatedSite(50.85, 4.35, "Europe/Brussels", 5.0, battery_capacity_kwh=0.0)
    df = simulate(site, utc(2026, 6, 1), utc(2026, 6, 2))
    assert (df["battery_w"] == 0.0).all()
    net = df["load_w"] - df["pv_w"]
    np.testing.assert_allclose((df["grid_import_w"] - df["grid_export_w"]).to_numpy(), net.to_numpy())


@pytest.mark.parametrize("day", [datetime(2026, 3, 29), datetime(2026, 10, 25)])
def test_dst_days_have_regular_grid(day: datetime) -> None:
    start = day.replace(tzinfo=UTC)
    df = simulate(BRUSSELS, start, start + timedelta(days=1))
    assert df.height == 96
    assert df["ts"].is_unique().all()
    assert df["ts"].is_sorted()
    assert set(df["ts"].diff().drop_nulls().to_list()) == {timedelta(minutes=15)}
    # The local day is 23 or 25 hours long.
    local_day = simulate(
        BRUSSELS, local(BRUSSELS, day.year, day.month, day.day), local(BRUSSELS, day.year, day.month, day.day + 1)
    )
    assert local_day.height == (92 if day.month == 3 else 100)


def test_naive_datetimes_and_bad_windows_raise() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        simulate(BRUSSELS, datetime(2026, 1, 1), utc(2026, 1, 2))
    with pytest.raises(ValueError, match="timezone-aware"):
        simulate(BRUSSELS, utc(2026, 1, 1), datetime(2026, 1, 2))
    with pytest.raises(ValueError, match="before start"):
        simulate(BRUSSELS, utc(2026, 1, 2), utc(2026, 1, 1))
    with pytest.raises(ValueError, match="resolution_minutes"):
        simulate(BRUSSELS, utc(2026, 1, 1), utc(2026, 1, 2), resolution_minutes=7)
    with pytest.raises(ValueError, match="timezone-aware"):
        SimulatorProvider(BRUSSELS).test_connection(datetime(2026, 6, 21, 12))
    empty = simulate(BRUSSELS, utc(2026, 1, 1), utc(2026, 1, 1))
    assert empty.height == 0
    assert empty.columns == ["ts", *COLUMNS]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("latitude", 91.0, "latitude must be between"),
        ("longitude", -181.0, "longitude must be between"),
        ("latitude", float("nan"), "latitude must be a finite number"),
        ("timezone", "Europe/Atlantis", "unknown IANA timezone"),
        ("pv_capacity_kw", 0.0, "pv_capacity_kw must be positive"),
        ("battery_capacity_kwh", -1.0, "battery_capacity_kwh must be"),
        ("base_load_kw", -2.0, "base_load_kw must not be negative"),
    ],
)
def test_invalid_site_parameters_raise(field: str, value: object, message: str) -> None:
    params: dict[str, object] = {
        "latitude": 50.0,
        "longitude": 4.0,
        "timezone": "Europe/Brussels",
        "pv_capacity_kw": 10.0,
        field: value,
    }
    with pytest.raises(ValueError, match=message):
        SimulatedSite(**params)  # type: ignore[arg-type]


def test_test_connection_reports_now() -> None:
    provider = SimulatorProvider(BRUSSELS, site_name="Demo roof")
    now = local(BRUSSELS, 2026, 6, 21, 12, 7, 30)
    info = provider.test_connection(now)
    assert isinstance(info, ConnectionInfo)
    assert (info.site_name, info.capacity_kw, info.timezone) == ("Demo roof", 10.0, "Europe/Brussels")
    assert info.current_power_w is not None
    assert info.current_power_w > 0
    assert info.last_update.utcoffset() == timedelta(0)
    assert info.last_update <= now
    assert now - info.last_update <= timedelta(minutes=10)
    assert info.last_update == utc(2026, 6, 21, 10, 0)
    midnight = provider.test_connection(local(BRUSSELS, 2026, 6, 21, 0, 0))
    assert midnight.current_power_w == 0.0


def test_current_power_matches_history() -> None:
    provider = SimulatorProvider(SYDNEY)
    now = local(SYDNEY, 2026, 12, 21, 13, 2)
    current = provider.current_power(now)
    assert set(current) == set(COLUMNS)
    readings = provider.history(now - timedelta(minutes=2), now + timedelta(minutes=3))
    assert readings.schema == READINGS_SCHEMA
    assert dict(zip(readings["channel"], readings["value"], strict=True)) == current
    assert set(readings["interval_s"]) == {300}
    assert current["pv_w"] > 0
    assert provider.test_connection(now).current_power_w == current["pv_w"]
