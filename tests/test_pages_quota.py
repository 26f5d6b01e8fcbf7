"""The quota planner on the Data Connections page: a caption under Update Frequency, a refusal on save."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.catalog import catalog as cat
from core.config import load_settings
from core.models import Category, Provider
from core.runtime import open_runtime
from tests.markdown_text import shown
from tests.test_pages_connections import open_connections

REFUSAL = (
    "SolarEdge (V2) allows 2,000 calls a month for this API key; every 15 min needs 2,976; "
    "every 30 min fits: 1,488 calls/month of 2,000."
)


@pytest.fixture
def at(app_env: Path) -> AppTest:
    return open_connections(app_env)


def catalog() -> cat.Catalog:
    return cat.load_catalog(open_runtime(load_settings(), prepare=False).store)


def demo_pv() -> cat.Source:
    """The demo's solar source (simulated, every 15 min): one V2 call a poll once it reads SolarEdge."""
    data = catalog()
    return next(s for s in data.sources if data.meter(s.meter_id).category is Category.PROD)


def test_v2_every_15_minutes_is_refused_with_the_frequency_that_fits_and_nothing_is_saved(at: AppTest) -> None:
    source = demo_pv()
    key = f"s{source.id}"
    at.selectbox(key=f"dc_{key}_api_provider").set_value("solaredge").run()
    at.text_input(key=f"dc_{key}_solaredge_system_id").input("3066774")
    at.text_input(key=f"dc_{key}_solaredge_api_key").input("sk-quota-page-1").run()
    assert at.selectbox(key=f"dc_{key}_update_frequency").value == "15min"
    assert REFUSAL in [shown(e.value) for e in at.error]  # before saving, under the frequency

    at.button(key="dc_save_all").click().run()
    messages = [shown(e.value) for e in at.error]  # markdown with the text escaped (ui.markdown): as shown
    assert REFUSAL in messages  # the field error
    assert any("1 problem(s) to fix before saving; nothing was saved" in m and REFUSAL in m for m in messages)
    stored = catalog().source(source.id)
    assert stored.api.api_provider is Provider.SIMULATOR and stored.secret_names == frozenset()

    at.selectbox(key=f"dc_{key}_update_frequency").set_value("1hour").run()
    captions = [c.value for c in at.caption]
    assert "SolarEdge (V2) account: 24 calls/day, 744/month of 2,000 (37%)" in captions
    at.button(key="dc_save_all").click().run()
    assert not [e for e in at.error if "problem" in e.value]
    saved = catalog().source(source.id)
    assert saved.api.api_provider is Provider.SOLAREDGE and saved.api.update_frequency.value == "1hour"
    assert "sk-quota-page-1" not in " ".join(str(w.value) for w in at.text_input)


def test_simulated_sources_show_no_budget(at: AppTest) -> None:
    assert not [c.value for c in at.caption if "calls/day" in c.value]
