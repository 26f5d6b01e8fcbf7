"""The KPIs page through AppTest on the seeded demo database: tiles, formulas, bad ranges, undefined values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import localtime
from core.models import Category
from tests.crafting import SourceSpec, app_store, craft_site, open_page

KPI_NAMES = [
    "Production", "Consumption", "Grid import", "Grid export", "Self-consumed energy", "Battery discharge",
    "Battery charge", "Battery net", "Self-consumption", "Self-sufficiency", "Emissions",
    "CO2 avoided", "Import cost", "Export revenue", "Savings (self-consumption)",
]  # fmt: skip
# tile labels carry the unit of energies and carbon
TILES = [f"{name} (kWh)" for name in KPI_NAMES[:8]] + [
    "Self-consumption", "Self-sufficiency", "Emissions (kg CO2)", "CO2 avoided (kg CO2)", "Import cost (EUR)",
    "Export revenue (EUR)", "Savings (self-consumption) (EUR)",
]  # fmt: skip  # costs carry the currency (DATACONN_CURRENCY, EUR by default)


@pytest.fixture
def page(seeded_env: Path) -> AppTest:
    return open_page("pages/kpis.py")


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def test_tiles_and_their_formulas_for_the_demo_site(page: AppTest) -> None:
    assert page.title[0].value == "KPIs"
    # The last seven whole days, all inside the seeded month: the default "This month" has no full quarter hour
    # yet in the first minutes of a month, so the test does not depend on the clock.
    today = localtime.site_today(datetime.now(UTC), "Europe/Brussels")
    first, last = today - timedelta(days=7), today - timedelta(days=1)
    page.radio(key="kpi_period").set_value("Custom").run()
    page.date_input(key="kpi_from").set_value(first)
    page.date_input(key="kpi_to").set_value(last).run()
    assert not page.exception and not page.error
    assert [m.label for m in page.metric] == TILES
    assert all(m.value for m in page.metric)
    assert float(metric(page, "Production (kWh)").replace(",", "")) >= 0
    expanders = {e.label: e for e in page.expander}
    assert set(expanders) == {f"{name}: formula" for name in KPI_NAMES}
    shares = expanders["Self-consumption: formula"]
    assert any("(E_prod - E_exp) / E_prod, clipped to [0, 1]" in m.value for m in shares.markdown)
    assert any("- E\\_prod = " in m.value and "kWh" in m.value for m in shares.markdown)  # markdown-escaped
    production = expanders["Production: formula"]
    assert any("Rooftop PV Array = " in m.value for m in production.markdown)
    # the daily table: one row per day of the range, and its downloads
    table = page.dataframe[0].value
    assert list(table.columns[:3]) == ["Site", "Day", "Coverage"]
    assert table["Day"].tolist() == [str(first + timedelta(days=n)) for n in range(7)]
    assert {b.label for b in page.get("download_button")} == {"Download CSV", "Download PARQUET"}


def test_a_custom_range_ending_before_it_starts_shows_why_and_no_kpis(page: AppTest) -> None:
    today = localtime.site_today(datetime.now(UTC), "Europe/Brussels")
    page.radio(key="kpi_period").set_value("Custom").run()
    page.date_input(key="kpi_from").set_value(today)
    page.date_input(key="kpi_to").set_value(today - timedelta(days=3)).run()
    assert not page.exception
    assert [e.value for e in page.error] == [
        f"The start date {today} is after the end date {today - timedelta(days=3)}: pick a start on or before the end."
    ]
    assert len(page.metric) == 0 and len(page.dataframe) == 0

    page.date_input(key="kpi_from").set_value(today - timedelta(days=2))
    page.date_input(key="kpi_to").set_value(today + timedelta(days=1)).run()
    assert [e.value for e in page.error] == [
        f"The end date {today + timedelta(days=1)} is in the future: end the range today ({today}) at the latest."
    ]
    assert len(page.metric) == 0

    page.date_input(key="kpi_to").set_value(today - timedelta(days=1)).run()  # a valid range: the KPIs come back
    assert not page.error and len(page.metric) == len(TILES)


def test_a_site_without_production_shows_a_dash_for_self_consumption(page: AppTest) -> None:
    grid = SourceSpec(Category.CONS, "grid", "Office Grid", capacity_kw=50, intensity=150, price=200)
    office, _ = craft_site(
        app_store(), [grid], name="Office", latitude=50.0, longitude=4.0, meter_names={Category.CONS: "Grid"}
    )
    page.run()
    page.selectbox(key="kpi_site").set_value(office).run()
    assert not page.exception
    assert metric(page, "Production (kWh)") == "0.0"
    assert metric(page, "Self-consumption") == "-"
    assert metric(page, "Grid export (kWh)") == "-"  # no export source: unknown, not zero
    assert metric(page, "Grid import (kWh)") == "-"  # a grid source that sent nothing: unknown, not zero
    notes = {e.label: [c.value for c in e.caption] for e in page.expander}
    assert notes["Self-consumption: formula"] == ["Undefined: no production (E_prod = 0)."]
    assert notes["Grid import: formula"] == ["No data from the grid import sources in this period."]
    assert any("Data incomplete" in w.value for w in page.warning)  # the new site has no readings at all
