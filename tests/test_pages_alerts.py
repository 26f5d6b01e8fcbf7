"""The Alerts page through AppTest on the seeded demo database, with crafted alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.analytics.alert_rules import Finding, Rule, State
from core.analytics.alerts import apply_findings, load_alerts
from core.catalog import catalog as cat
from core.config import load_settings
from core.runtime import open_runtime
from tests.crafting import app_store, open_page


def craft_alerts() -> dict[str, int]:
    """Two open alerts on the demo site, stored as an evaluation would store them; {rule: alert id}."""
    store = app_store()
    catalog = cat.load_catalog(store)
    site = catalog.sites[0]
    by_type = {s.source_type: s for s in catalog.sources}
    findings = [
        Finding(Rule.PV_ZERO_IN_SUN, by_type["solar"].id, site.id, State.FIRING, "Crafted: zero for 45 min.", 45.0),
        Finding(Rule.SOC_STUCK, by_type["soc"].id, site.id, State.FIRING, "Crafted: stuck at 50 %.", 50.0),
    ]
    with store.transaction() as con:
        apply_findings(con, findings, datetime.now(UTC))
    return {row["rule"]: row["id"] for row in load_alerts(store, None, None).to_dicts()}


@pytest.fixture
def page(seeded_env: Path) -> tuple[AppTest, dict[str, int]]:
    ids = craft_alerts()
    return open_page("pages/alerts.py"), ids


def metrics(app: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in app.metric}


def table_rules(app: AppTest) -> list[str]:
    if not app.dataframe:
        return []
    return sorted(app.dataframe[0].value["Rule"].tolist())


def test_the_page_lists_the_alerts_with_counts_and_explanations(page: tuple[AppTest, dict[str, int]]) -> None:
    app, _ = page
    assert app.title[0].value == "Alerts"
    assert metrics(app) == {"Open": "2", "Acknowledged": "0", "Resolved": "0"}
    assert table_rules(app) == ["PV zero in sun", "State of charge stuck"]
    table = app.dataframe[0].value
    assert set(table["Source"]) == {"Rooftop PV Array", "Battery State of Charge"}
    assert set(table["Site"]) == {"Demo Rooftop"} and set(table["Acknowledged"]) == {"-"}
    assert {tuple(tags) for tags in table["Severity"]} == {("Critical",), ("Warning",)}
    tags = json.loads(app.dataframe[0].proto.columns)["Severity"]["type_config"]["options"]
    assert tags == [  # coloured tags, not emoji (empty boxes without an emoji font)
        {"value": "Critical", "color": "#ff4b4b"},
        {"value": "Warning", "color": "#ffa421"},
        {"value": "Info", "color": "#1c83e1"},
    ]
    assert any("last evaluated by the collector" in c.value for c in app.caption)
    explained = " ".join(m.value for m in app.expander[0].markdown)
    assert "30 minutes" in explained and "10°" in explained and "20%" in explained
    assert "(:red[:material/error:] critical, `pv_zero_in_sun`)" in explained  # a Material icon in its colour


def test_filters_by_rule_and_status(page: tuple[AppTest, dict[str, int]]) -> None:
    app, _ = page
    app.multiselect(key="al_rules").set_value(["soc_stuck"]).run()
    assert table_rules(app) == ["State of charge stuck"]
    assert metrics(app)["Open"] == "1"
    app.selectbox(key="al_status").set_value("resolved").run()
    assert not app.exception and table_rules(app) == []
    assert any(s.value == "No alert matches these filters." for s in app.success)
    app.toggle(key="al_all_sites").set_value(True).run()
    app.selectbox(key="al_period").set_value("All time").run()
    app.multiselect(key="al_rules").set_value([]).run()
    app.selectbox(key="al_status").set_value("all").run()
    assert not app.exception and len(table_rules(app)) == 2


def test_acknowledge_selected_alerts(page: tuple[AppTest, dict[str, int]]) -> None:
    app, ids = page
    app.multiselect(key="al_ack_ids").set_value([ids["pv_zero_in_sun"]]).run()
    app.button(key="al_ack").click().run()
    assert not app.exception
    assert [t.value for t in app.toast] == ["1 alert(s) acknowledged."]
    assert metrics(app) == {"Open": "1", "Acknowledged": "1", "Resolved": "0"}
    stored = {r["rule"]: r["status"] for r in load_alerts(open_runtime(load_settings()).store, None, None).to_dicts()}
    assert stored == {"pv_zero_in_sun": "acknowledged", "soc_stuck": "open"}
    # The open view no longer offers it; the acknowledged view lists it.
    assert table_rules(app) == ["State of charge stuck"]
    assert app.multiselect(key="al_ack_ids").options == [
        f"#{ids['soc_stuck']} · Warning · State of charge stuck · Battery State of Charge"
    ]
    app.selectbox(key="al_status").set_value("acknowledged").run()
    assert table_rules(app) == ["PV zero in sun"]
    assert app.dataframe[0].value["Acknowledged"].tolist() != ["-"]


def test_without_any_evaluation_the_page_says_so(seeded_env: Path) -> None:
    app = open_page("pages/alerts.py")
    assert any("have not been evaluated yet" in i.value for i in app.info)
    assert metrics(app) == {"Open": "0", "Acknowledged": "0", "Resolved": "0"}
