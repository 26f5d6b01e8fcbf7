"""Charts speak in one unit each, picked from their data and the same on Live and History; costs carry the
currency; month resolution has month ticks; earlier years without data are listed in one line; the bucket in
progress is drawn as partial, not as a fall. AppTest on the seeded demo (120 kW of PV, a month of history).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from core.analytics.power_units import power_scale
from tests.crafting import open_page


def specs(app: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def by_y_title(app: AppTest, title: str) -> dict[str, Any]:
    return next(s for s in specs(app) if s["layout"].get("yaxis", {}).get("title", {}).get("text") == title)


def test_the_unit_follows_the_largest_magnitude() -> None:
    assert power_scale([]) == (1.0, "W")
    assert power_scale([None, 0.0, 850.0]) == (1.0, "W")
    assert power_scale([120.0, -20_000.0]) == (1e3, "kW")
    assert power_scale([3.2e6]) == (1e6, "MW")


@pytest.fixture
def history(seeded_env: Path) -> AppTest:
    return open_page("pages/history.py")


def test_history_and_live_draw_the_demos_power_in_kw(history: AppTest) -> None:
    power = by_y_title(history, "kW")
    peak = max(abs(v) for trace in power["data"] for v in trace["y"] if v is not None)
    assert 1 <= peak < 1000  # kW values, not "20k" W ticks
    live = open_page("pages/live.py")
    assert [s["layout"]["yaxis"]["title"]["text"] for s in specs(live)] == ["kW"]


def test_month_resolution_has_a_tick_per_month_and_the_comparison_whole_positions(history: AppTest) -> None:
    history.selectbox(key="hist_resolution").set_value("month").run()
    assert not history.exception
    energy = by_y_title(history, "kWh")
    assert energy["layout"]["xaxis"]["dtick"] == "M1"
    comparison = next(s for s in specs(history) if s["layout"].get("xaxis", {}).get("title"))
    assert comparison["layout"]["xaxis"]["dtick"] == 1


def test_earlier_years_without_data_are_listed_in_one_line(history: AppTest) -> None:
    history.number_input(key="hist_cmp_years").set_value(3).run()
    notes = [i.value for i in history.info if i.value.startswith("No data for")]
    assert len(notes) == 1 and notes[0].count(" to ") == 3 and " and " in notes[0]


def test_the_bucket_in_progress_is_hatched_and_says_so_far(history: AppTest) -> None:
    history.selectbox(key="hist_resolution").set_value("day").run()
    energy = by_y_title(history, "kWh")
    shapes = energy["data"][0]["marker"]["pattern"]["shape"]
    assert shapes[-1] == "/" and set(shapes[:-1]) == {""}  # today only
    assert "so far" in energy["data"][0]["customdata"][-1][1]
    balance = by_y_title(history, "kWh (export and charge below zero)")
    assert balance["data"][0]["marker"]["pattern"]["shape"][-1] == "/"


def test_costs_carry_the_currency(seeded_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATACONN_CURRENCY", "USD")
    kpis = open_page("pages/kpis.py")
    labels = [m.label for m in kpis.metric]
    assert {"Import cost (USD)", "Export revenue (USD)"} <= set(labels)
    table = kpis.dataframe[0].value
    assert "Import cost (USD)" in table.columns
