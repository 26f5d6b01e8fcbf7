"""The connection flow of the original spec, clicked through in real Chromium against `streamlit run app.py`.

Waits are Playwright `expect(...)` assertions only. Streamlit text inputs outside a form commit their value on Enter
(or blur), so `_commit` presses Enter after filling; inputs inside a form are sent by the form's submit button.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from core.catalog import catalog as cat
from core.store.store import Store

pytestmark = pytest.mark.browser

TIMEOUT_MS = 20_000  # a cold Streamlit run (imports, first DuckDB open) can take several seconds
SECRET = "sk-test-SECRET-999"
MASK = re.compile(r"^\u2022+$")  # what a stored secret looks like on the page
POWER = re.compile(r"current power -?[\d,]+(\.\d+)? kW")
NEW_SOURCE = '[class*="st-key-source-new-"]'
STORED_SOURCE = '[class*="st-key-source-s"]'
STATUS = '[class*="st-key-status-"]'
AT_LEAST_ZERO = "must be at least 0"  # in words: Streamlit's markdown would show a spaced ">=" as "≥"

expect.set_options(timeout=TIMEOUT_MS)  # process-wide; only browser tests use `expect`


# --- helpers ------------------------------------------------------------------------------------------------


def _idle(page: Page) -> None:
    """No script run in progress, the websocket up and no modal open.

    Best effort on its own (a rerun just requested may not have started yet): the assertions that follow wait for
    the rerun's visible effect.
    """
    app = page.get_by_test_id("stApp")
    expect(app).to_have_attribute("data-test-connection-state", "CONNECTED")
    expect(app).to_have_attribute("data-test-script-state", "notRunning")
    # A modal (e.g. Streamlit's "Page not found") makes the whole app inert: fail here, with a clear message.
    expect(page.get_by_test_id("stDialog")).to_have_count(0)


def _open(page: Page, url: str, heading: str) -> None:
    """Load a URL in a new session and wait until its script run has finished."""
    page.goto(url)
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    _idle(page)


def _go_to_data_connections(page: Page) -> None:
    page.get_by_test_id("stSidebar").get_by_role("link", name="Data Connections").click()
    expect(page.get_by_role("heading", name="Data Connections", exact=True)).to_be_visible()
    expect(page.get_by_role("tab", name="Solar (PROD)")).to_have_attribute("aria-selected", "true")
    _idle(page)


def _commit(scope: Locator, label: str, value: str) -> Locator:
    """Fill a text input outside a form and commit it with Enter (which reruns the script)."""
    box = scope.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    expect(box).to_have_value(value)
    return box


def _choose(scope: Locator, label: str, option: str, query: str | None = None) -> None:
    """Pick an option of a selectbox (a combobox whose listbox opens in a portal) by typing `query` and clicking.

    The query should filter the list down to a few entries: typing the currently selected text shows the whole list
    (virtualized, scrolled to the selection), where options re-render under the pointer.
    """
    combo = scope.get_by_role("combobox", name=label, exact=True)
    combo.click()
    combo.fill(query or option)
    listed = combo.page.get_by_role("option", name=option, exact=True)
    expect(listed).to_be_visible()
    listed.click()
    expect(listed).to_have_count(0)  # the list closed: the option was chosen
    expect(combo).to_have_value(option)


def _expand(expander: Locator) -> None:
    """Open an expander (unless it is open already) and wait for its opening animation: while it runs, a selectbox
    inside does not open."""
    if expander.locator("details").get_attribute("open") is None:
        expander.locator("summary").click()
    expect(expander.locator("details")).to_have_attribute("open", "")
    expander.page.wait_for_function(
        "el => el.getAnimations({subtree: true}).length === 0", arg=expander.element_handle()
    )


def _enable_api(source: Locator) -> None:
    switch = source.get_by_role("switch", name="Enable API")
    expect(switch).not_to_be_checked()
    source.get_by_text("Enable API", exact=True).click()
    expect(switch).to_be_checked()
    expect(source.get_by_role("combobox", name="API Provider", exact=True)).to_be_visible()


def _stored_source(page: Page, name: str) -> Locator:
    """The container of a saved source, found by its title."""
    return page.locator(STORED_SOURCE).filter(has=page.get_by_text(name, exact=True))


def _save_all(page: Page) -> None:
    page.get_by_role("button", name="Save All Connections").click()


def _expect_saved_toast(page: Page) -> None:
    expect(page.get_by_test_id("stToastText").filter(has_text=re.compile(r"^\s*Saved: "))).to_be_visible()
    _idle(page)


def _screenshot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


# --- tests --------------------------------------------------------------------------------------------------


def test_site_meter_source_test_save_and_reload(page: Page, app_server: str, tmp_path: Path) -> None:
    _open(page, f"{app_server}/", "Control Room")
    expect(page.get_by_text("No sites yet: add one above.")).to_be_visible()

    # Control Room: a site, then a PROD meter in it.
    add_site = page.get_by_test_id("stExpander").filter(has=page.locator("summary", has_text="Add a site"))
    _expand(add_site)
    add_site.get_by_label("Site Name", exact=True).fill("Test Plant")
    add_site.get_by_label("Latitude", exact=True).fill("50.85")
    add_site.get_by_label("Longitude", exact=True).fill("4.35")
    _choose(add_site, "Time Zone", "Europe/Brussels", query="Brussels")
    add_site.get_by_role("button", name="Create Site").click()

    site = page.get_by_test_id("stExpander").filter(has=page.locator("summary", has_text="Test Plant"))
    expect(site.locator("summary")).to_contain_text("Test Plant · Europe/Brussels · 0 meter(s)")
    expect(site.get_by_label("Latitude", exact=True)).to_have_value("50.85")
    expect(site.get_by_label("Longitude", exact=True)).to_have_value("4.35")
    _idle(page)

    site.get_by_label("New Meter Name", exact=True).fill("Solar Meter")
    expect(site.get_by_role("combobox", name="Meter Category", exact=True)).to_have_value("PROD · Solar / Production")
    site.get_by_role("button", name="Add Meter").click()
    meter = site.locator('[class*="st-key-meter-"]')
    expect(meter).to_have_count(1)
    expect(meter.get_by_label("Meter Name", exact=True)).to_have_value("Solar Meter")
    expect(meter.get_by_role("combobox", name="Category", exact=True)).to_have_value("PROD · Solar / Production")
    expect(site.locator("summary")).to_contain_text("1 meter(s)")
    _idle(page)

    # Data Connections: a new source on that meter, tested against the simulator, then saved.
    _go_to_data_connections(page)
    expect(page.get_by_role("heading", name="Solar Meter")).to_be_visible()
    page.get_by_role("button", name="Add Data Source").click()
    source = page.locator(NEW_SOURCE)
    expect(source).to_have_count(1)
    _commit(source, "Source Name", "Main Solar Array")
    expect(source.get_by_text("Main Solar Array", exact=True)).to_be_visible()  # the title follows the name
    expect(source.get_by_role("combobox", name="Source Type", exact=True)).to_have_value("Solar")
    _commit(source, "Capacity (kW)", "500")
    _commit(source, "Carbon Intensity (g/kWh)", "0")
    _commit(source, "Cost (per MWh)", "0")
    _enable_api(source)
    expect(source.get_by_role("combobox", name="API Provider", exact=True)).to_have_value("Simulator")
    _idle(page)

    source.get_by_role("button", name="Test Connection").click()
    status = source.locator(STATUS)
    expect(status).to_contain_text("Connected")
    expect(status).to_contain_text(POWER)
    expect(status).not_to_contain_text("Last tested: never")

    _save_all(page)
    _expect_saved_toast(page)
    expect(page.get_by_test_id("stToastText").filter(has_text="1 added")).to_be_visible()
    expect(page.locator(NEW_SOURCE)).to_have_count(0)

    # A fresh session reads everything back from the database.
    page.reload()
    expect(page.get_by_role("heading", name="Data Connections", exact=True)).to_be_visible()
    if "/data-connections" not in page.url:
        _go_to_data_connections(page)
    _idle(page)
    saved = _stored_source(page, "Main Solar Array")
    expect(saved).to_have_count(1)
    expect(saved.get_by_label("Source Name", exact=True)).to_have_value("Main Solar Array")
    expect(saved.get_by_role("combobox", name="Source Type", exact=True)).to_have_value("Solar")
    expect(saved.get_by_label("Capacity (kW)", exact=True)).to_have_value("500")
    expect(saved.get_by_label("Carbon Intensity (g/kWh)", exact=True)).to_have_value("0")
    expect(saved.get_by_label("Cost (per MWh)", exact=True)).to_have_value("0")
    expect(saved.get_by_role("switch", name="Enable API")).to_be_checked()
    expect(saved.get_by_role("combobox", name="API Provider", exact=True)).to_have_value("Simulator")
    status = saved.locator(STATUS)
    expect(status).to_contain_text("Connected")
    expect(status).to_contain_text(POWER)
    expect(status).to_contain_text(re.compile(r"Last tested: \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"))
    expect(status).not_to_contain_text("never")
    _screenshot(page, tmp_path, "connection-flow")


@pytest.mark.parametrize("seed_demo", [True], ids=["demo"])
def test_negative_capacity_is_rejected_and_nothing_is_saved(page: Page, app_server: str, tmp_path: Path) -> None:
    _open(page, f"{app_server}/", "Control Room")
    _go_to_data_connections(page)
    source = page.locator(STORED_SOURCE).first
    expect(source.get_by_label("Source Name", exact=True)).to_have_value("Rooftop PV Array")
    expect(source.get_by_label("Capacity (kW)", exact=True)).to_have_value("120")

    capacity = _commit(source, "Capacity (kW)", "-5")
    _idle(page)
    _save_all(page)

    # The message stands right under the field (same column), and the summary says nothing was saved.
    capacity_column = source.get_by_test_id("stColumn").filter(has=page.get_by_label("Capacity (kW)", exact=True))
    expect(capacity_column).to_have_count(1)
    expect(capacity_column.get_by_test_id("stAlert")).to_contain_text(AT_LEAST_ZERO)
    summary = page.get_by_test_id("stAlert").filter(has_text="nothing was saved")
    expect(summary.first).to_be_visible()
    expect(summary.first).to_contain_text("Rooftop PV Array")
    expect(summary.first).to_contain_text(f"Capacity (kW) {AT_LEAST_ZERO}")  # named by its label
    expect(page.get_by_test_id("stToastText").filter(has_text=re.compile(r"^\s*Saved: "))).to_have_count(0)
    expect(capacity).to_have_value("-5")  # the typed value stays for the user to fix
    _idle(page)

    page.reload()
    expect(page.get_by_role("heading", name="Data Connections", exact=True)).to_be_visible()
    _idle(page)
    source = page.locator(STORED_SOURCE).first
    expect(source.get_by_label("Source Name", exact=True)).to_have_value("Rooftop PV Array")
    expect(source.get_by_label("Capacity (kW)", exact=True)).to_have_value("120")
    expect(page.get_by_test_id("stAlert").filter(has_text="nothing was saved")).to_have_count(0)
    _screenshot(page, tmp_path, "negative-capacity")


@pytest.mark.parametrize("seed_demo", [True], ids=["demo"])
def test_solaredge_wrong_key_shows_the_reason_and_the_key_is_masked(
    page: Page, app_server: str, tmp_path: Path
) -> None:
    _open(page, f"{app_server}/", "Control Room")
    _go_to_data_connections(page)
    expect(page.get_by_role("heading", name="Rooftop PV")).to_be_visible()
    page.get_by_role("button", name="Add Data Source").click()
    source = page.locator(NEW_SOURCE)
    expect(source).to_have_count(1)
    _commit(source, "Source Name", "SE Array")
    _commit(source, "Capacity (kW)", "10")
    _enable_api(source)
    _choose(source, "API Provider", "SolarEdge")
    _commit(source, "Site ID", "3066774")  # a site the fake SolarEdge V2 server knows
    _commit(source, "API Key", SECRET)
    _idle(page)
    # The quota planner: the default 15 min does not fit the 2,000 monthly credits; 1 hour does.
    expect(
        source.get_by_text("every 15 min needs 2,976; every 30 min fits: 1,488 calls/month of 2,000.")
    ).to_be_visible()
    _choose(source, "Update Frequency", "1 hour", "hour")
    expect(source.get_by_text("744/month of 2,000 (37%)")).to_be_visible()

    source.get_by_role("button", name="Test Connection").click()
    status = source.locator(STATUS)
    expect(status).to_contain_text("Failed")
    expect(status).to_contain_text("SolarEdge rejected the API key (401")
    expect(status).not_to_contain_text("Connected")

    _save_all(page)
    _expect_saved_toast(page)
    saved = _stored_source(page, "SE Array")
    expect(saved).to_have_count(1)
    expect(saved.get_by_role("combobox", name="API Provider", exact=True)).to_have_value("SolarEdge")
    expect(saved.get_by_label("Site ID", exact=True)).to_have_value("3066774")
    api_key = saved.get_by_label("API Key", exact=True)
    expect(api_key).to_have_attribute("type", "password")
    expect(api_key).not_to_have_value(SECRET)
    expect(api_key).to_have_value(MASK)
    status = saved.locator(STATUS)
    expect(status).to_contain_text("Failed")
    expect(status).to_contain_text("SolarEdge rejected the API key (401")
    expect(status).not_to_contain_text("Connected")
    assert SECRET not in page.content()

    page.reload()
    expect(page.get_by_role("heading", name="Data Connections", exact=True)).to_be_visible()
    _idle(page)
    saved = _stored_source(page, "SE Array")
    expect(saved.get_by_label("API Key", exact=True)).to_have_value(MASK)
    expect(saved.locator(STATUS)).to_contain_text("SolarEdge rejected the API key (401")
    assert SECRET not in page.content()
    _screenshot(page, tmp_path, "solaredge-masked")


@pytest.mark.parametrize("seed_demo", [True], ids=["demo"])
def test_a_deep_link_on_a_fresh_server_opens_its_page(page: Page, app_server: str, tmp_path: Path) -> None:
    """A bookmark of Data Connections must work as the very first visit after a (re)start: no "Page not found"."""
    _open(page, f"{app_server}/data-connections", "Data Connections")
    expect(page.get_by_text("Page not found")).to_have_count(0)
    expect(page.get_by_role("tab", name="Solar (PROD)")).to_be_visible()
    expect(page.locator(STORED_SOURCE).first.get_by_label("Source Name", exact=True)).to_have_value("Rooftop PV Array")


def test_site_form_shows_each_problem_next_to_its_field(page: Page, app_server: str) -> None:
    _open(page, f"{app_server}/", "Control Room")
    add_site = page.get_by_test_id("stExpander").filter(has=page.locator("summary", has_text="Add a site"))
    _expand(add_site)
    add_site.get_by_label("Site Name", exact=True).fill("<b>Plant</b>")
    add_site.get_by_label("Latitude", exact=True).fill("48.2")
    add_site.get_by_label("Longitude", exact=True).fill("200")
    zone = add_site.get_by_role("combobox", name="Time Zone", exact=True)
    zone.click()
    zone.fill("Mars/Base")  # a zone that is not in the list, typed as a new option
    zone.press("Enter")
    expect(zone).to_have_value("Mars/Base")
    add_site.get_by_role("button", name="Create Site").click()
    _idle(page)

    alerts = add_site.get_by_test_id("stAlert")
    expect(alerts.filter(has_text="must not contain HTML")).to_have_count(1)
    expect(alerts.filter(has_text="must be at most 180")).to_have_count(1)
    expect(alerts.filter(has_text="must be an IANA name such as Europe/Brussels, not 'Mars/Base'")).to_have_count(1)
    expect(page.get_by_text("No sites yet: add one above.")).to_be_visible()  # nothing was saved


@pytest.mark.parametrize("seed_demo", [True], ids=["demo"])
def test_enphase_source_connects_through_the_full_oauth_flow(page: Page, app_server: str, tmp_path: Path) -> None:
    """Enter the app's credentials, save, authorise at (fake) Enphase, come back, and test: Connected."""
    from tests.fakes import enphase

    _open(page, f"{app_server}/", "Control Room")
    _go_to_data_connections(page)
    page.get_by_role("button", name="Add Data Source").click()
    source = page.locator(NEW_SOURCE)
    expect(source).to_have_count(1)
    _commit(source, "Source Name", "Enphase Roof")
    _commit(source, "Capacity (kW)", "7")
    _enable_api(source)
    _choose(source, "API Provider", "Enphase")
    _choose(source, "Update Frequency", "1 hour", "hour")  # the Watt plan's 1,000 calls a month
    _commit(source, "Client ID", enphase.SANDBOX_CLIENT_ID)
    _commit(source, "System ID", str(enphase.SANDBOX_SYSTEM_ID))
    _commit(source, "Client Secret", enphase.SANDBOX_CLIENT_SECRET)
    _commit(source, "Application API Key", enphase.SANDBOX_API_KEY)
    _idle(page)
    _save_all(page)
    _expect_saved_toast(page)

    saved = _stored_source(page, "Enphase Roof")
    saved.locator("summary", has_text="Authorize with Enphase").click()
    link = saved.get_by_role("link", name="Authorize with Enphase")
    expect(link).to_be_visible()
    expect(saved.locator(STATUS)).to_contain_text("Untested")

    # The owner approves at Enphase, which sends the browser back to the page with ?code=&state=.
    with page.context.expect_page() as opened:
        link.click()
    consent = opened.value
    expect(consent.get_by_role("heading", name="Allow access to your Enphase system?")).to_be_visible()
    consent.get_by_role("link", name="Approve").click()
    expect(consent.get_by_role("heading", name="Data Connections", exact=True)).to_be_visible()
    expect(consent.get_by_test_id("stToastText").filter(has_text="Enphase authorised Enphase Roof")).to_be_visible()
    _idle(consent)
    assert "code=" not in consent.url  # the one-time code does not linger in the address bar

    back = _stored_source(consent, "Enphase Roof")
    back.get_by_role("button", name="Test Connection").click()
    status = back.locator(STATUS)
    expect(status).to_contain_text("Connected")
    expect(status).to_contain_text(POWER)
    for secret in (enphase.SANDBOX_CLIENT_SECRET, enphase.SANDBOX_API_KEY):
        assert secret not in consent.content()
    _screenshot(consent, tmp_path, "enphase-oauth")

    # The owner's other system, imported from the authorised application, reads data on the same authorisation.
    consent.goto(f"{app_server}/import-sites")
    _idle(consent)
    consent.get_by_text("Enphase (authorised app)", exact=True).click()
    expect(consent.get_by_role("combobox", name="Authorised Enphase application", exact=True)).to_be_visible()
    _idle(consent)
    consent.get_by_role("button", name="List sites", exact=True).click()
    expect(consent.get_by_role("heading", name="2 site(s) in this account")).to_be_visible()
    _idle(consent)
    sites = consent.get_by_role("combobox", name="Sites to import", exact=True)  # a multiselect
    sites.click()
    sites.fill("Garage")
    consent.get_by_role("option", name="Sandbox Garage (698905956)", exact=True).click()
    consent.keyboard.press("Escape")
    _idle(consent)
    proposal = consent.get_by_text("Fastest frequency this budget carries for the selection: every ")
    expect(proposal).to_be_visible()
    every = proposal.inner_text().rsplit("every ", 1)[1].rstrip(".")
    _choose(consent, "Update frequency", f"every {every}")
    consent.get_by_role("button", name="Import 1 site(s)", exact=True).click()
    expect(consent.get_by_text("none needs its own")).to_be_visible()

    store = Store(tmp_path / "dataconn.duckdb")
    catalog = cat.load_catalog(store)
    garage = next(s for s in catalog.sites if s.name == "Sandbox Garage")
    consent.goto(f"{app_server}/data-connections?site={garage.id}")
    imported = _stored_source(consent, "PV")
    expect(imported.get_by_text("Uses the credentials of")).to_contain_text("Enphase Roof")
    expect(imported.get_by_text("Authorised through")).to_contain_text("Enphase Roof")
    imported.get_by_role("button", name="Test Connection").click()
    expect(imported.locator(STATUS)).to_contain_text("Connected")
    with store.connect(read_only=True) as con:
        holders = con.sql("SELECT count(*) FROM source_secrets WHERE name = 'oauth_tokens'").fetchall()
    assert holders == [(1,)]  # one authorisation, shared
    with store.connect(read_only=True) as con:
        owners = con.sql("SELECT DISTINCT source_id FROM source_secrets").fetchall()
    assert len(owners) == 1  # the application's credentials too
    _screenshot(consent, tmp_path, "enphase-shared-grant")
