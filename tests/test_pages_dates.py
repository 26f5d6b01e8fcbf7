"""How History and KPIs take their dates, through AppTest on the seeded demo.

The keyboard itself (typing into the date segments, then Tab, Enter or a click elsewhere) needs a browser:
tests/e2e/test_typed_dates.py. Here: the pages load the script that makes Tab and Enter apply a typed date, and
History says which range it shows.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.localtime import site_today
from tests.crafting import open_page

ZONE = "Europe/Brussels"  # the demo site's


def today() -> date:
    return site_today(datetime.now(UTC), ZONE)


def date_scripts(app: AppTest) -> list[str]:
    """The sidebar's `st.html` scripts that act on Streamlit's date fields."""
    return [
        e.proto.body
        for e in app.sidebar.get("html")
        if e.proto.unsafe_allow_javascript and "stDateInputField" in e.proto.body
    ]


def range_caption(app: AppTest) -> str:
    return next(c.value for c in app.caption if f"times in {ZONE}" in c.value)


@pytest.fixture
def history(seeded_env: Path) -> AppTest:
    return open_page("pages/history.py")


def test_history_names_the_range_it_shows(history: AppTest) -> None:
    end = today()
    assert range_caption(history).startswith(f"{end - timedelta(days=6)} to {end}, times in {ZONE}.")
    first, last = end - timedelta(days=12), end - timedelta(days=9)
    history.date_input(key="hist_range").set_value((first, last)).run()
    assert not history.exception and not history.error
    assert range_caption(history).startswith(f"{first} to {last}, times in {ZONE}.")
    history.date_input(key="hist_range").set_value((first, first)).run()
    assert range_caption(history).startswith(f"{first}, times in {ZONE}.")


def test_history_loads_the_typed_dates_script(history: AppTest) -> None:
    assert len(date_scripts(history)) == 1


def test_kpis_load_the_typed_dates_script_with_their_date_inputs(seeded_env: Path) -> None:
    page = open_page("pages/kpis.py")
    assert not page.date_input and not date_scripts(page)  # a preset: no date to type
    page.radio(key="kpi_period").set_value("Custom").run()
    assert [d.label for d in page.date_input] == ["From (site time)", "To (site time)"]
    assert len(date_scripts(page)) == 1
