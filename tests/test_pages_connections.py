"""Data Connections through AppTest: saving keeps the site you work on, a pasted Enphase code authorises, and a
test result shows only while the settings it tested are on screen."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.catalog import catalog as cat
from core.config import load_settings
from core.runtime import Runtime, open_runtime
from core.store.oauth_tokens import StoredTokens
from tests.fakes import enphase
from tests.fakes.server import serve

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def runtime() -> Runtime:
    return open_runtime(load_settings(), prepare=False)


def catalog() -> cat.Catalog:
    return cat.load_catalog(runtime().store)


def open_connections(app_env: Path) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("pages/data_connections.py").run()
    assert not app.exception
    return app


@pytest.fixture
def fake_enphase(monkeypatch: pytest.MonkeyPatch) -> Iterator[enphase.FakeState]:
    """The fake Enphase cloud, with the app's settings pointing at it."""
    state = enphase.FakeState()
    with serve(enphase.create_app(state)) as url:
        monkeypatch.setenv("DATACONN_ENPHASE_BASE_URL", f"{url}/api/v4")
        monkeypatch.setenv("DATACONN_ENPHASE_AUTH_URL", f"{url}/oauth")
        yield state


def test_a_pasted_authorization_code_is_exchanged_and_the_source_connects(
    app_env: Path, fake_enphase: enphase.FakeState
) -> None:
    at = open_connections(app_env)
    source = next(s for s in catalog().sources if s.name == "Rooftop PV Array")
    key = f"s{source.id}"
    at.selectbox(key=f"dc_{key}_api_provider").set_value("enphase").run()
    at.selectbox(key=f"dc_{key}_update_frequency").set_value("1hour").run()  # within the Watt plan
    at.text_input(key=f"dc_{key}_enphase_client_id").input(enphase.SANDBOX_CLIENT_ID)
    at.text_input(key=f"dc_{key}_enphase_system_id").input(str(enphase.SANDBOX_SYSTEM_ID))
    at.text_input(key=f"dc_{key}_enphase_client_secret").input(enphase.SANDBOX_CLIENT_SECRET)
    at.text_input(key=f"dc_{key}_enphase_app_api_key").input(enphase.SANDBOX_API_KEY)
    at.button(key="dc_save_all").click().run()
    assert not at.exception and not [e.value for e in at.error if "problem" in e.value]
    run = runtime()
    assert StoredTokens(run.store, run.box, source.id).load() is None

    # Enphase showed the owner a code instead of coming back: it is pasted and completed on the page.
    code = fake_enphase.issue_code(None)  # approved through "Get a code from Enphase": no redirect of ours
    at.text_input(key=f"dc_{key}_enphase_authorization_code").input(code)
    at.button(key=f"dc_complete_{key}").click().run()
    assert not at.exception
    toasts = [t.value for t in at.toast]
    assert any(t.startswith("Enphase authorised Rooftop PV Array") for t in toasts), toasts
    assert code not in fake_enphase.codes  # the fake's token endpoint received exactly this code (single use)
    assert fake_enphase.token_calls == 1
    assert StoredTokens(run.store, run.box, source.id).load() is not None
    assert at.text_input(key=f"dc_{key}_enphase_authorization_code").value == ""  # the code is not kept

    at.button(key=f"dc_test_{key}").click().run()
    status = [s.value for s in at.success]
    assert any(s.startswith("**Connected**") and "current power" in s for s in status), status


def test_saving_a_new_source_keeps_the_chosen_site_and_lists_the_source(app_env: Path) -> None:
    at = open_connections(app_env)  # the first run creates the database with the demo site
    store = runtime().store
    north = cat.create_site(store, cat.SiteIn(name="North Plant", latitude=51, longitude=5, timezone="Europe/Brussels"))
    meter = cat.create_meter(store, north.id, cat.MeterIn(name="North PV", category=cat.Category.PROD))
    at.run()
    sites = [s.name for s in catalog().sites]
    assert len(sites) == 2 and at.selectbox(key="dc_site_id").value != north.id  # starts on the other site

    at.selectbox(key="dc_site_id").set_value(north.id).run()
    at.button(key=f"dc_add_{meter.id}").click().run()
    name_key = next(t.key for t in at.text_input if t.key and t.key.startswith("dc_new-") and t.label == "Source Name")
    at.text_input(key=name_key).input("North Array")
    at.text_input(key=name_key.removesuffix("_name") + "_capacity_kw").input("120")
    at.button(key="dc_save_all").click().run()

    assert not at.exception
    assert any(t.value.startswith("Saved: 1 added") for t in at.toast)
    assert [b.value for b in at.success if b.value.startswith("Saved:")] == ["Saved: added **North Array**."]
    assert at.selectbox(key="dc_site_id").value == north.id
    assert [t.value for t in at.text_input if t.label == "Source Name"] == ["North Array"]
    assert [s.name for s in catalog().sources_of_site(north.id)] == ["North Array"]


STALE = "**Untested** (settings changed since the last test)"
NO_API = "**No API**: imported or manual data"


def status_of(at: AppTest, draft_key: str) -> str:
    """The status box of one source, as the page shows it."""
    box = at.main.get_by_key(f"status-{draft_key}")
    shown = [e.value for kind in ("success", "error", "warning", "info") for e in getattr(box, kind)]
    assert len(shown) == 1, shown
    return shown[0]


def test_a_result_is_shown_only_for_the_settings_it_tested(app_env: Path) -> None:
    at = open_connections(app_env)
    source = next(s for s in catalog().sources if s.name == "Rooftop PV Array")  # the demo's simulator source
    key = f"s{source.id}"
    at.button(key=f"dc_test_{key}").click().run()
    assert status_of(at, key).startswith("**Connected**")

    at.selectbox(key=f"dc_{key}_api_provider").set_value("solaredge").run()  # empty Site ID and API Key
    assert status_of(at, key) == STALE

    # Back to exactly the settings tested: that result describes them again (its time is shown under it).
    at.selectbox(key=f"dc_{key}_api_provider").set_value("simulator").run()
    assert status_of(at, key).startswith("**Connected**")

    at.toggle(key=f"dc_{key}_use_api").set_value(False).run()
    assert status_of(at, key) == NO_API


def test_a_failed_result_goes_when_an_id_or_credential_changes(app_env: Path) -> None:
    at = open_connections(app_env)
    source = next(s for s in catalog().sources if s.name == "Rooftop PV Array")
    key = f"s{source.id}"
    at.selectbox(key=f"dc_{key}_api_provider").set_value("solaredge").run()
    at.text_input(key=f"dc_{key}_solaredge_system_id").input("1234567").run()
    at.button(key=f"dc_test_{key}").click().run()  # no API Key: refused before any call
    assert status_of(at, key).startswith("**Failed**")

    at.text_input(key=f"dc_{key}_solaredge_system_id").input("7654321").run()
    assert status_of(at, key) == STALE
    at.text_input(key=f"dc_{key}_solaredge_system_id").input("1234567").run()
    assert status_of(at, key).startswith("**Failed**")
    at.text_input(key=f"dc_{key}_solaredge_api_key").input("K" * 32).run()
    assert status_of(at, key) == STALE
    at.selectbox(key=f"dc_{key}_api_provider").set_value("simulator").run()
    assert status_of(at, key) == STALE  # the simulator was never tested in this session


def test_a_saved_result_shows_until_its_settings_change(app_env: Path) -> None:
    at = open_connections(app_env)
    source = next(s for s in catalog().sources if s.name == "Rooftop PV Array")
    key = f"s{source.id}"
    at.button(key=f"dc_test_{key}").click().run()
    at.button(key="dc_save_all").click().run()
    assert not at.exception
    stored = catalog().source(source.id)
    assert stored is not None and stored.api.connection_status.value == "connected"
    assert status_of(at, key).startswith("**Connected**")  # the stored result, the session's test forgotten
    at.run()  # a rerun with nothing changed keeps it
    assert status_of(at, key).startswith("**Connected**")

    at.selectbox(key=f"dc_{key}_api_provider").set_value("enphase").run()
    assert status_of(at, key) == STALE
    at.selectbox(key=f"dc_{key}_api_provider").set_value("solaredge").run()
    at.button(key=f"dc_test_{key}").click().run()  # a test of other settings: its result goes with them
    assert status_of(at, key).startswith("**Failed**")
    at.selectbox(key=f"dc_{key}_api_provider").set_value("simulator").run()
    assert status_of(at, key).startswith("**Connected**")  # the saved settings, with their saved result

    # A result of other settings is not saved either: the changed settings are stored untested.
    at.button(key=f"dc_test_{key}").click().run()
    assert status_of(at, key).startswith("**Connected**")
    at.selectbox(key=f"dc_{key}_api_provider").set_value("solaredge").run()
    at.selectbox(key=f"dc_{key}_update_frequency").set_value("1hour").run()  # within the free V2 quota
    at.text_input(key=f"dc_{key}_solaredge_system_id").input("1234567").run()
    at.text_input(key=f"dc_{key}_solaredge_api_key").input("K" * 32).run()
    at.button(key="dc_save_all").click().run()
    assert not at.exception
    stored = catalog().source(source.id)
    assert stored is not None and stored.api.connection_status.value == "untested"


def test_names_are_shown_as_typed_not_as_markdown(app_env: Path) -> None:
    """A name with characters markdown acts on ("_east_ roof #2", italic otherwise) reaches the page escaped."""
    at = open_connections(app_env)
    source = next(s for s in catalog().sources if s.name == "Rooftop PV Array")
    key = f"s{source.id}"
    at.text_input(key=f"dc_{key}_name").input("_east_ roof #2").run()
    at.button(key="dc_save_all").click().run()
    assert not at.exception and not at.error
    titles = [m.value for m in at.main.get_by_key(f"source-{key}").markdown]
    assert r"**\_east\_ roof \#2**" in titles
    assert r"Saved: changed **\_east\_ roof \#2**." in [b.value for b in at.success]


def test_only_a_stored_secret_is_said_to_be_shown_masked(app_env: Path) -> None:
    at = open_connections(app_env)
    source = next(s for s in catalog().sources if s.name == "Rooftop PV Array")
    key = f"s{source.id}"
    at.selectbox(key=f"dc_{key}_api_provider").set_value("solaredge").run()
    at.text_input(key=f"dc_{key}_solaredge_api_key").input("K" * 32).run()
    hints = [c.value for c in at.caption if c.value.startswith("Stored encrypted.")]
    assert hints == ["Stored encrypted."]  # typed, not yet saved: nothing stored is shown
    at.text_input(key=f"dc_{key}_solaredge_system_id").input("1234567").run()
    at.selectbox(key=f"dc_{key}_update_frequency").set_value("1day").run()  # within the key's free budget
    at.button(key="dc_save_all").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "api_key" in catalog().source(source.id).secret_names
    again = open_connections(app_env)  # a new visit shows the stored key masked
    hints = [c.value for c in again.caption if c.value.startswith("Stored encrypted.")]
    assert hints == ["Stored encrypted. The stored value is shown masked; leave it to keep it."]


def test_an_enphase_sources_live_stream_settings_are_checked_and_saved(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATACONN_ENPHASE_PLAN", "kilowatt")
    at = open_connections(app_env)
    source = next(s for s in catalog().sources if s.name == "Rooftop PV Array")
    key = f"s{source.id}"
    at.selectbox(key=f"dc_{key}_api_provider").set_value("enphase").run()
    assert not at.checkbox(key=f"dc_{key}_enphase_stream_on_live").value  # off by default: each stream is a call
    assert at.text_input(key=f"dc_{key}_enphase_stream_schedule").value == "off"
    at.text_input(key=f"dc_{key}_enphase_client_id").input(enphase.SANDBOX_CLIENT_ID)
    at.text_input(key=f"dc_{key}_enphase_system_id").input(str(enphase.SANDBOX_SYSTEM_ID))
    at.text_input(key=f"dc_{key}_enphase_client_secret").input(enphase.SANDBOX_CLIENT_SECRET)
    at.text_input(key=f"dc_{key}_enphase_app_api_key").input(enphase.SANDBOX_API_KEY)
    at.checkbox(key=f"dc_{key}_enphase_stream_on_live").check()
    at.text_input(key=f"dc_{key}_enphase_stream_schedule").input("sunrise")
    at.button(key="dc_save_all").click().run()
    assert not at.exception
    assert any("Stream Schedule must be off, always, daylight" in e.value for e in at.error), [
        e.value for e in at.error
    ]
    assert not catalog().source(source.id).api.stream_on_live  # nothing saved

    at.text_input(key=f"dc_{key}_enphase_stream_schedule").input("07:00-19:00").run()
    assert any("About 4,464 calls a month of the Kilowatt plan's 50,000" in c.value for c in at.caption)
    at.button(key="dc_save_all").click().run()
    assert not at.exception and any(t.value.startswith("Saved:") for t in at.toast)
    api = catalog().source(source.id).api
    assert (api.stream_on_live, api.stream_schedule) == (True, "07:00-19:00")


def cadence_notes(at: AppTest, draft_key: str) -> list[str]:
    """What the source's panel says its Update Frequency stands for, when nothing polls it."""
    box = at.main.get_by_key(f"source-{draft_key}")
    return [c.value for c in box.caption if c.value.startswith("Not a poll interval")]


def test_the_update_frequency_of_a_push_or_mqtt_source_is_said_to_be_its_expected_cadence(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_connections(app_env)
    source = next(s for s in catalog().sources if s.name == "Rooftop PV Array")  # the demo's simulator source
    key = f"s{source.id}"
    assert cadence_notes(at, key) == []  # polled: the frequency is how often the collector polls it

    at.selectbox(key=f"dc_{key}_api_provider").set_value("push").run()
    assert cadence_notes(at, key) == [
        "Not a poll interval: the cadence its sender is expected to keep. Live shows the source stale, and the No"
        " data alert fires, once no reading has arrived for 30 min (2 x this)."
    ]
    at.selectbox(key=f"dc_{key}_update_frequency").set_value("1hour").run()
    at.selectbox(key=f"dc_{key}_api_provider").set_value("mqtt").run()
    assert cadence_notes(at, key) == [
        "Not a poll interval: how often readings of its device are expected (stored each minute while it"
        " publishes). Live shows the source stale, and the No data alert fires, once no reading has arrived for 2 h"
        " (2 x this)."
    ]
    monkeypatch.setenv("DATACONN_ALERT_NO_DATA_FACTOR", "3")  # the alert's factor is a setting; Live's is not
    at.run()
    assert cadence_notes(at, key)[0].endswith(
        "Live shows the source stale after 2 h without a reading (2 x this); the No data alert fires after 3 h"
        " (3 x this)."
    )
    at.selectbox(key=f"dc_{key}_api_provider").set_value("simulator").run()
    assert not at.exception and cadence_notes(at, key) == []
