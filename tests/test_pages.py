"""Every page through Streamlit's AppTest, on a real temporary database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.catalog import catalog as cat
from core.catalog.connections import MASKED
from core.config import load_settings
from core.runtime import open_runtime
from tests.fakes import solaredge_v2
from tests.fakes.server import serve
from tests.markdown_text import shown

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def at(app_env: Path) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert not app.exception
    return app


def catalog() -> cat.Catalog:
    return cat.load_catalog(open_runtime(load_settings(), prepare=False).store)


def errors(app: AppTest) -> list[str]:
    return [shown(e.value) for e in app.error]


def open_connections(app: AppTest) -> AppTest:
    app.switch_page("pages/data_connections.py").run()
    assert not app.exception
    return app


# --- Control Room --------------------------------------------------------------------------------------------


def test_control_room_shows_the_seeded_demo(at: AppTest) -> None:
    assert at.title[0].value == "Control Room"
    assert any("Demo Rooftop" in e.label for e in at.expander)
    meter_names = [t.value for t in at.text_input if t.label == "Meter Name"]
    assert sorted(meter_names) == ["Battery Storage", "Building Consumption", "Grid Injection", "Rooftop PV"]


def test_a_fleet_shows_one_site_at_a_time_and_a_new_site_comes_first(at: AppTest) -> None:
    store = open_runtime(load_settings(), prepare=False).store
    for n in range(11):  # with the demo, 12 sites: more than the page lays out at once
        cat.create_site(store, cat.SiteIn(name=f"Plant {n:02d}", latitude=50, longitude=4, timezone="Europe/Brussels"))
    at.run()
    assert not at.exception
    sites = [e.label for e in at.expander if "meter(s)" in e.label]
    assert len(sites) == 1 and "Demo Rooftop" in sites[0]
    picker = at.selectbox(key="cr_site_pick")
    picker.set_value(next(s.id for s in catalog().sites if s.name == "Plant 07")).run()
    assert [e.label for e in at.expander if "meter(s)" in e.label] == ["**Plant 07** · Europe/Brussels · 0 meter(s)"]

    at.text_input(key="cr_add_site_name").input("North Plant")
    at.text_input(key="cr_add_site_lat").input("51")
    at.text_input(key="cr_add_site_lon").input("5")
    at.button(key="FormSubmitter:cr_add_site_form-Create Site").click().run()
    assert [e.label for e in at.expander if "meter(s)" in e.label] == ["**North Plant** · Europe/Brussels · 0 meter(s)"]


def test_create_site_validates_and_saves(at: AppTest) -> None:
    at.text_input(key="cr_add_site_name").input("North <b>Plant</b>")
    at.text_input(key="cr_add_site_lat").input("95")
    at.text_input(key="cr_add_site_lon").input("east")
    at.button(key="FormSubmitter:cr_add_site_form-Create Site").click().run()
    assert set(errors(at)) >= {
        "must not contain HTML (< or >)",
        "must be at most 90",
        "must be a number (got 'east')",
    }
    assert [s.name for s in catalog().sites] == ["Demo Rooftop"]

    at.text_input(key="cr_add_site_name").input("North Plant")
    at.text_input(key="cr_add_site_lat").input("51.2")
    at.text_input(key="cr_add_site_lon").input("4.4")
    at.selectbox(key="cr_add_site_tz").set_value("Europe/Amsterdam")
    at.button(key="FormSubmitter:cr_add_site_form-Create Site").click().run()
    assert not errors(at)
    site = next(s for s in catalog().sites if s.name == "North Plant")
    assert (site.latitude, site.longitude, site.timezone) == (51.2, 4.4, "Europe/Amsterdam")
    assert "Site 'North Plant' created" in [t.value for t in at.toast]


def test_duplicate_site_name_is_refused(at: AppTest) -> None:
    at.text_input(key="cr_add_site_name").input("demo rooftop")
    at.text_input(key="cr_add_site_lat").input("1")
    at.text_input(key="cr_add_site_lon").input("1")
    at.button(key="FormSubmitter:cr_add_site_form-Create Site").click().run()
    assert "a site named 'demo rooftop' already exists" in errors(at)
    assert len(catalog().sites) == 1


def test_rename_site_and_add_then_delete_a_meter(at: AppTest) -> None:
    site = catalog().sites[0]
    at.text_input(key=f"cr_site{site.id}_name").input("Rooftop HQ")
    at.button(key=f"FormSubmitter:cr_site{site.id}_form-Save Site").click().run()
    assert catalog().site(site.id).name == "Rooftop HQ"

    at.text_input(key=f"cr_add_meter{site.id}_name").input("Heat Pump")
    at.selectbox(key=f"cr_add_meter{site.id}_cat").set_value(cat.Category.CONS)
    at.button(key=f"FormSubmitter:cr_add_meter{site.id}_form-Add Meter").click().run()
    meter = next(m for m in catalog().meters if m.name == "Heat Pump")
    assert meter.category is cat.Category.CONS

    at.button(key=f"cr_meter{meter.id}_delete").click().run()
    assert any("Delete meter **Heat Pump**" in w.value for w in at.warning)
    assert any(m.name == "Heat Pump" for m in catalog().meters)  # nothing deleted before confirmation
    at.button(key=f"cr_confirm_meter{meter.id}").click().run()
    assert all(m.name != "Heat Pump" for m in catalog().meters)


def test_deleting_a_site_asks_first_and_can_be_cancelled(at: AppTest) -> None:
    site = catalog().sites[0]
    at.button(key=f"cr_site{site.id}_delete").click().run()
    warning = next(w.value for w in at.warning if "Delete site" in w.value)
    assert "4 meter(s), 6 data source(s) with their stored credentials and 0 stored reading(s)" in warning
    at.button(key=f"cr_cancel_site{site.id}").click().run()
    assert len(catalog().sites) == 1
    at.button(key=f"cr_site{site.id}_delete").click().run()
    at.button(key=f"cr_confirm_site{site.id}").click().run()
    assert catalog().sites == [] and catalog().meters == [] and catalog().sources == []
    assert any("No sites yet" in i.value for i in at.info)


# --- Data Connections ----------------------------------------------------------------------------------------


def test_data_connections_lists_sources_per_category_tab(at: AppTest) -> None:
    open_connections(at)
    assert [t.label for t in at.tabs] == ["Solar (PROD)", "Consumption (CONS)", "Storage (STOR)", "Injection (INJ)"]
    names = [t.value for t in at.text_input if t.label == "Source Name"]
    assert names == [
        "Rooftop PV Array",
        "Building Load",
        "Grid Import",
        "Battery",
        "Battery State of Charge",
        "Grid Export",
    ]
    assert len([b for b in at.button if b.label == "Add Data Source"]) == 4
    assert [b.label for b in at.button].count("Save All Connections") == 1


def test_add_test_and_save_a_simulator_source(at: AppTest) -> None:
    open_connections(at)
    pv = next(m for m in catalog().meters if m.category is cat.Category.PROD)
    at.button(key=f"dc_add_{pv.id}").click().run()
    key = next(t.key for t in at.text_input if t.key and t.key.startswith("dc_new-") and t.label == "Source Name")
    draft = key.removeprefix("dc_").removesuffix("_name")
    at.text_input(key=f"dc_{draft}_name").input("Main Solar Array")
    at.text_input(key=f"dc_{draft}_capacity_kw").input("500")
    at.toggle(key=f"dc_{draft}_use_api").set_value(True).run()
    assert at.selectbox(key=f"dc_{draft}_api_provider").value == "simulator"
    at.button(key=f"dc_test_{draft}").click().run()
    assert any(s.value.startswith("**Connected**") and "current power" in s.value for s in at.success)
    at.button(key="dc_save_all").click().run()
    assert not errors(at)
    source = next(s for s in catalog().sources if s.name == "Main Solar Array")
    assert source.capacity_kw == 500 and source.api.use_api
    assert source.api.connection_status.value == "connected"
    assert any(t.value.startswith("Saved: 1 added") for t in at.toast)


def test_bad_values_show_next_to_fields_and_save_nothing(at: AppTest) -> None:
    open_connections(at)
    source = catalog().sources[0]
    at.text_input(key=f"dc_s{source.id}_capacity_kw").input("-5")
    at.text_input(key=f"dc_s{source.id}_cost_per_mwh").input("1e400")
    at.text_input(key=f"dc_s{source.id}_name").input("")
    at.button(key="dc_save_all").click().run()
    messages = errors(at)
    assert "must be at least 0" in messages
    assert "must be a finite number" in messages
    assert "must not be empty" in messages
    assert any("3 problem(s) to fix before saving; nothing was saved" in m for m in messages)
    assert catalog().source(source.id).capacity_kw == source.capacity_kw


@pytest.fixture
def solaredge_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The fake SolarEdge V2 server, with the app's settings pointing at it."""
    with serve(solaredge_v2.create_app(solaredge_v2.FakeState())) as url:
        monkeypatch.setenv("DATACONN_SOLAREDGE_BASE_URL", f"{url}/v2")
        yield url


def test_solaredge_wrong_key_fails_with_its_reason_and_is_masked_after_save(solaredge_url: str, at: AppTest) -> None:
    open_connections(at)
    source = catalog().sources[0]
    key = f"s{source.id}"
    at.selectbox(key=f"dc_{key}_api_provider").set_value("solaredge").run()
    at.selectbox(key=f"dc_{key}_update_frequency").set_value("1hour").run()  # within the V2 monthly credits
    at.text_input(key=f"dc_{key}_solaredge_system_id").input("4711")
    at.text_input(key=f"dc_{key}_solaredge_api_key").input("sk-page-SECRET-1")
    at.button(key=f"dc_test_{key}").click().run()
    failure = next(e.value for e in at.error if "**Failed**" in e.value)
    assert "API key" in failure and "sk-page-SECRET-1" not in failure
    at.button(key="dc_save_all").click().run()
    assert not [e for e in errors(at) if "problem" in e]
    assert at.text_input(key=f"dc_{key}_solaredge_api_key").value == MASKED
    rendered = " ".join(str(w.value) for w in at.text_input)
    assert "sk-page-SECRET-1" not in rendered
    stored = catalog().source(source.id)
    assert stored.secret_names == frozenset({"api_key"}) and stored.api.system_id == "4711"


def test_remove_is_pending_until_save_and_can_be_undone(at: AppTest) -> None:
    open_connections(at)
    source = catalog().sources[0]
    at.button(key=f"dc_remove_s{source.id}").click().run()
    assert any(f"**{source.name}** will be removed" in w.value for w in at.warning)
    at.button(key=f"dc_undo_{source.id}").click().run()
    assert not any("will be removed" in w.value for w in at.warning)
    at.button(key=f"dc_remove_s{source.id}").click().run()
    assert len(catalog().sources) == 6
    at.button(key="dc_save_all").click().run()
    assert source.id not in {s.id for s in catalog().sources}


def test_enphase_shows_its_credentials_and_authorization_link(at: AppTest) -> None:
    open_connections(at)
    key = f"s{catalog().sources[0].id}"
    at.selectbox(key=f"dc_{key}_api_provider").set_value("enphase").run()
    at.selectbox(key=f"dc_{key}_update_frequency").set_value("1hour").run()  # within the Watt plan
    labels = {t.label for t in at.text_input}
    assert {"Client ID", "Client Secret", "Application API Key", "System ID"} <= labels
    at.text_input(key=f"dc_{key}_enphase_client_id").input("my-client")
    at.text_input(key=f"dc_{key}_enphase_system_id").input("698905955")
    at.text_input(key=f"dc_{key}_enphase_client_secret").input("cs-1")
    at.text_input(key=f"dc_{key}_enphase_app_api_key").input("ak-1")
    assert not at.get("link_button")  # authorising needs the saved source
    at.button(key="dc_save_all").click().run()
    urls = [str(b.proto.url) for b in at.get("link_button")]
    assert len(urls) == 2 and "client_id=my-client" in urls[0] and "state=" in urls[0]
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A8501%2Fdata-connections" in urls[0]
    # "Get a code from Enphase": Enphase's default redirect, which shows the code to paste.
    assert "client_id=my-client" in urls[1] and "redirect_uri" not in urls[1] and "state=" not in urls[1]
    assert "Authorization Code" in {t.label for t in at.text_input}  # the pasted-code path


def test_empty_database_guides_to_the_control_room(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATACONN_SEED_DEMO", "false")
    app = AppTest.from_file(APP, default_timeout=60).run()
    app.switch_page("pages/data_connections.py").run()
    assert not app.exception
    assert any("create one in the Control Room" in i.value for i in app.info)
