"""The History page through AppTest on the seeded demo (a month of simulated history up to now)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from streamlit.testing.v1 import AppTest

from tests.crafting import open_page


@pytest.fixture
def history(seeded_env: Path) -> AppTest:
    return open_page("pages/history.py")


def today() -> datetime:
    return datetime.now(UTC).astimezone(ZoneInfo("Europe/Brussels"))


def charts(app: AppTest) -> int:
    return len(app.get("plotly_chart"))


def errors(app: AppTest) -> list[str]:
    return [e.value for e in app.error]


def test_default_render_shows_every_chart_of_the_demo_site(history: AppTest) -> None:
    assert history.title[0].value == "History"
    assert not errors(history)
    # Power, energy, state of charge, balance, earlier years.
    assert charts(history) == 5
    assert [s.value for s in history.subheader] == [
        "Power", "Energy", "State of charge", "Energy balance of the site", "Same period in earlier years",
    ]  # fmt: skip
    assert any("Data coverage over the range" in c.value for c in history.caption)
    # The demo has a month of history: a year back there is nothing, and the page says so.
    assert any(i.value.startswith("No data for ") for i in history.info)
    assert len(history.get("download_button")) == 10  # CSV and Parquet under each chart


def test_changing_resolution_level_and_range(history: AppTest) -> None:
    history.selectbox(key="hist_resolution").set_value("day").run()
    assert not history.exception and not errors(history)
    assert charts(history) == 5
    end = today().date()
    history.date_input(key="hist_range").set_value((end - timedelta(days=20), end)).run()
    assert not history.exception and not errors(history)
    history.selectbox(key="hist_resolution").set_value("15min").run()
    assert not history.exception and not errors(history)
    assert charts(history) == 5
    history.radio(key="hist_level").set_value("source").run()
    history.selectbox(key="hist_source").select_index(0).run()
    assert not history.exception and not errors(history)
    assert charts(history) >= 3  # the one source's power and energy (or its %), the balance, earlier years
    history.radio(key="hist_level").set_value("meter").run()
    assert not history.exception and not errors(history)


def test_bad_ranges_show_a_message_and_no_chart(history: AppTest) -> None:
    end = today().date()
    history.date_input(key="hist_range").set_value((end, end - timedelta(days=3))).run()
    assert not history.exception
    assert charts(history) == 0
    assert errors(history) == [
        f"The end date {end - timedelta(days=3)} is before the start date {end}: pick an end on or after the start."
    ]
    history.date_input(key="hist_range").set_value((end - timedelta(days=120), end)).run()
    history.selectbox(key="hist_resolution").set_value("15min").run()
    assert not history.exception
    assert charts(history) == 0
    assert any("15 min resolution over 121 days" in e and "Choose hour" in e for e in errors(history))
    history.date_input(key="hist_range").set_value((end + timedelta(days=10), end + timedelta(days=20))).run()
    assert not history.exception
    assert charts(history) == 0
    assert any("lies entirely in the future" in e for e in errors(history))


def test_a_range_over_the_autumn_clock_change_lists_the_repeated_hour(history: AppTest) -> None:
    # 2026-10-25 in Brussels has 25 hours; the demo's month of history may not reach back that far: gaps then.
    history.date_input(key="hist_range").set_value((date(2026, 10, 24), date(2026, 10, 26))).run()
    assert not history.exception and not errors(history)
    assert charts(history) == 5
    assert any("The clocks went back in this range" in c.value for c in history.caption)
