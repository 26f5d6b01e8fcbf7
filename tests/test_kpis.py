"""KPIs against hand-computed values: the formulas alone, then read from real DuckDB files with crafted readings.

Every expected number is worked out in a comment beside it, from the powers written (W x hours = Wh).
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, timedelta
from types import FrameType
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from core import localtime
from core.analytics import kpis
from core.analytics.kpi_formulas import KPI_KEYS, Flow, Quantity, SiteFlows, compute_kpis, format_value
from core.catalog import catalog as cat
from core.models import Category
from core.store import rollups
from core.store.store import Store, StoreBusy
from tests.crafting import SourceSpec, craft_site, write_readings

TZ = "Europe/Brussels"
BRUSSELS = ZoneInfo(TZ)


def values(flows: SiteFlows) -> dict[str, float | None]:
    return {key: kpi.value for key, kpi in compute_kpis(flows).items()}


def approx(expected: dict[str, float | None]) -> dict[str, object]:
    return {key: None if value is None else pytest.approx(value, abs=1e-9) for key, value in expected.items()}


# --- the formulas alone ----------------------------------------------------------------------------------

# A full site: PV 100 kWh at 40 g/kWh; load 150 kWh; grid import 80 kWh at 200 g/kWh and 250/MWh;
# export 30 kWh at 50/MWh; battery discharged 12 and charged 10 kWh (net +2).
FULL = SiteFlows(
    production=Flow(energy_kwh=100, co2_g=100 * 40, configured_intensity=40),
    load=Flow(energy_kwh=150),
    grid_import=Flow(energy_kwh=80, co2_g=80 * 200, cost=80 * 250 / 1000, configured_intensity=200,
                     configured_price=250),
    grid_export=Flow(energy_kwh=30, cost=30 * 50 / 1000, configured_price=50),
    battery=Flow(energy_kwh=2, charge_kwh=10, discharge_kwh=12),
)  # fmt: skip


def test_every_kpi_of_a_full_site() -> None:
    assert values(FULL) == approx(
        {
            "e_prod_kwh": 100.0,
            "e_load_kwh": 150.0,  # measured: the load source wins over the balance
            "e_imp_kwh": 80.0,
            "e_exp_kwh": 30.0,
            "e_self_kwh": 70.0,  # 100 - 30
            "battery_discharge_kwh": 12.0,
            "battery_charge_kwh": 10.0,
            "battery_net_kwh": 2.0,
            "self_consumption": 0.7,  # 70 / 100
            "self_sufficiency": 70 / 150,  # (150 - 80) / 150 = 0.4667
            "emissions_kg": 18.8,  # (80 x 200 + 70 x 40) / 1000 = (16,000 + 2,800) / 1000
            "co2_avoided_kg": 16.0,  # 100 x (200 - 40) / 1000
            "import_cost": 20.0,  # 80 x 250 / 1000
            "export_revenue": 1.5,  # 30 x 50 / 1000
            "savings": 17.5,  # 70 x 250 / 1000
        }
    )


def test_each_kpi_carries_its_unit_formula_and_inputs() -> None:
    result = compute_kpis(FULL)
    assert list(result) == list(KPI_KEYS)
    sc = result["self_consumption"]
    assert (sc.name, sc.unit, sc.text) == ("Self-consumption", "share", "70.0 %")
    assert sc.formula.startswith("(E_prod - E_exp) / E_prod")
    assert sc.inputs == (Quantity("E_prod", 100, "kWh"), Quantity("E_exp", 30, "kWh"))
    avoided = result["co2_avoided_kg"]
    assert avoided.text == "16.0 kg CO2" and Quantity("I_grid", 200, "g/kWh") in avoided.inputs
    assert result["import_cost"].text == "20.00"


def test_no_production_leaves_self_consumption_undefined() -> None:
    flows = SiteFlows(
        load=Flow(energy_kwh=50),
        grid_import=Flow(energy_kwh=50, co2_g=50 * 200, cost=50 * 250 / 1000, configured_intensity=200,
                         configured_price=250),
        grid_export=Flow(energy_kwh=0),
    )  # fmt: skip
    result = compute_kpis(flows)
    assert values(flows) == approx(
        {
            "e_prod_kwh": 0.0,  # no PROD source: nothing produced
            "e_load_kwh": 50.0,
            "e_imp_kwh": 50.0,
            "e_exp_kwh": 0.0,
            "e_self_kwh": 0.0,
            "battery_discharge_kwh": 0.0,
            "battery_charge_kwh": 0.0,
            "battery_net_kwh": 0.0,
            "self_consumption": None,  # 0 / 0
            "self_sufficiency": 0.0,  # (50 - 50) / 50
            "emissions_kg": 10.0,  # 50 x 200 / 1000 + 0
            "co2_avoided_kg": 0.0,  # 0 x (200 - ...)
            "import_cost": 12.5,  # 50 x 250 / 1000
            "export_revenue": 0.0,
            "savings": 0.0,  # 0 x 250 / 1000
        }
    )
    assert result["self_consumption"].text == "-"
    assert "no production" in result["self_consumption"].note


def test_without_a_load_source_the_load_comes_from_the_balance_with_the_battery() -> None:
    flows = SiteFlows(
        production=FULL.production, grid_import=FULL.grid_import, grid_export=FULL.grid_export, battery=FULL.battery
    )
    result = compute_kpis(flows)
    # E_load = E_prod + E_imp - E_exp + (E_discharge - E_charge) = 100 + 80 - 30 + (12 - 10) = 152
    assert result["e_load_kwh"].value == pytest.approx(152.0)
    assert result["e_load_kwh"].formula.startswith("E_load = E_prod + E_imp - E_exp + (E_discharge - E_charge)")
    assert result["self_sufficiency"].value == pytest.approx(72 / 152)  # (152 - 80) / 152
    charging = SiteFlows(
        production=FULL.production, grid_import=FULL.grid_import, grid_export=FULL.grid_export,
        battery=Flow(energy_kwh=-8, charge_kwh=9, discharge_kwh=1),
    )  # fmt: skip
    assert values(charging)["e_load_kwh"] == pytest.approx(142.0)  # 100 + 80 - 30 + (1 - 9): charging adds load


def test_load_zero_and_self_sufficiency_clipped_to_zero_and_one() -> None:
    base = {"production": FULL.production, "grid_export": FULL.grid_export}
    zero = SiteFlows(load=Flow(energy_kwh=0), grid_import=Flow(energy_kwh=0), **base)
    assert values(zero)["self_sufficiency"] is None  # (0 - 0) / 0
    assert "no consumption" in compute_kpis(zero)["self_sufficiency"].note
    above = SiteFlows(load=Flow(energy_kwh=40), grid_import=Flow(energy_kwh=60), **base)
    assert values(above)["self_sufficiency"] == 0.0  # (40 - 60) / 40 = -0.5, clipped to 0
    negative_import = SiteFlows(load=Flow(energy_kwh=40), grid_import=Flow(energy_kwh=-4), **base)
    assert values(negative_import)["self_sufficiency"] == 1.0  # (40 + 4) / 40 = 1.1, clipped to 1
    negative_load = SiteFlows(load=Flow(energy_kwh=-5), grid_import=Flow(energy_kwh=1), **base)
    assert values(negative_load)["self_sufficiency"] is None  # denominator <= 0


def test_export_above_production_clips_self_consumption_to_zero() -> None:
    flows = SiteFlows(production=Flow(energy_kwh=10), grid_export=Flow(energy_kwh=14))
    assert values(flows)["e_self_kwh"] == 0.0  # max(10 - 14, 0)
    assert values(flows)["self_consumption"] == 0.0  # (10 - 14) / 10 = -0.4, clipped


def test_a_missing_grid_source_makes_grid_kpis_undefined_not_zero() -> None:
    flows = SiteFlows(production=Flow(energy_kwh=20, co2_g=0), grid_export=Flow(energy_kwh=5, cost=0.25))
    result = compute_kpis(flows)
    assert values(flows) == approx(
        {
            "e_prod_kwh": 20.0,
            "e_load_kwh": None,  # no load source and no import for the balance
            "e_imp_kwh": None,
            "e_exp_kwh": 5.0,
            "e_self_kwh": 15.0,
            "battery_discharge_kwh": 0.0,
            "battery_charge_kwh": 0.0,
            "battery_net_kwh": 0.0,
            "self_consumption": 0.75,  # 15 / 20
            "self_sufficiency": None,
            "emissions_kg": None,
            "co2_avoided_kg": None,  # no grid intensity
            "import_cost": None,
            "export_revenue": 0.25,
            "savings": None,  # no import price
        }
    )
    assert all(result[key].text == "-" for key in ("e_imp_kwh", "co2_avoided_kg", "savings"))
    assert "grid import source" in result["co2_avoided_kg"].note


def test_a_missing_export_source_makes_self_consumption_unknown() -> None:
    flows = SiteFlows(production=FULL.production, load=FULL.load, grid_import=FULL.grid_import)
    got = values(flows)
    assert got["e_exp_kwh"] is None and got["e_self_kwh"] is None and got["self_consumption"] is None
    assert got["emissions_kg"] is None and got["savings"] is None and got["export_revenue"] is None
    assert got["self_sufficiency"] == pytest.approx(70 / 150)  # still known: (150 - 80) / 150
    assert got["co2_avoided_kg"] == pytest.approx(16.0)  # still known: 100 x (200 - 40) / 1000


def test_several_production_sources_each_at_its_own_intensity() -> None:
    # PV 100 kWh at 0 g/kWh and CHP 50 kWh at 300 g/kWh; grid 40 kWh at 200 g/kWh; export 30 kWh.
    flows = SiteFlows(
        production=Flow(energy_kwh=150, co2_g=100 * 0 + 50 * 300),
        grid_import=Flow(energy_kwh=40, co2_g=40 * 200, cost=40 * 250 / 1000, configured_intensity=200),
        grid_export=Flow(energy_kwh=30),
        load=Flow(energy_kwh=160),
    )
    got = values(flows)
    # CO2 avoided = 100 x (200 - 0) + 50 x (200 - 300) = 20,000 - 5,000 = 15,000 g
    assert got["co2_avoided_kg"] == pytest.approx(15.0)
    # I_prod = 15,000 / 150 = 100 g/kWh; E_self = 150 - 30 = 120; emissions = (40 x 200 + 120 x 100) / 1000
    assert got["emissions_kg"] == pytest.approx(20.0)


def test_several_grid_sources_weigh_intensity_and_price_by_energy_or_fall_back_to_the_configured_mean() -> None:
    # Two grid meters: 30 kWh at 100 g/kWh and 200/MWh, 10 kWh at 300 g/kWh and 400/MWh.
    grid = Flow(energy_kwh=40, co2_g=30 * 100 + 10 * 300, cost=(30 * 200 + 10 * 400) / 1000,
                configured_intensity=200, configured_price=300)  # fmt: skip
    assert grid.intensity == pytest.approx(150.0)  # (3,000 + 3,000) / 40
    assert grid.price == pytest.approx(250.0)  # (6 + 4) x 1000 / 40
    idle = Flow(energy_kwh=0, configured_intensity=200, configured_price=300)
    assert (idle.intensity, idle.price) == (200, 300)  # no import: the configured means
    flows = SiteFlows(production=Flow(energy_kwh=10), grid_import=idle, grid_export=Flow(energy_kwh=0))
    got = values(flows)
    assert got["co2_avoided_kg"] == pytest.approx(2.0)  # 10 x (200 - 0) / 1000
    assert got["savings"] == pytest.approx(3.0)  # 10 x 300 / 1000


def test_values_are_displayed_with_their_units_and_dash_when_undefined() -> None:
    assert format_value(None, "kWh") == "-"
    assert format_value(1234.56, "kWh") == "1,234.6 kWh"
    assert format_value(0.8754, "share") == "87.5 %"
    assert format_value(12.346, "cost") == "12.35"


# --- periods ---------------------------------------------------------------------------------------------


def test_presets_in_the_site_calendar() -> None:
    wednesday = date(2026, 3, 4)
    assert [kpis.preset_period(p, wednesday) for p in kpis.PRESETS[:-1]] == [
        kpis.Period(wednesday, wednesday),
        kpis.Period(date(2026, 3, 3), date(2026, 3, 3)),
        kpis.Period(date(2026, 3, 2), wednesday),  # Monday to today
        kpis.Period(date(2026, 3, 1), wednesday),
        kpis.Period(date(2026, 2, 1), date(2026, 2, 28)),
        kpis.Period(date(2026, 1, 1), wednesday),
    ]
    new_year = date(2026, 1, 1)
    assert kpis.preset_period("Yesterday", new_year) == kpis.Period(date(2025, 12, 31), date(2025, 12, 31))
    assert kpis.preset_period("Last month", new_year) == kpis.Period(date(2025, 12, 1), date(2025, 12, 31))
    # 22:30 UTC on 10 June is already 11 June in Brussels (UTC+2)
    assert localtime.site_today(datetime(2026, 6, 10, 22, 30, tzinfo=UTC), TZ) == date(2026, 6, 11)


def test_custom_ranges_are_refused_with_a_reason() -> None:
    today = date(2026, 6, 11)
    assert kpis.period_problem(date(2026, 6, 5), date(2026, 6, 1), today) == (
        "The start date 2026-06-05 is after the end date 2026-06-01: pick a start on or before the end."
    )
    assert "is in the future" in kpis.period_problem(date(2026, 6, 12), date(2026, 6, 13), today)
    assert "end the range today (2026-06-11)" in kpis.period_problem(date(2026, 6, 1), date(2026, 6, 12), today)
    assert kpis.period_problem(date(2021, 6, 12), today, today) is None  # 1,826 days (2024 has 29 February)
    assert kpis.period_problem(date(2021, 6, 11), today, today) is None  # 1,827 days: the limit
    assert kpis.period_problem(date(2021, 6, 10), today, today) == (
        "The range spans 1,828 days: choose at most 5 years (1,827 days)."
    )
    assert kpis.period_problem(today, today, today) is None


def test_days_follow_dst_and_stop_at_the_quarter_hour_cut() -> None:
    spans = kpis.day_spans(kpis.Period(date(2026, 3, 28), date(2026, 3, 30)), TZ, datetime(2026, 4, 1, tzinfo=UTC))
    assert [s.seconds / 3600 for s in spans] == [24, 23, 24]  # clocks jump forward on 29 March
    assert spans[1].start == datetime(2026, 3, 28, 23, tzinfo=UTC)  # midnight at UTC+1
    now = datetime(2026, 10, 25, 10, 7, 30, tzinfo=UTC)  # 11:07 local, the 25-hour day
    (today,) = kpis.day_spans(kpis.Period(date(2026, 10, 25), date(2026, 10, 31)), TZ, now)
    assert (today.start, today.end, today.whole) == (
        datetime(2026, 10, 24, 22, tzinfo=UTC),
        datetime(2026, 10, 25, 10, 0, tzinfo=UTC),  # floored to the quarter hour; later days not begun
        False,
    )


# --- read from a real DuckDB file ------------------------------------------------------------------------

NOW = datetime(2026, 12, 1, tzinfo=UTC)  # after every crafted day, unless a test says otherwise
DAY = date(2026, 6, 10)  # Brussels at UTC+2: the day runs 2026-06-09 22:00 UTC to 2026-06-10 22:00 UTC

# (category, type, name, g/kWh, cost per MWh)
FULL_SITE = [
    (Category.PROD, "solar", "PV", 50.0, 0.0),
    (Category.CONS, "load", "Load", 0.0, 0.0),
    (Category.CONS, "grid", "Grid", 200.0, 250.0),
    (Category.INJ, "grid", "Export", 0.0, 50.0),
    (Category.STOR, "battery", "Battery", 0.0, 0.0),
    (Category.STOR, "soc", "SoC", 0.0, 0.0),
]


def make_site(store: Store, name: str, sources: list[tuple[Category, str, str, float, float]]) -> dict[str, int]:
    """A Brussels site with one meter per category; returns {"site": id, <source name>: id}."""
    specs = [SourceSpec(c, t, n, intensity=intensity, price=price) for c, t, n, intensity, price in sources]
    site_id, ids = craft_site(store, specs, name=name, timezone=TZ)
    return {"site": site_id, **ids}


def local_start(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=BRUSSELS).astimezone(UTC)


def profile(watts_by_hour: dict[int, float], default: float = 0.0, hours: int = 24) -> list[float | None]:
    """Quarter-hour values for a day: `watts_by_hour[h]` in local hour h (a day without DST), else `default`."""
    return [watts_by_hour.get(q // 4, default) for q in range(hours * 4)]


def write(store: Store, source_id: int, start: datetime, watts: list[float | None], step_s: int = 900) -> None:
    """Readings every `step_s` from `start`, skipping None (no row: a gap), with the rollups refreshed."""
    write_readings(store, source_id, start, watts, step_s, skip_none=True)


def write_full_day(store: Store, ids: dict[str, int], day: date, dead: tuple[str, ...] = ()) -> None:
    """The crafted day: PV 4 kW from 10 to 14 h (16 kWh); export 1 kW 12-14 h (2 kWh); grid 1 kW all day (24 kWh);
    load 2 kW all day (48 kWh); battery charging 2 kW at 11 h (2 kWh) and discharging 1.5 kW 19-21 h (3 kWh);
    state of charge 80 % all day (a % reading: if it were counted as power it would add 19.2 "kWh").
    The sources named in `dead` send nothing."""
    start = local_start(day)
    ids = {name: source for name, source in ids.items() if name not in dead}
    write(store, ids["PV"], start, profile({10: 4000, 11: 4000, 12: 4000, 13: 4000}))
    write(store, ids["Export"], start, profile({12: 1000, 13: 1000}))
    if "Grid" in ids:
        write(store, ids["Grid"], start, profile({}, default=1000))
    if "Load" in ids:
        write(store, ids["Load"], start, profile({}, default=2000))
    write(store, ids["Battery"], start, profile({11: -2000, 19: 1500, 20: 1500}))
    if "SoC" in ids:
        write(store, ids["SoC"], start, profile({}, default=80))


def report_for(store: Store, site_id: int, first: date, last: date | None = None, now: datetime = NOW):
    return kpis.site_kpis(store, site_id, kpis.Period(first, last or first), now)


def kpi_values(report: kpis.KpiReport) -> dict[str, float | None]:
    return {key: kpi.value for key, kpi in report.kpis.items()}


FULL_DAY_KPIS = {
    "e_prod_kwh": 16.0,  # 4 kW x 4 h
    "e_load_kwh": 48.0,  # 2 kW x 24 h
    "e_imp_kwh": 24.0,  # 1 kW x 24 h
    "e_exp_kwh": 2.0,  # 1 kW x 2 h
    "e_self_kwh": 14.0,  # 16 - 2
    "battery_discharge_kwh": 3.0,  # 1.5 kW x 2 h
    "battery_charge_kwh": 2.0,  # 2 kW x 1 h
    "battery_net_kwh": 1.0,  # 3 - 2
    "self_consumption": 0.875,  # 14 / 16
    "self_sufficiency": 0.5,  # (48 - 24) / 48
    "emissions_kg": 5.5,  # (24 x 200 + 14 x 50) / 1000 = (4,800 + 700) / 1000
    "co2_avoided_kg": 2.4,  # 16 x (200 - 50) / 1000
    "import_cost": 6.0,  # 24 x 250 / 1000
    "export_revenue": 0.1,  # 2 x 50 / 1000
    "savings": 3.5,  # 14 x 250 / 1000
}


def test_a_whole_day_read_from_the_rollups(store: Store) -> None:
    ids = make_site(store, "Full", FULL_SITE)
    write_full_day(store, ids, DAY)
    report = report_for(store, ids["site"], DAY)
    assert kpi_values(report) == approx(FULL_DAY_KPIS)
    assert report.coverage == 1.0 and not report.so_far and not report.incomplete_sources
    # five energy sources: the state of charge is no energy and is not expected to cover anything either
    assert sorted(s.name for s in report.sources) == ["Battery", "Export", "Grid", "Load", "PV"]
    assert (report.start, report.end) == (datetime(2026, 6, 9, 22, tzinfo=UTC), datetime(2026, 6, 10, 22, tzinfo=UTC))
    assert report.kpis["e_prod_kwh"].inputs == (Quantity("PV", 16.0, "kWh"),)
    (row,) = report.daily.to_dicts()
    assert row == {"site": "Full", "day": DAY, "coverage_pct": 100.0, **approx(FULL_DAY_KPIS)}


def test_without_a_load_source_the_balance_gives_the_load(store: Store) -> None:
    ids = make_site(store, "No load", [s for s in FULL_SITE if s[2] != "Load"])
    write_full_day(store, ids, DAY)
    got = kpi_values(report_for(store, ids["site"], DAY))
    assert got["e_load_kwh"] == pytest.approx(39.0)  # 16 + 24 - 2 + (3 - 2)
    assert got["self_sufficiency"] == pytest.approx(15 / 39)  # (39 - 24) / 39


def test_a_site_with_production_only_has_no_grid_kpis(store: Store) -> None:
    ids = make_site(store, "PV only", [(Category.PROD, "solar", "PV", 50.0, 0.0)])
    write(store, ids["PV"], local_start(DAY), profile({12: 2000}))
    report = report_for(store, ids["site"], DAY)
    got = kpi_values(report)
    assert got["e_prod_kwh"] == pytest.approx(2.0)  # 2 kW x 1 h
    undefined = ["e_load_kwh", "e_imp_kwh", "e_exp_kwh", "e_self_kwh", "self_consumption", "self_sufficiency",
                 "emissions_kg", "co2_avoided_kg", "import_cost", "export_revenue", "savings"]  # fmt: skip
    assert [key for key in undefined if got[key] is not None] == []
    assert report.kpis["co2_avoided_kg"].text == "-"


def test_a_gap_lowers_the_coverage_and_the_energy_without_inventing_data(store: Store) -> None:
    ids = make_site(store, "Gappy", FULL_SITE)
    write_full_day(store, ids, DAY)
    with store.transaction() as con:  # the grid meter lost local 00:00-06:00: 24 quarters
        con.execute(
            "DELETE FROM readings WHERE source_id = ? AND ts < ?", [ids["Grid"], local_start(DAY) + timedelta(hours=6)]
        )
        rollups.refresh(con, [ids["Grid"]], local_start(DAY), local_start(DAY) + timedelta(days=1))
    report = report_for(store, ids["site"], DAY)
    assert report.kpis["e_imp_kwh"].value == pytest.approx(18.0)  # 1 kW x 18 h
    # (4 sources x 86,400 s + 64,800 s) / (5 x 86,400 s) = 410,400 / 432,000
    assert report.coverage == pytest.approx(0.95)
    assert [(s.name, s.share) for s in report.incomplete_sources] == [("Grid", 0.75)]
    assert report.daily["coverage_pct"].to_list() == [pytest.approx(95.0)]


def test_today_so_far_stops_at_the_quarter_hour_before_now(store: Store) -> None:
    ids = make_site(store, "Today", FULL_SITE)
    today = date(2026, 6, 11)
    write_full_day(store, ids, today)  # readings for the whole day exist, also after `now`
    now = datetime(2026, 6, 11, 8, 7, tzinfo=UTC)  # 10:07 local: the cut is 10:00 local
    report = report_for(store, ids["site"], today, now=now)
    got = kpi_values(report)
    assert report.so_far and report.end == datetime(2026, 6, 11, 8, 0, tzinfo=UTC)
    assert got["e_prod_kwh"] == 0.0  # PV starts at 10:00, in the open quarter: not counted yet
    assert got["self_consumption"] is None and report.kpis["self_consumption"].text == "-"
    assert got["e_imp_kwh"] == pytest.approx(10.0)  # 1 kW x 10 h
    assert got["e_load_kwh"] == pytest.approx(20.0)  # 2 kW x 10 h
    assert got["battery_charge_kwh"] == 0.0  # the 11:00 charge has not happened yet
    assert got["self_sufficiency"] == pytest.approx(0.5)  # (20 - 10) / 20
    assert report.coverage == 1.0  # 10 h expected, 10 h received, per source


def test_an_hourly_reading_in_the_open_hour_does_not_hide_a_gap_elsewhere(store: Store) -> None:
    ids = make_site(store, "Hourly", [(Category.PROD, "solar", "PV", 0.0, 0.0)])
    today = date(2026, 6, 11)
    write(store, ids["PV"], local_start(today - timedelta(days=1)), [1000.0] * 12, step_s=3600)  # 00-12 h only
    write(store, ids["PV"], local_start(today), [1000.0] * 11, step_s=3600)  # 00-11 h, one row an hour
    now = datetime(2026, 6, 11, 8, 20, tzinfo=UTC)  # 10:20 local: cut at 10:15, 10.25 h elapsed today
    report = report_for(store, ids["site"], today - timedelta(days=1), today, now=now)
    # Today's rows claim 11 h (the 10:00 row covers until 11:00) but only 10.25 h = 36,900 s are due: each day
    # counts at most its own length. (12 h + 10.25 h) / (24 h + 10.25 h) = 80,100 / 123,300
    assert report.coverage == pytest.approx(80_100 / 123_300)
    assert report.daily["coverage_pct"].to_list() == [50.0, 100.0]
    # The documented rule (core.analytics.kpis docstring, README "KPI formulas"): a reading that starts before the cut
    # counts whole, so the 10:00 reading adds its full hour although the cut is at 10:15 (not pro-rated to 0.25 kWh):
    # 12 + 11 hourly readings of 1 kW = 23 kWh.
    assert report.kpis["e_prod_kwh"].value == pytest.approx(23.0)


@pytest.mark.parametrize(
    ("day", "hours"),
    [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25)],  # Brussels: clocks forward, clocks back
)
def test_a_dst_day_has_its_own_length(store: Store, day: date, hours: int) -> None:
    ids = make_site(store, "DST", [(Category.PROD, "solar", "PV", 0.0, 0.0), (Category.INJ, "grid", "Export", 0, 0)])
    write(store, ids["PV"], local_start(day), [1000.0] * (hours * 4))  # 1 kW through the whole local day
    write(store, ids["Export"], local_start(day), [250.0] * (hours * 4))  # 0.25 kW through the day
    report = report_for(store, ids["site"], day - timedelta(days=1), day + timedelta(days=1))
    got = kpi_values(report)
    assert got["e_prod_kwh"] == pytest.approx(hours)  # 1 kW x 23 or 25 h
    assert got["self_consumption"] == pytest.approx(0.75)  # (H - H / 4) / H
    daily = report.daily.select("day", "coverage_pct", "e_prod_kwh").rows()
    assert daily == [
        (day - timedelta(days=1), 0.0, None),  # no data: no KPI, rather than 0 kWh
        (day, 100.0, pytest.approx(hours)),  # the 23/25-hour day is fully covered
        (day + timedelta(days=1), 0.0, None),
    ]
    # two sources x (24 + H + 24) hours expected, H hours received each
    assert report.coverage == pytest.approx(hours / (48 + hours))


def test_the_daily_table_sums_to_the_period_and_displays_dashes(store: Store) -> None:
    ids = make_site(store, "Week", FULL_SITE)
    for offset in range(3):
        write_full_day(store, ids, DAY + timedelta(days=offset))
    report = report_for(store, ids["site"], DAY, DAY + timedelta(days=3))  # the 4th day has no data
    assert report.daily["e_prod_kwh"].to_list() == [16.0, 16.0, 16.0, None]
    assert report.kpis["e_prod_kwh"].value == pytest.approx(48.0)  # 3 x 16
    assert report.kpis["self_consumption"].value == pytest.approx(0.875)  # (48 - 6) / 48: a ratio of sums
    assert report.coverage == pytest.approx(0.75)  # 3 of 4 days
    shown = kpis.daily_for_display(report.daily)
    assert shown.row(0, named=True)["Self-consumption"] == "87.5 %"
    assert shown.row(3, named=True)["Production (kWh)"] == "-"
    assert shown.row(3, named=True)["Coverage"] == "0.0 %"


def test_v_kpi_daily_matches_the_python_kpis(store: Store) -> None:
    full = make_site(store, "Full", FULL_SITE)
    no_load = make_site(store, "Mix", [
        (Category.PROD, "solar", "PV", 0.0, 0.0),
        (Category.PROD, "chp", "CHP", 300.0, 0.0),
        (Category.CONS, "grid", "Grid", 200.0, 250.0),
        (Category.INJ, "grid", "Export", 0.0, 50.0),
    ])  # fmt: skip
    pv_only = make_site(store, "PV only", [(Category.PROD, "solar", "PV", 50.0, 0.0)])
    for offset in range(2):
        write_full_day(store, full, DAY + timedelta(days=offset))
    # Mix, day 1: PV 2 kW x 5 h = 10 kWh, CHP 1 kW x 24 h = 24 kWh, grid 0.5 kW x 8 h = 4 kWh, export 1 kW x 3 h.
    # Day 2: the same without any import (the grid meter reads 0 all day: the configured intensity and price apply).
    for offset, grid_watts in ((0, 500.0), (1, 0.0)):
        start = local_start(DAY + timedelta(days=offset))
        write(store, no_load["PV"], start, profile({10: 2000, 11: 2000, 12: 2000, 13: 2000, 14: 2000}))
        write(store, no_load["CHP"], start, profile({}, default=1000))
        write(store, no_load["Grid"], start, profile({h: grid_watts for h in range(8)}))
        write(store, no_load["Export"], start, profile({12: 1000, 13: 1000, 14: 1000}))
    write(store, pv_only["PV"], local_start(DAY), [None] * 8 + profile({12: 2000})[8:])  # 00-02 h missing

    mix_day1 = kpi_values(report_for(store, no_load["site"], DAY))
    expected_day1 = {
        "e_load_kwh": 35.0,  # 34 + 4 - 3 + 0
        "self_consumption": 31 / 34,  # (34 - 3) / 34
        "self_sufficiency": 31 / 35,  # (35 - 4) / 35
        "emissions_kg": (800 + 31 * 7200 / 34) / 1000,  # 4 x 200 = 800 g; I_prod = (10 x 0 + 24 x 300) / 34
        "co2_avoided_kg": -0.4,  # (34 x 200 - 7,200) / 1000: the CHP emits more than the grid
        "savings": 7.75,  # 31 x 250 / 1000
    }
    assert {key: mix_day1[key] for key in expected_day1} == approx(expected_day1)
    mix_day2 = kpi_values(report_for(store, no_load["site"], DAY + timedelta(days=1)))
    assert mix_day2["co2_avoided_kg"] == pytest.approx(-0.4)  # the configured 200 g/kWh without import
    assert mix_day2["savings"] == pytest.approx(7.75) and mix_day2["self_sufficiency"] == 1.0  # (31 - 0) / 31

    with store.connect(read_only=True) as con:
        view = con.sql("SELECT * FROM v_kpi_daily ORDER BY site_id, day").pl()
    columns = [c for c in view.columns if c in KPI_KEYS or c == "coverage_pct"]
    assert set(KPI_KEYS) - set(columns) == {"battery_discharge_kwh", "battery_charge_kwh"}  # the split needs hours
    compared = 0
    for ids in (full, no_load, pv_only):
        python = report_for(store, ids["site"], DAY, DAY + timedelta(days=1)).daily.filter(pl.col("coverage_pct") > 0)
        rows = view.filter(pl.col("site_id") == ids["site"])
        assert rows["day"].to_list() == python["day"].to_list()
        for sql_row, py_row in zip(rows.select(columns).to_dicts(), python.select(columns).to_dicts(), strict=True):
            assert sql_row == approx(py_row)
            compared += 1
    assert compared == 5  # Full x 2 days, Mix x 2 days, PV only x 1 day
    assert view.filter(pl.col("site_id") == pv_only["site"])["coverage_pct"].to_list() == [
        pytest.approx(100 * 22 / 24)  # 22 of 24 hours
    ]


def test_a_role_whose_sources_sent_nothing_is_unknown_not_zero() -> None:
    silent_prod = SiteFlows(
        production=Flow(configured_intensity=40, has_data=False), load=FULL.load, grid_import=FULL.grid_import,
        grid_export=FULL.grid_export, battery=FULL.battery,
    )  # fmt: skip
    result = compute_kpis(silent_prod)
    got = values(silent_prod)
    unknown = ["e_prod_kwh", "e_self_kwh", "self_consumption", "emissions_kg", "co2_avoided_kg", "savings"]
    assert {key: got[key] for key in unknown} == dict.fromkeys(unknown)
    assert got["self_sufficiency"] == pytest.approx(70 / 150)  # measured load: (150 - 80) / 150
    assert got["import_cost"] == pytest.approx(20.0) and got["export_revenue"] == pytest.approx(1.5)
    assert result["e_prod_kwh"].note == "No data from the production sources in this period."
    assert result["self_consumption"].note == "No data from the production sources in this period."
    # a silent battery at a site without a load meter: the balance cannot be closed
    silent_battery = SiteFlows(
        production=FULL.production, grid_import=FULL.grid_import, grid_export=FULL.grid_export,
        battery=Flow(has_data=False),
    )  # fmt: skip
    got = values(silent_battery)
    assert [got[k] for k in ("battery_discharge_kwh", "battery_charge_kwh", "battery_net_kwh", "e_load_kwh")] == [
        None, None, None, None,
    ]  # fmt: skip
    assert got["self_sufficiency"] is None and got["self_consumption"] == pytest.approx(0.7)  # 70 / 100
    assert compute_kpis(silent_battery)["e_load_kwh"].note == "No data from the battery sources in this period."


def test_a_dead_grid_meter_makes_import_unknown_not_zero_in_python_and_in_the_view(store: Store) -> None:
    ids = make_site(store, "Dead grid", FULL_SITE)
    write_full_day(store, ids, DAY, dead=("Grid",))  # the grid meter sends nothing on the first day
    write_full_day(store, ids, DAY + timedelta(days=1))
    first = report_for(store, ids["site"], DAY)
    assert kpi_values(first) == approx(
        FULL_DAY_KPIS  # still known: the load is measured and I_grid, P_imp fall back to the configured 200 and 250
        | {"e_imp_kwh": None, "self_sufficiency": None, "emissions_kg": None, "import_cost": None}
    )
    note = "No data from the grid import sources in this period."
    assert [first.kpis[k].note for k in ("e_imp_kwh", "self_sufficiency", "emissions_kg", "import_cost")] == [note] * 4
    assert first.kpis["e_imp_kwh"].inputs == (Quantity("Grid", None, "kWh"),)
    assert first.coverage == pytest.approx(0.8)  # 4 of 5 energy sources
    # Over both days the grid did report (24 kWh, on the second day): known, with the coverage saying 50 % for it.
    both = report_for(store, ids["site"], DAY, DAY + timedelta(days=1))
    assert both.kpis["e_imp_kwh"].value == pytest.approx(24.0)
    assert both.kpis["self_sufficiency"].value == pytest.approx(72 / 96)  # (96 - 24) / 96
    assert both.kpis["import_cost"].value == pytest.approx(6.0)  # 24 x 250 / 1000
    assert both.daily["e_imp_kwh"].to_list() == [None, pytest.approx(24.0)]
    assert both.daily["self_sufficiency"].to_list() == [None, pytest.approx(0.5)]
    with store.connect(read_only=True) as con:
        view = con.sql(f"SELECT * FROM v_kpi_daily WHERE site_id = {ids['site']} ORDER BY day").pl()
    columns = [c for c in view.columns if c in KPI_KEYS or c == "coverage_pct"]
    assert view.select(columns).to_dicts() == [approx(row) for row in both.daily.select(columns).to_dicts()]
    assert view["e_imp_kwh"].to_list()[0] is None and view["import_cost"].to_list()[0] is None


def test_a_writer_gets_the_file_while_the_kpis_are_computed(store: Store) -> None:
    # The KPIs are computed after their one short connection is closed, so the collector can write meanwhile. At
    # each computation of the formulas (seen with Python's profiler, nothing replaced), a writer takes the file.
    ids = make_site(store, "Full", FULL_SITE)
    write_full_day(store, ids, DAY)
    with store.transaction() as con:
        con.execute("CREATE TABLE writes_during_kpis (n INTEGER)")
    writer_got_in: list[bool] = []

    def write_when_computing(frame: FrameType, event: str, _arg: object) -> None:
        if event != "call" or frame.f_code is not compute_kpis.__code__:
            return
        try:
            with store.transaction(timeout_s=0.5) as con:
                con.execute("INSERT INTO writes_during_kpis VALUES (1)")
            writer_got_in.append(True)
        except StoreBusy:
            writer_got_in.append(False)

    sys.setprofile(write_when_computing)
    try:
        report = report_for(store, ids["site"], DAY)
    finally:
        sys.setprofile(None)
    assert report.kpis["e_prod_kwh"].value == pytest.approx(16.0)
    assert writer_got_in == [True, True]  # the period, then its one day: both after the close
    with store.connect(read_only=True) as con:
        assert con.sql("SELECT count(*) FROM writes_during_kpis").fetchall() == [(2,)]


def test_a_half_hour_zone_splits_the_battery_into_its_own_days(store: Store) -> None:
    # Asia/Kolkata is UTC+05:30: its midnight is at hh:30 UTC, so the UTC hour 18:00-19:00 holds 23:30-00:30 local.
    site_id, ids = craft_site(store, [SourceSpec(Category.STOR, "battery", "Battery")], name="Pune",
                              timezone="Asia/Kolkata")  # fmt: skip
    first = date(2026, 6, 9)
    watts = [0.0] * 192  # two local days of quarter hours
    watts[94:96] = [1000.0, 1000.0]  # discharging 1 kW 23:30-24:00 on the first day: 0.5 kWh
    watts[96:98] = [-2000.0, -2000.0]  # charging 2 kW 00:00-00:30 on the second day: 1 kWh
    start = datetime(2026, 6, 8, 18, 30, tzinfo=UTC)  # local midnight of the first day
    write(store, ids["Battery"], start, watts)
    report = kpis.site_kpis(store, site_id, kpis.Period(first, first + timedelta(days=1)), NOW)
    # By the UTC hour, the straddling hour nets to 0.5 - 1 = -0.5 kWh charge, all of it on the first day.
    daily = report.daily.select("day", "battery_discharge_kwh", "battery_charge_kwh", "battery_net_kwh").rows()
    assert daily == [(first, 0.5, 0.0, 0.5), (first + timedelta(days=1), 0.0, 1.0, -1.0)]
    got = kpi_values(report)
    assert (got["battery_discharge_kwh"], got["battery_charge_kwh"]) == (0.5, 1.0)
    assert got["battery_net_kwh"] == pytest.approx(-0.5)  # 0.5 - 1


def test_a_deleted_site_is_reported_as_gone(store: Store) -> None:
    with pytest.raises(cat.NotFound, match="site 99 no longer exists"):
        report_for(store, 99, DAY)
