"""The Import Sites page through AppTest, against the fake SolarEdge V2 on loopback with an account of 50 sites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.catalog import catalog as cat
from core.models import UpdateFrequency
from tests.crafting import app_store, open_page
from tests.fakes import solaredge_v2 as se
from tests.fakes.server import serve

PAGE = "pages/import_sites.py"
KEY = se.SANDBOX_API_KEY


@pytest.fixture
def fleet(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[se.FakeState]:
    state = se.FakeState(sites=se.fleet_sites(50))
    with serve(se.create_app(state)) as url:
        monkeypatch.setenv("DATACONN_SOLAREDGE_BASE_URL", f"{url}/v2")
        yield state


@pytest.fixture
def at(fleet: se.FakeState) -> AppTest:
    return open_page(PAGE)


def list_sites(at: AppTest, key: str = KEY) -> None:
    at.text_input(key="isites_api_key").set_value(key)
    at.button(key="isites_list").click().run()
    assert not at.exception


def imported_ids() -> set[str]:
    return {s.api.system_id for s in cat.load_catalog(app_store()).sources if s.api.api_provider.value == "solaredge"}


def test_listing_then_a_selection_the_budget_refuses_then_one_it_carries(at: AppTest, fleet: se.FakeState) -> None:
    list_sites(at)
    assert any(h.value == "50 site(s) in this account" for h in at.subheader)
    assert len(at.multiselect(key="isites_chosen").options) == 50

    at.button(key="isites_select_all").click().run()
    at.multiselect(key="isites_groups").set_value(["meters", "battery"]).run()
    assert any("allows 2,000 calls a month" in e.value for e in at.error)
    button = at.button(key="isites_import")
    assert button.label == "Import 50 site(s)" and button.disabled

    chosen = [str(s.site_id) for s in fleet.sites[:5]]
    at.multiselect(key="isites_chosen").set_value(chosen)
    at.multiselect(key="isites_groups").set_value([])
    at.run()
    assert any(e.value.startswith("SolarEdge (V2) allows 2,000") for e in at.error)  # 5 sites every hour: too many
    proposed = next(c.value for c in at.caption if c.value.startswith("Fastest frequency this budget carries"))
    every = proposed.removeprefix("Fastest frequency this budget carries for the selection: every ").rstrip(".")
    frequency = next(f for f in UpdateFrequency if f.label == every)
    at.button(key="isites_use_fastest").click().run()  # "Use every <that>": one click (or Enter) to take it
    assert at.selectbox(key="isites_frequency").value == frequency
    fits = [s.value for s in at.success if "calls/day" in s.value]
    assert fits and not at.error, [e.value for e in at.error]
    at.button(key="isites_import").click().run()

    assert not at.exception
    assert any("Imported 5 site(s) with 5 meter(s) and 5 source(s)" in s.value for s in at.success)
    assert imported_ids() == set(chosen)
    assert {s.api.update_frequency for s in cat.load_catalog(app_store()).sources if s.api.system_id in chosen} == {
        frequency
    }
    assert {link.label for link in at.get("page_link")} >= {"Open the Control Room", "Open Data Connections"}

    # Listing again: the five are configured and left out of the choice.
    list_sites(at)
    assert any("5 of them are configured already" in c.value for c in at.caption)
    assert len(at.multiselect(key="isites_chosen").options) == 45


def test_a_bad_key_says_so_once_and_saves_nothing(at: AppTest) -> None:
    before = len(cat.load_catalog(app_store()).sites)
    list_sites(at, "wrong-key")
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "rejected the API key" in errors[0] and "wrong-key" not in errors[0]
    assert len(cat.load_catalog(app_store()).sites) == before
    assert not at.multiselect  # no listing

    # A changed key replaces the message at once: it described the old key.
    at.text_input(key="isites_api_key").set_value(KEY).run()
    assert not at.error


def test_an_empty_key_is_asked_for(at: AppTest) -> None:
    at.button(key="isites_list").click().run()
    assert [e.value for e in at.error] == ["Enter the SolarEdge V2 API key of the account\\."]


def test_enphase_without_an_authorised_source_points_to_data_connections(at: AppTest) -> None:
    at.radio(key="isites_provider").set_value("enphase").run()
    assert any("No authorised Enphase source yet" in i.value for i in at.info)
    assert at.button(key="isites_list").disabled


def test_checked_meters_are_shown_and_decide_each_sites_channels(at: AppTest) -> None:
    list_sites(at)
    chosen = ["4000001", "4000002"]  # meters and battery; PV only
    at.multiselect(key="isites_chosen").set_value(chosen).run()
    check = at.button(key="isites_check_meters")
    assert check.label == "Check meters of 2 chosen site(s)"
    check.click().run()
    assert not at.exception and not at.warning
    table = at.dataframe[0].value
    reported = dict(zip(table["Site ID"], table["Meters reported"], strict=True))
    assert reported["4000001"] == "Load and grid meters, Battery" and reported["4000002"] == "none (PV only)"
    assert reported["4000003"] == "not checked"
    assert at.button(key="isites_check_meters").disabled  # both checked

    at.selectbox(key="isites_frequency").set_value(UpdateFrequency("6hour")).run()  # 4 calls a poll fit 4 a day
    assert not at.error, [e.value for e in at.error]
    at.button(key="isites_import").click().run()
    assert any("Imported 2 site(s) with 5 meter(s) and 7 source(s)" in s.value for s in at.success)


def test_list_clicked_before_the_enphase_choice_is_drawn_uses_the_application_shown_first(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.config import load_settings
    from core.runtime import open_runtime
    from tests.fakes import enphase
    from tests.test_account_import import enphase_source

    fake = enphase.FakeState()
    with serve(enphase.create_app(fake)) as url:
        monkeypatch.setenv("DATACONN_ENPHASE_BASE_URL", f"{url}/api/v4")
        monkeypatch.setenv("DATACONN_ENPHASE_AUTH_URL", f"{url}/oauth")
        at = open_page(PAGE)
        runtime = open_runtime(load_settings(), prepare=False)
        enphase_source(runtime.store, runtime.box, authorised=True, settings=runtime.settings, fake=fake)
        at.radio(key="isites_provider").set_value("enphase")
        at.button(key="isites_list").click().run()  # a fast click: the page still showed the SolarEdge fields
        assert not at.error, [e.value for e in at.error]
        assert any(h.value == "2 site(s) in this account" for h in at.subheader)


def test_an_authorised_enphase_application_lists_and_imports_its_systems(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.config import load_settings
    from core.runtime import open_runtime
    from tests.fakes import enphase
    from tests.test_account_import import enphase_source

    fake = enphase.FakeState(systems=enphase.sandbox_systems() | enphase.fleet_systems(50))
    with serve(enphase.create_app(fake)) as url:
        monkeypatch.setenv("DATACONN_ENPHASE_BASE_URL", f"{url}/api/v4")
        monkeypatch.setenv("DATACONN_ENPHASE_AUTH_URL", f"{url}/oauth")
        monkeypatch.setenv("DATACONN_ENPHASE_PLAN", "kilowatt")
        at = open_page(PAGE)
        runtime = open_runtime(load_settings(), prepare=False)
        enphase_source(runtime.store, runtime.box, authorised=True, settings=runtime.settings, fake=fake)

        at.radio(key="isites_provider").set_value("enphase").run()
        at.button(key="isites_list").click().run()
        assert not at.exception and not at.error
        assert any(h.value == "52 site(s) in this account" for h in at.subheader)
        assert any("1 of them are configured already" in c.value for c in at.caption)
        assert not [b for b in at.button if b.key == "isites_check_meters"]  # Enphase: channels are chosen
        at.button(key="isites_select_all").click().run()
        at.selectbox(key="isites_frequency").set_value(UpdateFrequency("6hour")).run()
        assert not at.error, [e.value for e in at.error]
        at.button(key="isites_import").click().run()

        assert any("Imported 51 site(s) with 51 meter(s) and 51 source(s)" in s.value for s in at.success)
        assert any("none needs its own" in c.value for c in at.caption)
        catalog = cat.load_catalog(app_store())
        assert sum(s.api.api_provider.value == "enphase" for s in catalog.sources) == 52
