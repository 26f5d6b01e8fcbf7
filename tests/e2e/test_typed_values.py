"""Every typed value is used: fields filled with the keyboard and left with Tab, then Test or Save clicked at once.

Unlike `test_connection_flow`, nothing here presses Enter to commit: a user types, presses Tab, and clicks. Streamlit
commits a text box when focus leaves the whole widget, so a control inside the widget (the password box's own
"Show password" button, a help icon) kept the value in the browser; these tests fail if such a control comes back.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.e2e.test_connection_flow import (
    MASK,
    NEW_SOURCE,
    STATUS,
    _choose,
    _enable_api,
    _expect_saved_toast,
    _go_to_data_connections,
    _idle,
    _open,
    _save_all,
    _stored_source,
)
from tests.fakes import enphase, solaredge_v1, solaredge_v2

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("seed_demo", [True], ids=["demo"])]

# Per provider: the fields in screen order (Tab order) with what to type, and what Test Connection then says.
PROVIDERS = {
    "SolarEdge": (
        [("Site ID", str(solaredge_v2.SANDBOX_SITE_IDS[0])), ("API Key", solaredge_v2.SANDBOX_API_KEY)],
        re.compile(r"Connected"),
    ),
    "SolarEdge V1 (legacy)": (
        [("Site ID", solaredge_v1.SANDBOX_SITE_ID), ("API Key", solaredge_v1.SANDBOX_API_KEY)],
        re.compile(r"Connected"),
    ),
    # Not authorised yet: the test gets as far as asking for the owner's consent, which needs every typed value.
    "Enphase": (
        [
            ("Client ID", enphase.SANDBOX_CLIENT_ID),
            ("System ID", str(enphase.SANDBOX_SYSTEM_ID)),
            ("Client Secret", enphase.SANDBOX_CLIENT_SECRET),
            ("Application API Key", enphase.SANDBOX_API_KEY),
        ],
        re.compile(r"Re-authorise|[Aa]uthori[sz]"),
    ),
}
REQUIRED = re.compile(r"is required|must not be empty")


def _type_in(page: Page, box: Locator, text: str) -> None:
    """Click into a box and type as a person does, fast, without committing it with Enter."""
    box.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(text)


def _new_source(page: Page, name: str, provider: str) -> Locator:
    page.get_by_role("button", name="Add Data Source").click()
    source = page.locator(NEW_SOURCE)
    expect(source).to_have_count(1)
    _type_in(page, source.get_by_label("Source Name", exact=True), name)
    page.keyboard.press("Tab")
    _type_in(page, source.get_by_label("Capacity (kW)", exact=True), "10")
    page.keyboard.press("Tab")
    _idle(page)
    _enable_api(source)
    _choose(source, "API Provider", provider, "V1" if "V1" in provider else provider)
    _choose(source, "Update Frequency", "1 hour", "hour")  # within every free plan's monthly budget
    _idle(page)
    return source


def _type_credentials(page: Page, source: Locator, fields: list[tuple[str, str]]) -> None:
    """The first field is clicked, the rest reached with Tab, and the last one left with Tab too."""
    source.get_by_label(fields[0][0], exact=True).click()
    for _label, value in fields:
        page.keyboard.press("Control+A")
        page.keyboard.type(value)
        page.keyboard.press("Tab")


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_credentials_left_with_tab_are_tested(page: Page, app_server: str, provider: str) -> None:
    fields, connected = PROVIDERS[provider]
    _open(page, f"{app_server}/", "Control Room")
    _go_to_data_connections(page)
    source = _new_source(page, "Typed", provider)
    _type_credentials(page, source, fields)
    source.get_by_role("button", name="Test Connection").click()

    status = source.locator(STATUS)
    expect(status).to_contain_text(connected)
    expect(status).not_to_contain_text(REQUIRED)
    for label, value in fields:
        expect(source.get_by_label(label, exact=True)).to_have_value(value)


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_credentials_left_with_tab_are_saved(page: Page, app_server: str, provider: str, tmp_path: Path) -> None:
    fields, _connected = PROVIDERS[provider]
    _open(page, f"{app_server}/", "Control Room")
    _go_to_data_connections(page)
    source = _new_source(page, "Typed and saved", provider)
    _type_credentials(page, source, fields)
    _save_all(page)
    _expect_saved_toast(page)

    saved = _stored_source(page, "Typed and saved")
    expect(saved).to_have_count(1)
    expect(saved.get_by_label("Capacity (kW)", exact=True)).to_have_value("10")
    for label, value in fields:
        box = saved.get_by_label(label, exact=True)
        if box.get_attribute("type") == "password":
            expect(box).to_have_value(MASK)  # stored, and shown masked
            assert value not in page.content()
        else:
            expect(box).to_have_value(value)


def test_a_new_sources_defaults_survive_typing_at_once(page: Page, app_server: str) -> None:
    """Typing into a source the moment it appears keeps Carbon Intensity and Cost at their defaults."""
    _open(page, f"{app_server}/", "Control Room")
    _go_to_data_connections(page)
    page.get_by_role("button", name="Add Data Source").click()
    source = page.locator(NEW_SOURCE)
    name = source.get_by_label("Source Name", exact=True)
    name.click()
    page.keyboard.type("Quick")
    page.keyboard.press("Tab")
    _idle(page)
    expect(source.get_by_label("Carbon Intensity (g/kWh)", exact=True)).to_have_value("0")
    expect(source.get_by_label("Cost (per MWh)", exact=True)).to_have_value("0")
    _type_in(page, source.get_by_label("Capacity (kW)", exact=True), "5")
    _save_all(page)
    _expect_saved_toast(page)
    saved = _stored_source(page, "Quick")
    expect(saved.get_by_label("Carbon Intensity (g/kWh)", exact=True)).to_have_value("0")
