"""Saving keeps you where you were, and Enphase's consent by pasted code, in real Chromium with the keyboard."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_connection_flow import (
    NEW_SOURCE,
    POWER,
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
from tests.fakes import enphase

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("seed_demo", [True], ids=["demo"])]


def _type_into(page: Page, label: str, text: str, scope=None) -> None:
    box = (scope or page).get_by_label(label, exact=True)
    box.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(text)
    page.keyboard.press("Tab")


def test_saving_stays_on_the_tab_and_lists_what_was_saved(page: Page, app_server: str) -> None:
    _open(page, f"{app_server}/", "Control Room")
    _go_to_data_connections(page)
    tab = page.get_by_role("tab", name="Consumption (CONS)")
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true")
    _idle(page)
    panel = page.get_by_role("tabpanel")
    panel.get_by_role("button", name="Add Data Source").first.click()
    source = page.locator(NEW_SOURCE)
    expect(source).to_have_count(1)
    _type_into(page, "Source Name", "Office load", source)
    _type_into(page, "Capacity (kW)", "40", source)
    _idle(page)
    _save_all(page)
    _expect_saved_toast(page)

    expect(page.get_by_role("tab", name="Consumption (CONS)")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text="Saved: added Office load.")).to_be_visible()
    saved = _stored_source(page, "Office load")
    expect(saved).to_have_count(1)
    expect(saved).to_be_visible()


def test_a_pasted_enphase_code_authorises_the_source(page: Page, app_server: str, tmp_path: Path) -> None:
    """The owner approves at Enphase, which shows a code (no redirect URI registered); it is pasted on the page."""
    _open(page, f"{app_server}/", "Control Room")
    _go_to_data_connections(page)
    page.get_by_role("button", name="Add Data Source").first.click()
    source = page.locator(NEW_SOURCE)
    _type_into(page, "Source Name", "Enphase Roof", source)
    _type_into(page, "Capacity (kW)", "7", source)
    _idle(page)
    _enable_api(source)
    _choose(source, "API Provider", "Enphase")
    _choose(source, "Update Frequency", "1 hour", "hour")
    _type_into(page, "Client ID", enphase.SANDBOX_CLIENT_ID, source)
    _type_into(page, "System ID", str(enphase.SANDBOX_SYSTEM_ID), source)
    _type_into(page, "Client Secret", enphase.SANDBOX_CLIENT_SECRET, source)
    _type_into(page, "Application API Key", enphase.SANDBOX_API_KEY, source)
    _idle(page)
    _save_all(page)
    _expect_saved_toast(page)

    saved = _stored_source(page, "Enphase Roof")
    saved.locator("summary", has_text="Authorize with Enphase").click()
    link = saved.get_by_role("link", name="Get a code from Enphase")
    expect(link).to_be_visible()
    # Enphase's consent page without our redirect URI: after Approve it shows the code for the owner to copy.
    with page.context.expect_page() as opened:
        link.click()
    consent = opened.value
    consent.get_by_role("link", name="Approve").click()
    code = consent.locator("#code").inner_text().strip()
    assert code
    consent.close()

    code_box = saved.get_by_label("Authorization Code", exact=True)
    code_box.click()
    page.keyboard.type(code)
    page.keyboard.press("Tab")
    _idle(page)
    # The rerun that took the code leaves the expander open (a message vanishing above it used to close it).
    expect(saved.get_by_role("button", name="Complete Authorization")).to_be_visible()
    saved.get_by_role("button", name="Complete Authorization").click()
    expect(page.get_by_test_id("stToastText").filter(has_text="Enphase authorised Enphase Roof")).to_be_visible()
    _idle(page)

    saved = _stored_source(page, "Enphase Roof")
    saved.get_by_role("button", name="Test Connection").click()
    status = saved.locator(STATUS)
    expect(status).to_contain_text("Connected")
    expect(status).to_contain_text(POWER)
    assert code not in page.content()

    # The tokens are stored, encrypted: the file holds a grant for the source, and no token in plain text.
    db = tmp_path / "dataconn.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        names = {row[0] for row in con.sql("SELECT name FROM source_secrets").fetchall()}
    assert "oauth_tokens" in names
    assert code.encode() not in db.read_bytes()
