"""Import Sites in real Chromium against a fake SolarEdge V2 account of 50 sites: list, a selection the budget
refuses, one it carries, the import, and a second listing that skips what was imported.

The API key is typed and left with Tab (not Enter): the value on screen must be the one used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from core.catalog import catalog as cat
from core.store.store import Store

pytestmark = pytest.mark.browser

TIMEOUT_MS = 20_000
KEY = "sandbox-solaredge-key"  # tests.fakes.solaredge_v2.SANDBOX_API_KEY
SITES = 50

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def fake_vendors() -> Iterator[dict[str, str]]:
    """The conftest's vendors, but the SolarEdge V2 account holds 50 sites."""
    from tests.fakes import enphase, solaredge_v2
    from tests.fakes.server import serve

    with contextlib.ExitStack() as stack:
        v2 = stack.enter_context(
            serve(solaredge_v2.create_app(solaredge_v2.FakeState(sites=solaredge_v2.fleet_sites(SITES))))
        )
        en = stack.enter_context(serve(enphase.create_app(enphase.FakeState())))
        yield {
            "DATACONN_SOLAREDGE_BASE_URL": f"{v2}/v2",
            "DATACONN_ENPHASE_BASE_URL": f"{en}/api/v4",
            "DATACONN_ENPHASE_AUTH_URL": f"{en}/oauth",
        }


def _idle(page: Page) -> None:
    app = page.get_by_test_id("stApp")
    expect(app).to_have_attribute("data-test-connection-state", "CONNECTED")
    expect(app).to_have_attribute("data-test-script-state", "notRunning")


def _pick(page: Page, label: str, option: str) -> None:
    """Add `option` to a multiselect (or choose it in a selectbox) by typing it and clicking it."""
    combo = page.get_by_role("combobox", name=label, exact=True)
    combo.click()
    combo.fill(option)
    listed = page.get_by_role("option", name=option, exact=True)
    expect(listed).to_be_visible()
    listed.click()
    page.keyboard.press("Escape")
    _idle(page)


def _button(page: Page, name: str) -> Locator:
    return page.get_by_role("button", name=name, exact=True)


def test_a_50_site_account_is_listed_checked_against_the_budget_and_imported(
    page: Page, app_server: str, tmp_path: Path
) -> None:
    page.goto(f"{app_server}/import-sites")
    expect(page.get_by_role("heading", name="Import Sites", exact=True)).to_be_visible()
    _idle(page)

    key_box = page.get_by_label("SolarEdge V2 API Key", exact=True)
    key_box.fill(KEY)
    key_box.press("Tab")
    _button(page, "List sites").click()
    expect(page.get_by_role("heading", name=f"{SITES} site(s) in this account")).to_be_visible()
    _idle(page)

    # Every site with every channel, every hour: far beyond the key's 2,000 monthly credits.
    _button(page, "Select all").click()
    _idle(page)
    _pick(page, "Channels besides PV", "Load and grid meters")
    _pick(page, "Channels besides PV", "Battery")
    expect(page.get_by_text("allows 2,000 calls a month").first).to_be_visible()
    expect(_button(page, f"Import {SITES} site(s)")).to_be_disabled()
    page.screenshot(path=str(tmp_path / "import-sites-refused.png"), full_page=True)

    # Three sites with the channels SolarEdge reports for each (site 1: meters and battery; 2 and 3: PV only), at
    # the frequency the page proposes: it fits.
    _button(page, "Clear").click()
    _idle(page)
    for n in (1, 2, 3):
        _pick(page, "Sites to import", f"Fleet Site {n:03d} ({4_000_000 + n})")
    _button(page, "Check meters of 3 chosen site(s)").click()
    expect(_button(page, "Check meters of 0 chosen site(s)")).to_be_disabled()
    _idle(page)
    proposal = page.get_by_text("Fastest frequency this budget carries for the selection: every ")
    expect(proposal).to_be_visible()
    every = proposal.inner_text().rsplit("every ", 1)[1].rstrip(".")
    _pick(page, "Update frequency", f"every {every}")
    expect(page.get_by_text("calls/day").first).to_be_visible()
    expect(page.get_by_text("allows 2,000 calls a month")).to_have_count(0)
    _button(page, "Import 3 site(s)").click()

    expect(page.get_by_text("Imported 3 site(s) with 6 meter(s) and 8 source(s).")).to_be_visible()
    expect(page.get_by_role("link", name="Open the Control Room")).to_be_visible()
    expect(page.get_by_role("link", name="Open Data Connections")).to_be_visible()
    _idle(page)
    page.screenshot(path=str(tmp_path / "import-sites.png"), full_page=True)

    store = Store(tmp_path / "dataconn.duckdb")
    catalog = cat.load_catalog(store)
    assert sorted({s.api.system_id for s in catalog.sources}) == ["4000001", "4000002", "4000003"]
    assert sorted(
        m.name for m in catalog.meters_of(next(s.id for s in catalog.sites if s.name == "Fleet Site 001"))
    ) == [
        "Battery",
        "Consumption",
        "Injection",
        "Solar",
    ]
    assert all(s.secret_names == {"api_key"} for s in catalog.sources)  # each uses the key...
    with store.connect(read_only=True) as con:  # ...stored once
        assert con.sql("SELECT count(*) FROM source_secrets").fetchall() == [(1,)]
    assert KEY.encode() not in (tmp_path / "dataconn.duckdb").read_bytes()

    # Listing again leaves the three out.
    _button(page, "List sites").click()
    expect(page.get_by_text("3 of them are configured already and are skipped.")).to_be_visible()
