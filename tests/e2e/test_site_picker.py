"""The site you work on, in real Chromium (issue 11, point 6): the site picker keeps its choice across a reload, in
the address bar (a link opens the same site, by id or by name) and for a new tab without the link (the last site
used); Control Room keeps a site open after Create Site and Add Meter, done with the keyboard alone."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Locator, Page, expect

from core.catalog import catalog as cat
from core.models import SiteIn
from core.store.store import Store
from tests.e2e.test_connection_flow import _choose, _idle, _open

pytestmark = pytest.mark.browser


def _add_sites(tmp_path: Path, *names: str) -> dict[str, int]:
    """Sites created beside the running dashboard, in the database its server uses (short connections both)."""
    store = Store(tmp_path / "dataconn.duckdb", lock_timeout_s=10)
    site = SiteIn(name="x", latitude=50.85, longitude=4.35, timezone="Europe/Brussels")
    return {name: cat.create_site(store, site.model_copy(update={"name": name})).id for name in names}


def _picker(page: Page) -> Locator:
    return page.get_by_test_id("stMain").get_by_role("combobox", name="Site", exact=True)


def _site_box(page: Page, name: str) -> Locator:
    return page.get_by_test_id("stExpander").filter(has=page.locator("summary", has_text=f"{name} · "))


def _is_open(box: Locator) -> None:
    expect(box.locator("details")).to_have_attribute("open", "")


def test_the_picker_keeps_the_site_across_reloads_links_and_new_tabs(
    page: Page, app_server: str, tmp_path: Path
) -> None:
    _open(page, f"{app_server}/live", "Live")  # the server has migrated the database: sites can be added now
    sites = _add_sites(tmp_path, "Alpha Plant", "Zulu Plant")
    page.reload()
    expect(page.get_by_role("heading", name="Live", exact=True)).to_be_visible()
    _idle(page)
    expect(_picker(page)).to_have_value("Alpha Plant")  # no site used yet, none with data: the first by name

    _choose(page.get_by_test_id("stMain"), "Site", "Zulu Plant", query="Zulu")
    expect(page).to_have_url(re.compile(rf"[?&]site={sites['Zulu Plant']}(&|$)"))
    _idle(page)

    page.reload()
    expect(page.get_by_role("heading", name="Live", exact=True)).to_be_visible()
    _idle(page)
    expect(_picker(page)).to_have_value("Zulu Plant")

    other_tab = page.context.new_page()  # the URL opened elsewhere
    _open(other_tab, page.url, "Live")
    expect(_picker(other_tab)).to_have_value("Zulu Plant")

    # Another page, then a new tab without the link: both on the last site used.
    other_tab.get_by_test_id("stSidebar").get_by_role("link", name="History").click()
    expect(other_tab.get_by_role("heading", name="History", exact=True)).to_be_visible()
    _idle(other_tab)
    expect(_picker(other_tab)).to_have_value("Zulu Plant")
    expect(other_tab).to_have_url(re.compile(rf"/history\?(.*&)?site={sites['Zulu Plant']}(&|$)"))
    fresh = page.context.new_page()
    _open(fresh, f"{app_server}/kpis", "KPIs")
    expect(_picker(fresh)).to_have_value("Zulu Plant")

    # A link naming the site, and one naming no site (ignored: the default is used and replaces it).
    _open(fresh, f"{app_server}/history?site={quote('alpha plant')}", "History")
    expect(_picker(fresh)).to_have_value("Alpha Plant")
    expect(fresh).to_have_url(re.compile(rf"[?&]site={sites['Alpha Plant']}(&|$)"))
    _open(fresh, f"{app_server}/history?site=999999", "History")
    expect(_picker(fresh)).to_have_value("Alpha Plant")  # the last site used, which the link just chose
    expect(fresh.get_by_test_id("stException")).to_have_count(0)


def test_control_room_keeps_the_site_open_when_created_and_given_a_meter_by_keyboard(
    page: Page, app_server: str
) -> None:
    _open(page, f"{app_server}/", "Control Room")
    keyboard = page.keyboard

    add_site = page.get_by_test_id("stExpander").filter(has=page.locator("summary", has_text="Add a site"))
    _is_open(add_site)  # open by itself: there is no site yet
    add_site.locator("summary").focus()  # a keyboard user's Tabs reach the form's title, then its fields
    # Tab during the opening animation can skip fields that are not laid out yet: wait for it to end.
    page.wait_for_function("el => el.getAnimations({subtree: true}).length === 0", arg=add_site.element_handle())
    _tab_to(add_site.get_by_label("Site Name", exact=True))
    keyboard.type("Keyboard Plant")
    _tab_to(add_site.get_by_label("Latitude", exact=True))
    keyboard.type("50.85")
    _tab_to(add_site.get_by_label("Longitude", exact=True))
    keyboard.type("4.35")
    keyboard.press("Enter")  # submits the form: Create Site

    site = _site_box(page, "Keyboard Plant")
    expect(site.locator("summary")).to_contain_text("Keyboard Plant · Europe/Brussels · 0 meter(s)")
    _is_open(site)
    _idle(page)
    expect(page).to_have_url(re.compile(r"[?&]site=\d+(&|$)"))

    meter_name = site.get_by_label("New Meter Name", exact=True)
    meter_name.focus()
    keyboard.type("Rooftop PV")
    keyboard.press("Enter")  # submits the form: Add Meter
    meter = site.locator('[class*="st-key-meter-"]')
    expect(meter).to_have_count(1)
    expect(site.locator("summary")).to_contain_text("1 meter(s)")
    _is_open(site)  # the site's title changed (1 meter): it stays open
    expect(meter.get_by_label("Meter Name", exact=True)).to_have_value("Rooftop PV")
    expect(meter.get_by_label("Meter Name", exact=True)).to_be_in_viewport()
    _idle(page)

    # A second meter, and the site stays open again; then a reload opens the same site.
    meter_name.focus()
    keyboard.type("Grid Meter")
    keyboard.press("Enter")
    expect(site.locator('[class*="st-key-meter-"]')).to_have_count(2)
    _is_open(site)
    _idle(page)
    page.reload()
    expect(page.get_by_role("heading", name="Control Room", exact=True)).to_be_visible()
    _idle(page)
    _is_open(_site_box(page, "Keyboard Plant"))


def test_control_room_opens_the_site_you_open_and_leaves_a_closed_one_closed(
    page: Page, app_server: str, tmp_path: Path
) -> None:
    _open(page, f"{app_server}/", "Control Room")
    sites = _add_sites(tmp_path, "Alpha Plant", "Zulu Plant")
    _open(page, f"{app_server}/?site={sites['Zulu Plant']}", "Control Room")
    alpha, zulu = _site_box(page, "Alpha Plant"), _site_box(page, "Zulu Plant")
    _is_open(zulu)  # the link's site
    expect(alpha.locator("details")).not_to_have_attribute("open", "")

    alpha.locator("summary").click()  # opened by hand: it becomes the site the dashboard shows
    _is_open(alpha)
    expect(page).to_have_url(re.compile(rf"[?&]site={sites['Alpha Plant']}(&|$)"))
    _idle(page)
    zulu.locator("summary").click()  # closed by hand
    expect(zulu.locator("details")).not_to_have_attribute("open", "")
    _idle(page)

    alpha.get_by_label("New Meter Name", exact=True).fill("Main Meter")
    alpha.get_by_role("button", name="Add Meter").click()
    expect(alpha.locator("summary")).to_contain_text("1 meter(s)")
    _is_open(alpha)
    expect(zulu.locator("details")).not_to_have_attribute("open", "")  # an action elsewhere does not reopen it


def _focused(locator: Locator) -> bool:
    return bool(locator.evaluate("el => el === document.activeElement"))


def _tab_to(field: Locator, most: int = 4) -> None:
    """Press Tab until `field` has the focus, as a user does past a field's help or clear button; at most `most`
    presses, so a field Tab never reaches fails here."""
    for _ in range(most):
        field.page.keyboard.press("Tab")
        if _focused(field):
            return
    expect(field).to_be_focused()
