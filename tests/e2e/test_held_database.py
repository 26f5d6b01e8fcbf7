"""A database another program holds, in real Chromium (issue 11): the page says so at once with a spinner, and
shows its content again by itself, without a click, once the file is free. Live too, whether the file was held
when the page opened or while its panel refreshed itself.

The holder is a real process with the file open read-write (tests/holder.py), as an analyst's `duckdb` session.
The server's lock wait is 10 minutes, far past every `expect` here: a page that waited it out before saying
"held", as pages did, never shows the box in time.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.e2e.test_connection_flow import _idle, _open
from tests.holder import held

pytestmark = pytest.mark.browser

WAITING = re.compile(r"Waiting for the database: another program holds dataconn\.duckdb since \d\d:\d\d")


@pytest.fixture
def seed_demo(monkeypatch: pytest.MonkeyPatch) -> bool:
    """The demo site, a lock wait no page may sit out, and Live's panel refreshing every 2 s (its minimum).

    Overrides conftest's `seed_demo`, which `app_server` uses: the environment is set before the server starts."""
    monkeypatch.setenv("DATACONN_LOCK_TIMEOUT_S", "600")
    monkeypatch.setenv("DATACONN_LIVE_REFRESH_S", "2")
    return True


def _waiting(page: Page) -> Locator:
    return page.get_by_test_id("stExpander").filter(has_text=WAITING)


def _expect_waiting(page: Page) -> None:
    box = _waiting(page)
    expect(box).to_have_count(1)
    _idle(page)  # the spinner stays once the run is over: the box is still waiting
    expect(box.get_by_test_id("stExpanderIconSpinner")).to_be_visible()
    expect(box.get_by_test_id("stExpanderIconCheck")).to_have_count(0)
    expect(box).to_contain_text("Close the other program")
    expect(page.get_by_test_id("stException")).to_have_count(0)


def _database(tmp_path: Path) -> Path:
    return tmp_path / "dataconn.duckdb"  # where `app_server` points the dashboard


def test_a_page_opened_on_a_held_file_shows_its_content_once_the_file_is_free(
    page: Page, app_server: str, tmp_path: Path
) -> None:
    _open(page, f"{app_server}/kpis", "KPIs")
    period = page.get_by_test_id("stRadio")
    expect(period).to_be_visible()
    with held(_database(tmp_path)):
        page.reload()
        expect(page.get_by_role("heading", name="KPIs", exact=True)).to_be_visible()
        _expect_waiting(page)
        expect(period).to_have_count(0)
    # No click from here on: the box looks at the file every few seconds and reruns the page.
    expect(_waiting(page)).to_have_count(0)
    expect(period).to_be_visible()
    _idle(page)


def test_live_recovers_by_itself_when_the_file_was_held_during_its_refresh(
    page: Page, app_server: str, tmp_path: Path
) -> None:
    _open(page, f"{app_server}/live", "Live")
    tiles = page.get_by_test_id("stMetric")
    expect(tiles).to_have_count(6)
    with held(_database(tmp_path)):
        _expect_waiting(page)  # the panel's own refresh, a couple of seconds later, met the held file
    expect(_waiting(page)).to_have_count(0)
    expect(tiles).to_have_count(6)
    expect(page.get_by_test_id("stMain")).to_contain_text("Updated at ")


def test_live_opened_on_a_held_file_shows_its_panel_once_the_file_is_free(
    page: Page, app_server: str, tmp_path: Path
) -> None:
    _open(page, f"{app_server}/live", "Live")  # the dashboard has started: it built its runtime
    with held(_database(tmp_path)):
        page.reload()
        expect(page.get_by_role("heading", name="Live", exact=True)).to_be_visible()
        _expect_waiting(page)
        expect(page.get_by_test_id("stMetric")).to_have_count(0)
    expect(_waiting(page)).to_have_count(0)
    expect(page.get_by_test_id("stMetric")).to_have_count(6)
