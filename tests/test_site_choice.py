"""The site the dashboard works on (issue 11, point 6): `core.catalog.site_choice` on real DuckDB files, then the pages
through AppTest: the shared picker, `?site=` links, the last site used across sessions, and Control Room keeping
the site you act on open with what you just added in it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.catalog import catalog as cat
from core.catalog import site_choice
from core.config import load_settings
from core.models import Category, SiteIn
from core.runtime import open_runtime
from core.store.store import Store, StoreBusy
from tests.crafting import APP, SourceSpec, app_store, craft_site, write_readings
from tests.holder import held

CREATE_SITE = "FormSubmitter:cr_add_site_form-Create Site"
LIVE = "pages/live.py"
HISTORY = "pages/history.py"


def _site(store: Store, name: str) -> int:
    return cat.create_site(store, SiteIn(name=name, latitude=50.0, longitude=4.0, timezone="Europe/Brussels")).id


def _site_with_data(store: Store, name: str) -> int:
    site_id, sources = craft_site(store, [SourceSpec(Category.PROD, "solar")], name=name)
    start = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    write_readings(store, next(iter(sources.values())), start, [1000.0] * 8)
    return site_id


def _stored(store: Store) -> list[tuple[str, str]]:
    with store.connect(read_only=True) as con:
        return con.execute("SELECT key, value FROM app_state WHERE key = ?", [site_choice.LAST_SITE_KEY]).fetchall()


# --- core ----------------------------------------------------------------------------------------------------


def test_remember_site_writes_only_a_change(store: Store) -> None:
    first, second = _site(store, "Alpha"), _site(store, "Beta")
    assert site_choice.last_site_id(store) is None
    assert site_choice.remember_site(store, first) is True
    assert site_choice.remember_site(store, first) is False  # the same choice again writes nothing
    assert _stored(store) == [(site_choice.LAST_SITE_KEY, str(first))]
    assert site_choice.remember_site(store, second) is True
    assert site_choice.last_site_id(store) == second


def test_default_is_the_last_site_used_else_the_first_with_data_else_the_first(store: Store) -> None:
    assert site_choice.default_site(store, cat.load_catalog(store)) is None
    empty = _site(store, "Alpha")
    assert site_choice.default_site(store, cat.load_catalog(store)).id == empty  # type: ignore[union-attr]
    with_data = _site_with_data(store, "Beta")
    _site_with_data(store, "Gamma")
    catalog = cat.load_catalog(store)
    assert site_choice.sites_with_data(store) == {with_data, catalog.sites[2].id}
    assert site_choice.default_site(store, catalog).id == with_data  # type: ignore[union-attr]

    site_choice.remember_site(store, empty)
    assert site_choice.default_site(store, catalog).id == empty  # type: ignore[union-attr]
    cat.delete_site(store, empty)  # the last site used is gone: back to the first with data
    assert site_choice.default_site(store, cat.load_catalog(store)).id == with_data  # type: ignore[union-attr]


def test_a_stored_value_that_is_not_an_id_is_ignored(store: Store) -> None:
    site = _site(store, "Alpha")
    with store.transaction() as con:
        con.execute("INSERT INTO app_state (key, value) VALUES (?, 'north')", [site_choice.LAST_SITE_KEY])
    assert site_choice.last_site_id(store) is None
    assert site_choice.default_site(store, cat.load_catalog(store)).id == site  # type: ignore[union-attr]


def test_find_site_by_id_or_by_name(store: Store) -> None:
    north, named_digits = _site(store, "North Plant"), _site(store, "2024")
    catalog = cat.load_catalog(store)
    assert site_choice.find_site(catalog, str(north)).id == north  # type: ignore[union-attr]
    assert site_choice.find_site(catalog, " north plant ").id == north  # type: ignore[union-attr]
    assert site_choice.find_site(catalog, "NORTH PLANT").id == north  # type: ignore[union-attr]
    assert site_choice.find_site(catalog, "2024").id == named_digits  # type: ignore[union-attr]  # no such id
    for unknown in ("", "   ", "999999", "South", "-1", "1.5"):
        assert site_choice.find_site(catalog, unknown) is None


def test_remembering_on_a_held_database_says_busy_and_changes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "held.duckdb", lock_timeout_s=0.5)
    from core.store.schema import migrate

    migrate(store)
    site = _site(store, "Alpha")
    with held(store.path, read_only=True), pytest.raises(StoreBusy):
        site_choice.remember_site(store, site, timeout_s=0.3)
    assert site_choice.last_site_id(store) is None


# --- pages ---------------------------------------------------------------------------------------------------


@pytest.fixture
def fleet(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """No demo: "Alpha" without data, "Beta" with a few readings, "Gamma" without data."""
    monkeypatch.setenv("DATACONN_SEED_DEMO", "false")
    store = open_runtime(load_settings()).store  # migrated, as the app's first start leaves it
    return {"Alpha": _site(store, "Alpha"), "Beta": _site_with_data(store, "Beta"), "Gamma": _site(store, "Gamma")}


def _session(page: str | None = None, site: str | None = None) -> AppTest:
    """A fresh browser session (a reload, a new tab), opening `page` with `?site=` when given."""
    app = AppTest.from_file(APP, default_timeout=60)
    if site is not None:
        app.query_params["site"] = site
    app.run()
    if page is not None:
        app.switch_page(page).run()
    assert not app.exception
    return app


def _open_sites(app: AppTest) -> list[str]:
    """The titles of the Control Room's site expanders that are open."""
    return [e.label for e in app.expander if "meter(s)" in e.label and e.proto.expanded]


def test_a_fresh_session_starts_on_the_first_site_with_data(fleet: dict[str, int]) -> None:
    live = _session(LIVE)
    assert live.selectbox(key="live_site").value == fleet["Beta"]
    assert live.query_params["site"] == str(fleet["Beta"])
    assert _open_sites(_session()) == ["**Beta** · Europe/Brussels · 1 meter(s)"]


def test_the_last_site_used_opens_a_new_session_on_every_page(fleet: dict[str, int]) -> None:
    live = _session(LIVE)
    live.selectbox(key="live_site").set_value(fleet["Gamma"]).run()
    assert live.query_params["site"] == str(fleet["Gamma"])
    live.switch_page(HISTORY).run()
    assert live.selectbox(key="hist_site").value == fleet["Gamma"]  # the choice is shared by the pages

    again = _session(HISTORY)  # a reload or a new tab, without the link
    assert again.selectbox(key="hist_site").value == fleet["Gamma"]
    assert _open_sites(_session()) == ["**Gamma** · Europe/Brussels · 0 meter(s)"]
    assert site_choice.last_site_id(app_store()) == fleet["Gamma"]


@pytest.mark.parametrize("how", ["id", "name"])
def test_a_link_opens_its_site_on_every_page(fleet: dict[str, int], how: str) -> None:
    link = str(fleet["Gamma"]) if how == "id" else "gamma"
    for page, key in ((LIVE, "live_site"), (HISTORY, "hist_site"), ("pages/kpis.py", "kpi_site")):
        assert _session(page, site=link).selectbox(key=key).value == fleet["Gamma"], page
    control_room = _session(site=link)
    assert _open_sites(control_room) == ["**Gamma** · Europe/Brussels · 0 meter(s)"]
    assert control_room.query_params["site"] == str(fleet["Gamma"])  # the address bar names it by id from then on


@pytest.mark.parametrize("link", ["999999", "Nowhere", "", "<b>x</b>"])
def test_a_link_to_no_site_is_ignored_for_the_default(fleet: dict[str, int], link: str) -> None:
    live = _session(LIVE, site=link)
    assert live.selectbox(key="live_site").value == fleet["Beta"]
    assert live.query_params["site"] == str(fleet["Beta"])  # the stale value is replaced
    assert not live.error


def test_a_database_held_for_writing_leaves_the_picker_working(fleet: dict[str, int]) -> None:
    store = app_store()
    with held(store.path, read_only=True):  # readers may open it, no writer may
        live = _session(LIVE)
        assert live.selectbox(key="live_site").value == fleet["Beta"]
        live.selectbox(key="live_site").set_value(fleet["Alpha"]).run()
        assert not live.exception and live.selectbox(key="live_site").value == fleet["Alpha"]
        assert live.query_params["site"] == str(fleet["Alpha"])
        live.switch_page(HISTORY).run()
        assert live.selectbox(key="hist_site").value == fleet["Alpha"]  # still the choice of the session
    assert site_choice.last_site_id(store) is None  # nothing could be stored meanwhile
    live.switch_page(LIVE).run()  # the next run once the file is free stores it
    assert site_choice.last_site_id(store) == fleet["Alpha"]


# --- Control Room --------------------------------------------------------------------------------------------


def test_create_site_then_add_meter_keep_that_site_open_with_the_meter(fleet: dict[str, int]) -> None:
    room = _session()
    assert _open_sites(room) == ["**Beta** · Europe/Brussels · 1 meter(s)"]
    room.text_input(key="cr_add_site_name").input("Delta")
    room.text_input(key="cr_add_site_lat").input("51")
    room.text_input(key="cr_add_site_lon").input("5")
    room.button(key=CREATE_SITE).click().run()
    delta = next(s.id for s in cat.load_catalog(app_store()).sites if s.name == "Delta")
    # The new site is open (the one you were on stays as it was), and it is the site every page shows now.
    assert _open_sites(room) == ["**Beta** · Europe/Brussels · 1 meter(s)", "**Delta** · Europe/Brussels · 0 meter(s)"]
    assert room.query_params["site"] == str(delta)

    room.text_input(key=f"cr_add_meter{delta}_name").input("Heat Pump")
    room.selectbox(key=f"cr_add_meter{delta}_cat").set_value(Category.CONS)
    room.button(key=f"FormSubmitter:cr_add_meter{delta}_form-Add Meter").click().run()
    delta_box = next(e for e in room.expander if "**Delta**" in e.label)
    assert delta_box.label == "**Delta** · Europe/Brussels · 1 meter(s)" and delta_box.proto.expanded
    assert [t.value for t in delta_box.text_input if t.label == "Meter Name"] == ["Heat Pump"]
    assert "Meter 'Heat Pump' added" in [t.value for t in room.toast]

    room.switch_page(LIVE).run()
    assert room.selectbox(key="live_site").value == delta


def test_every_action_on_a_site_leaves_it_open_and_chosen(fleet: dict[str, int]) -> None:
    """AppTest cannot click an expander's title (the browser test does), but it reaches the forms of a closed site:
    acting in one opens it, and makes it the site the other pages show."""
    room = _session()
    alpha = fleet["Alpha"]
    assert _open_sites(room) == ["**Beta** · Europe/Brussels · 1 meter(s)"]
    room.text_input(key=f"cr_add_meter{alpha}_name").input("Main Meter")
    room.button(key=f"FormSubmitter:cr_add_meter{alpha}_form-Add Meter").click().run()
    assert "**Alpha** · Europe/Brussels · 1 meter(s)" in _open_sites(room)
    assert room.query_params["site"] == str(alpha)

    gamma = fleet["Gamma"]
    room.text_input(key=f"cr_site{gamma}_name").input("Gamma West")  # a rename changes the expander's title
    room.button(key=f"FormSubmitter:cr_site{gamma}_form-Save Site").click().run()
    assert "**Gamma West** · Europe/Brussels · 0 meter(s)" in _open_sites(room)
    assert room.query_params["site"] == str(gamma)

    meter = next(m for m in cat.load_catalog(app_store()).meters if m.name == "Main Meter")
    room.text_input(key=f"cr_meter{meter.id}_name").input("Main Grid Meter")
    room.button(key=f"cr_meter{meter.id}_save").click().run()
    assert room.query_params["site"] == str(alpha)
    assert len(_open_sites(room)) == 3  # every site acted on stays open

    room.button(key=f"cr_meter{meter.id}_delete").click().run()
    room.button(key=f"cr_confirm_meter{meter.id}").click().run()
    assert "**Alpha** · Europe/Brussels · 0 meter(s)" in _open_sites(room)


def test_a_fleet_shows_the_linked_site(fleet: dict[str, int]) -> None:
    store = app_store()
    for n in range(10):  # 13 sites: one at a time, chosen in the picker
        _site(store, f"Plant {n:02d}")
    target = next(s.id for s in cat.load_catalog(store).sites if s.name == "Plant 04")
    room = _session(site="plant 04")
    assert room.selectbox(key="cr_site_pick").value == target
    assert _open_sites(room) == ["**Plant 04** · Europe/Brussels · 0 meter(s)"]
