"""History series, energy balance and year comparison against a real DuckDB file with crafted readings.

Every expected value is worked out by hand in the comments: constant powers make the energies easy to check.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from core.analytics.history import (
    Level,
    Resolution,
    check_range,
    load_history,
    load_year_comparison,
    shift_back,
)
from core.analytics.history_balance import COMPUTED, METERED
from core.catalog import catalog as cat
from core.models import Category
from core.store.store import Store
from tests.crafting import BRUSSELS, SourceSpec, craft_site, write_readings

NOW = datetime(2029, 1, 1, tzinfo=UTC)  # after every crafted reading: nothing is cut off as "future"


def make_site(store: Store, sources: list[tuple[Category, str]], name: str = "Plant") -> tuple[int, dict[str, int]]:
    """A Brussels site with one meter per category; returns the site id and source ids by "CATEGORY/type"."""
    site_id, ids = craft_site(store, [SourceSpec(c, t, capacity_kw=100) for c, t in sources], name=name)
    return site_id, {f"{c.value}/{t}": ids[f"{c.value} {t}"] for c, t in sources}


def constant(store: Store, source_id: int, start: datetime, end: datetime, watts: float, step_s: int = 900) -> None:
    write_readings(store, source_id, start, [watts] * int((end - start).total_seconds() // step_s), step_s)


def history(store: Store, site_id: int, resolution: Resolution, first: date, last: date, **kwargs):  # type: ignore[no-untyped-def]
    level = kwargs.pop("level", Level.SITE)
    return load_history(store, site_id, level, kwargs.pop("entity_id", None), resolution, first, last, NOW)


def local_hours(frame: pl.DataFrame) -> list[str]:
    return frame["bucket_start_local"].dt.strftime("%H:%M%z").to_list()


# --- DST ---------------------------------------------------------------------------------------------------


def test_hours_of_the_spring_dst_day(store: Store) -> None:
    site, ids = make_site(store, [(Category.PROD, "solar")])
    # 2026-03-29 in Brussels runs from 2026-03-28 23:00 UTC (+01:00) to 2026-03-29 22:00 UTC (+02:00): 23 hours.
    constant(
        store, ids["PROD/solar"], datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 22, tzinfo=UTC), 2000
    )
    result = history(store, site, Resolution.HOUR, date(2026, 3, 29), date(2026, 3, 29))
    production = result.series.filter(pl.col("series") == "Production")
    assert production.height == 23
    labels = local_hours(production)
    assert labels[:3] == ["00:00+0100", "01:00+0100", "03:00+0200"]  # 02:00 does not exist that night
    assert labels[-1] == "23:00+0200"
    assert production["energy_kwh"].to_list() == [2.0] * 23  # 2 kW for one hour
    assert production["power_w"].to_list() == [2000.0] * 23
    assert production["coverage_pct"].to_list() == [100.0] * 23
    day = history(store, site, Resolution.DAY, date(2026, 3, 29), date(2026, 3, 29)).series
    assert day.select("hours", "energy_kwh", "coverage_pct").row(0) == (23.0, 46.0, 100.0)


def test_hours_and_quarters_of_the_autumn_dst_day(store: Store) -> None:
    site, ids = make_site(store, [(Category.PROD, "solar")])
    # 2026-10-25 in Brussels runs from 2026-10-24 22:00 UTC (+02:00) to 2026-10-25 23:00 UTC (+01:00): 25 hours.
    constant(
        store, ids["PROD/solar"], datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2026, 10, 25, 23, tzinfo=UTC), 1000
    )
    hours = history(store, site, Resolution.HOUR, date(2026, 10, 25), date(2026, 10, 25)).series
    assert hours.height == 25
    assert local_hours(hours)[:5] == ["00:00+0200", "01:00+0200", "02:00+0200", "02:00+0100", "03:00+0100"]
    assert hours["energy_kwh"].sum() == 25.0
    quarters = history(store, site, Resolution.MIN15, date(2026, 10, 25), date(2026, 10, 25)).series
    assert quarters.height == 100
    assert quarters["energy_kwh"].to_list() == [0.25] * 100
    day = history(store, site, Resolution.DAY, date(2026, 10, 24), date(2026, 10, 26)).series
    # The 24th and 26th have no readings at all: they appear, empty, beside the 25-hour day.
    assert day.select("hours", "energy_kwh", "coverage_pct").rows() == [
        (24.0, None, 0.0),
        (25.0, 25.0, 100.0),
        (24.0, None, 0.0),
    ]


def test_month_resolution_groups_local_days_and_cuts_months_to_the_range(store: Store) -> None:
    site, ids = make_site(store, [(Category.PROD, "solar")])
    # 1 kW, hourly readings, from 2026-02-15 00:00 local (+01:00) to 2026-04-11 00:00 local (+02:00).
    constant(
        store,
        ids["PROD/solar"],
        datetime(2026, 2, 14, 23, tzinfo=UTC),
        datetime(2026, 4, 10, 22, tzinfo=UTC),
        1000,
        3600,
    )
    months = history(store, site, Resolution.MONTH, date(2026, 2, 15), date(2026, 4, 10)).series
    assert months["bucket_start_local"].dt.strftime("%Y-%m-%d %H:%M%z").to_list() == [
        "2026-02-15 00:00+0100",  # the range starts mid-month
        "2026-03-01 00:00+0100",
        "2026-04-01 00:00+0200",
    ]
    # Feb 15-28: 14 days x 24 h; March: 31 days minus the hour the clocks skip; Apr 1-10: 10 x 24 h.
    assert months["hours"].to_list() == [336.0, 743.0, 240.0]
    assert months["energy_kwh"].to_list() == [336.0, 743.0, 240.0]
    assert months["power_w"].to_list() == [1000.0, 1000.0, 1000.0]
    assert months["coverage_pct"].to_list() == [100.0, 100.0, 100.0]


# --- gaps ----------------------------------------------------------------------------------------------------


def test_a_gap_stays_a_gap(store: Store) -> None:
    site, ids = make_site(store, [(Category.PROD, "solar")])
    pv = ids["PROD/solar"]
    start = datetime(2026, 6, 1, 8, tzinfo=UTC)  # 10:00 local
    write_readings(store, pv, start, [4000.0] * 4)  # 10:00-11:00 complete
    write_readings(store, pv, start + timedelta(hours=1), [4000.0, None])  # 11:00-11:30: one quarter, one "no data" row
    # 11:30-13:00 nothing at all
    write_readings(store, pv, start + timedelta(hours=3), [2000.0] * 4)  # 13:00-14:00 complete
    hours = history(store, site, Resolution.HOUR, date(2026, 6, 1), date(2026, 6, 1)).series
    by_hour = {h: row for h, row in zip(local_hours(hours), hours.iter_rows(named=True), strict=True)}
    assert len(by_hour) == 24
    assert (by_hour["10:00+0200"]["energy_kwh"], by_hour["10:00+0200"]["coverage_pct"]) == (4.0, 100.0)
    # One quarter of 4 kW: 1 kWh and 25 % coverage, not scaled up to the hour.
    assert (by_hour["11:00+0200"]["energy_kwh"], by_hour["11:00+0200"]["coverage_pct"]) == (1.0, 25.0)
    assert by_hour["11:00+0200"]["power_w"] == 4000.0  # the average over the covered quarter
    assert (by_hour["12:00+0200"]["energy_kwh"], by_hour["12:00+0200"]["power_w"]) == (None, None)
    assert by_hour["12:00+0200"]["coverage_pct"] == 0.0
    assert by_hour["13:00+0200"]["energy_kwh"] == 2.0
    assert by_hour["09:00+0200"]["energy_kwh"] is None  # before the data: a gap too, not zero
    quarters = history(store, site, Resolution.MIN15, date(2026, 6, 1), date(2026, 6, 1)).series
    eleven_to_one = quarters.filter(pl.col("bucket_start_local").dt.hour().is_in([11, 12]))["energy_kwh"].to_list()
    assert eleven_to_one == [1.0, None, None, None, None, None, None, None]
    result = history(store, site, Resolution.HOUR, date(2026, 6, 1), date(2026, 6, 1))
    # 4 + 1 + 4 quarters with data out of 96.
    assert result.coverage_pct == pytest.approx(100 * 9 / 96)


def test_buckets_after_now_are_not_expected_and_the_current_one_counts_its_elapsed_part(store: Store) -> None:
    site, ids = make_site(store, [(Category.PROD, "solar")])
    now = datetime(2026, 6, 1, 10, 30, tzinfo=UTC)  # 12:30 local
    constant(store, ids["PROD/solar"], datetime(2026, 6, 1, 10, tzinfo=UTC), now, 1000)
    result = load_history(store, site, Level.SITE, None, Resolution.HOUR, date(2026, 6, 1), date(2026, 6, 2), now)
    assert result.series.height == 13  # 00:00 to 12:00 local
    last = result.series.row(-1, named=True)
    assert (last["energy_kwh"], last["coverage_pct"]) == (0.5, 100.0)


def test_hours_in_a_half_hour_zone_are_the_rollups_utc_hours(store: Store) -> None:
    roof = SourceSpec(Category.PROD, "solar", "Roof")
    site, ids = craft_site(store, [roof], name="Pune", timezone="Asia/Kolkata", latitude=18.5, longitude=73.8)
    pv = ids["Roof"]
    # Local 2026-06-01 runs from 2026-05-31 18:30 UTC to 2026-06-01 18:30 UTC (+05:30).
    constant(store, pv, datetime(2026, 5, 31, 18, tzinfo=UTC), datetime(2026, 6, 1, 19, tzinfo=UTC), 1000)
    hours = history(store, site, Resolution.HOUR, date(2026, 6, 1), date(2026, 6, 1)).series
    # 25 UTC hours cover the local day: from 23:30 the evening before to 23:30 that night.
    assert hours.height == 25
    assert hours["bucket_start_local"].dt.strftime("%d %H:%M").to_list()[:2] == ["31 23:30", "01 00:30"]
    assert hours["energy_kwh"].to_list() == [1.0] * 25


# --- levels --------------------------------------------------------------------------------------------------


def test_site_roles_meter_sources_and_state_of_charge(store: Store) -> None:
    site, ids = make_site(
        store,
        [(Category.PROD, "solar"), (Category.CONS, "load"), (Category.CONS, "grid"), (Category.STOR, "battery"),
         (Category.STOR, "soc")],
    )  # fmt: skip
    start = datetime(2026, 6, 1, 8, tzinfo=UTC)
    constant(store, ids["CONS/load"], start, start + timedelta(hours=1), 3000)
    constant(store, ids["CONS/grid"], start, start + timedelta(hours=1), 1000)
    write_readings(store, ids["STOR/soc"], start, [40.0, 50.0, 60.0, 70.0])
    site_view = history(store, site, Resolution.HOUR, date(2026, 6, 1), date(2026, 6, 1))
    assert [g.name for g in site_view.groups] == [
        "Production", "Load", "Grid import", "Battery (+ discharge)", "State of charge",
    ]  # fmt: skip
    ten = site_view.series.filter(pl.col("bucket_start_utc") == start)
    soc = ten.filter(pl.col("series") == "State of charge").row(0, named=True)
    assert (soc["soc_pct"], soc["energy_kwh"], soc["power_w"]) == (55.0, None, None)  # a %, never an energy
    consumption = cat.load_catalog(store).meters_of(site, Category.CONS)[0]
    meter_view = history(store, site, Resolution.HOUR, date(2026, 6, 1), date(2026, 6, 1), level=Level.METER,
                         entity_id=consumption.id)  # fmt: skip
    assert sorted(
        meter_view.series.filter(pl.col("bucket_start_utc") == start).select("series", "energy_kwh").rows()
    ) == [
        ("CONS grid", 1.0),
        ("CONS load", 3.0),
    ]
    source_view = history(store, site, Resolution.HOUR, date(2026, 6, 1), date(2026, 6, 1), level=Level.SOURCE,
                          entity_id=ids["CONS/grid"])  # fmt: skip
    assert set(source_view.series["series"]) == {"CONS grid"}
    # The balance is always the whole site's, whatever level the series show.
    assert source_view.balance.equals(site_view.balance)


def test_a_role_with_one_of_two_sources_missing_is_a_gap_not_half_the_total(store: Store) -> None:
    site, ids = craft_site(
        store, [SourceSpec(Category.PROD, "solar", "East PV"), SourceSpec(Category.PROD, "solar", "West PV")]
    )
    start = datetime(2026, 6, 1, 8, tzinfo=UTC)  # 10:00 local
    constant(store, ids["East PV"], start, start + timedelta(hours=2), 4000)  # 10:00-12:00
    constant(store, ids["West PV"], start, start + timedelta(hours=1), 2000)  # 10:00-11:00 only
    result = history(store, site, Resolution.HOUR, date(2026, 6, 1), date(2026, 6, 1))
    production = result.series.filter(pl.col("series") == "Production")
    ten, eleven = (production.filter(pl.col("bucket_start_utc") == start + timedelta(hours=h)).row(0, named=True)
                   for h in (0, 1))  # fmt: skip
    assert (ten["energy_kwh"], ten["power_w"], ten["coverage_pct"]) == (6.0, 6000.0, 100.0)  # 4 + 2 kWh
    # 11:00: East alone would show 4 kWh as the production; the bucket is a gap and coverage says half is there.
    assert (eleven["energy_kwh"], eleven["power_w"], eleven["coverage_pct"]) == (None, None, 50.0)
    eleven_balance = result.balance.filter(pl.col("bucket_start_local").dt.hour() == 11).row(0, named=True)
    assert eleven_balance["production_kwh"] is None and eleven_balance["has_gap"] is True
    # The day: 3 of the 2 x 24 source-hours have data; each source alone is still complete in its own hours.
    assert result.coverage_pct == pytest.approx(100 * 3 / 48)
    east = history(store, site, Resolution.HOUR, date(2026, 6, 1), date(2026, 6, 1), level=Level.SOURCE,
                   entity_id=ids["East PV"]).series  # fmt: skip
    assert east.filter(pl.col("bucket_start_utc") == start + timedelta(hours=1))["energy_kwh"].to_list() == [4.0]
    # A day holds both sources (partly covered): the day's total is their sum, 8 + 2 kWh.
    days = history(store, site, Resolution.DAY, date(2026, 6, 1), date(2026, 6, 1)).series
    assert days.filter(pl.col("series") == "Production")["energy_kwh"].to_list() == [10.0]


# --- energy balance ------------------------------------------------------------------------------------------


def test_balance_with_the_load_computed_from_the_battery_and_the_grid(store: Store) -> None:
    site, ids = make_site(
        store, [(Category.PROD, "solar"), (Category.CONS, "grid"), (Category.INJ, "grid"), (Category.STOR, "battery")]
    )
    start = datetime(2026, 6, 1, 8, tzinfo=UTC)  # two hours: the battery charges 2 kW, then discharges 3 kW
    constant(store, ids["PROD/solar"], start, start + timedelta(hours=2), 10_000)
    constant(store, ids["INJ/grid"], start, start + timedelta(hours=2), 4000)
    constant(store, ids["CONS/grid"], start, start + timedelta(hours=2), 1000)
    write_readings(store, ids["STOR/battery"], start, [-2000.0] * 4 + [3000.0] * 4)
    balance = history(store, site, Resolution.HOUR, date(2026, 6, 1), date(2026, 6, 1)).balance
    rows = balance.filter(pl.col("bucket_start_local").dt.hour().is_in([10, 11])).to_dicts()
    first, second = rows
    assert first["production_kwh"] == 10.0
    assert first["exported_kwh"] == 4.0
    assert first["self_consumed_kwh"] == 6.0  # 10 - 4
    assert first["production_kwh"] == first["self_consumed_kwh"] + first["exported_kwh"]
    assert first["imported_kwh"] == 1.0
    assert (first["battery_net_kwh"], first["battery_charge_kwh"], first["battery_discharge_kwh"]) == (-2.0, 2.0, 0.0)
    assert first["load_kwh"] == 5.0  # 10 + 1 - 4 - 2
    assert (second["battery_net_kwh"], second["battery_discharge_kwh"], second["battery_charge_kwh"]) == (3.0, 3.0, 0.0)
    assert second["load_kwh"] == 10.0  # 10 + 1 - 4 + 3
    assert first["load_basis"] == COMPUTED
    assert first["coverage_pct"] == 100.0
    # An hour without data leaves every derived value empty: a gap, not a zero balance.
    nine = balance.filter(pl.col("bucket_start_local").dt.hour() == 9).row(0, named=True)
    assert (nine["production_kwh"], nine["self_consumed_kwh"], nine["load_kwh"], nine["coverage_pct"]) == (
        None, None, None, 0.0,
    )  # fmt: skip


def test_self_consumed_is_clipped_at_zero_when_a_battery_exports_at_night(store: Store) -> None:
    site, ids = make_site(
        store, [(Category.PROD, "solar"), (Category.CONS, "grid"), (Category.INJ, "grid"), (Category.STOR, "battery")]
    )
    night = datetime(2026, 6, 1, 20, tzinfo=UTC)  # 22:00 local: PV 0 W, the battery discharges 3 kW into the grid
    constant(store, ids["PROD/solar"], night, night + timedelta(hours=1), 0)
    constant(store, ids["INJ/grid"], night, night + timedelta(hours=1), 2500)
    constant(store, ids["CONS/grid"], night, night + timedelta(hours=1), 0)
    constant(store, ids["STOR/battery"], night, night + timedelta(hours=1), 3000)
    balance = history(store, site, Resolution.HOUR, date(2026, 6, 1), date(2026, 6, 1)).balance
    row = balance.filter(pl.col("bucket_start_local").dt.hour() == 22).row(0, named=True)
    assert (row["production_kwh"], row["exported_kwh"]) == (0.0, 2.5)
    assert row["self_consumed_kwh"] == 0.0  # max(0 - 2.5, 0), not -2.5
    assert row["load_kwh"] == 0.5  # 0 + 0 - 2.5 + 3
    assert row["has_gap"] is False


def test_balance_uses_the_metered_load_and_leaves_an_unmetered_export_unknown(store: Store) -> None:
    site, ids = make_site(store, [(Category.PROD, "solar"), (Category.CONS, "load"), (Category.CONS, "grid")])
    start = datetime(2026, 6, 1, 8, tzinfo=UTC)
    constant(store, ids["PROD/solar"], start, start + timedelta(hours=1), 5000)
    constant(store, ids["CONS/load"], start, start + timedelta(hours=1), 7000)
    constant(store, ids["CONS/grid"], start, start + timedelta(hours=1), 2500)
    result = history(store, site, Resolution.HOUR, date(2026, 6, 1), date(2026, 6, 1))
    ten = result.balance.filter(pl.col("bucket_start_local").dt.hour() == 10).row(0, named=True)
    assert ten["load_kwh"] == 7.0  # metered, not 5 + 2.5
    assert ten["load_basis"] == METERED
    assert ten["imported_kwh"] == 2.5
    assert ten["battery_net_kwh"] == 0.0  # no battery: it neither charges nor discharges
    # No export meter: the export is unknown, and so is the part of production used on site.
    assert (ten["exported_kwh"], ten["self_consumed_kwh"]) == (None, None)
    assert result.unmetered == ["Grid export"]
    assert ten["coverage_pct"] == 100.0  # every metered flow is complete: unknown is not a gap


# --- same period in earlier years ----------------------------------------------------------------------------


def test_shift_back_keeps_the_date_and_maps_feb_29_to_feb_28() -> None:
    assert shift_back(date(2028, 2, 29), 1) == date(2027, 2, 28)
    assert shift_back(date(2028, 2, 29), 4) == date(2024, 2, 29)
    assert shift_back(date(2028, 3, 1), 1) == date(2027, 3, 1)


def test_year_comparison_aligns_periods_by_day_and_names_years_without_data(store: Store) -> None:
    site, ids = make_site(store, [(Category.PROD, "solar")])
    pv = ids["PROD/solar"]
    # February 2028 (29 days) at 1 kW and February 2027 (28 days) at 2 kW, hourly; nothing in 2026.
    constant(store, pv, datetime(2028, 1, 31, 23, tzinfo=UTC), datetime(2028, 2, 29, 23, tzinfo=UTC), 1000, 3600)
    constant(store, pv, datetime(2027, 1, 31, 23, tzinfo=UTC), datetime(2027, 2, 28, 23, tzinfo=UTC), 2000, 3600)
    result = load_year_comparison(
        store, site, "role:production", Level.SITE, None, Resolution.DAY, date(2028, 2, 1), date(2028, 2, 29), 2, NOW
    )
    frame = result.frame
    current, last_year = frame.filter(pl.col("years_back") == 0), frame.filter(pl.col("years_back") == 1)
    assert current.height == 29 and last_year.height == 28
    assert current["position"].to_list() == list(range(1, 30))
    assert current.filter(pl.col("position") == 29)["first_day"].item() == date(2028, 2, 29)
    assert last_year.filter(pl.col("position") == 28)["first_day"].item() == date(2027, 2, 28)
    assert current["energy_kwh"].unique().to_list() == [24.0]
    assert last_year["energy_kwh"].unique().to_list() == [48.0]
    assert set(frame["period"]) == {"2028", "2027", "2026"}
    assert result.without_data == ["2026 (2026-02-01 to 2026-02-28)"]
    months = load_year_comparison(
        store, site, "role:production", Level.SITE, None, Resolution.MONTH, date(2028, 2, 1), date(2028, 2, 29), 1, NOW
    ).frame
    assert months.select("period", "position", "first_day", "last_day", "energy_kwh").rows() == [
        ("2028", 1, date(2028, 2, 1), date(2028, 2, 29), 29 * 24.0),
        ("2027", 1, date(2027, 2, 1), date(2027, 2, 28), 28 * 48.0),
    ]


def test_a_period_starting_on_feb_29_starts_on_feb_28_a_year_earlier(store: Store) -> None:
    site, _ = make_site(store, [(Category.PROD, "solar")])
    frame = load_year_comparison(
        store, site, "role:production", Level.SITE, None, Resolution.DAY, date(2028, 2, 29), date(2028, 3, 2), 1, NOW
    ).frame
    assert frame.filter(pl.col("years_back") == 1)["first_day"].to_list() == [
        date(2027, 2, 28), date(2027, 3, 1), date(2027, 3, 2),
    ]  # fmt: skip
    assert frame.filter(pl.col("years_back") == 0)["first_day"].to_list() == [
        date(2028, 2, 29), date(2028, 3, 1), date(2028, 3, 2),
    ]  # fmt: skip


# --- validation ----------------------------------------------------------------------------------------------


def test_range_messages() -> None:
    now = datetime(2026, 6, 10, 12, tzinfo=UTC)
    assert check_range(date(2026, 6, 1), date(2026, 6, 7), Resolution.MIN15, BRUSSELS, now) == []
    assert check_range(date(2026, 6, 7), date(2026, 6, 1), Resolution.HOUR, BRUSSELS, now) == [
        "The end date 2026-06-01 is before the start date 2026-06-07: pick an end on or after the start."
    ]
    assert check_range(date(2026, 1, 1), date(2026, 4, 2), Resolution.MIN15, BRUSSELS, now) == []  # 92 days
    assert check_range(date(2026, 1, 1), date(2026, 4, 3), Resolution.MIN15, BRUSSELS, now) == [
        "15 min resolution over 93 days makes 8,928 buckets, more than the 8,832 a chart can show (at most 92 days)."
        " Choose hour, day or month resolution, or a shorter range."
    ]
    assert check_range(date(2026, 6, 11), date(2026, 6, 20), Resolution.DAY, BRUSSELS, now) == [
        "The range 2026-06-11 to 2026-06-20 lies entirely in the future (today is 2026-06-10 in Europe/Brussels):"
        " there is no data yet. Pick a range that starts today or earlier."
    ]
    # Just after local midnight the local day has already changed: today counts, it is not the future.
    late = datetime(2026, 6, 10, 22, 30, tzinfo=UTC)  # 00:30 on the 11th in Brussels
    assert check_range(date(2026, 6, 11), date(2026, 6, 11), Resolution.HOUR, BRUSSELS, late) == []
