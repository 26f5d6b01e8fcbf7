"""The analyst's flow in real Chromium on a database with a month of demo history: the Live page updates on its own,
the History range changes, and a chart's data downloads as CSV."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_connection_flow import _idle, _open
from tests.seeding import seed_history

LIVE_REFRESH_S = 3
UPDATED = re.compile(r"Updated at (\d\d:\d\d:\d\d)")


@pytest.fixture
def history_server(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The dashboard on a database that already holds the demo site's month of history (as `make run` leaves it
    after the collector's first pass), with the Live panel reloading every few seconds."""
    monkeypatch.setenv("DATACONN_DB_PATH", str(tmp_path / "dataconn.duckdb"))
    monkeypatch.setenv("DATACONN_KEY_FILE", str(tmp_path / "secret.key"))
    monkeypatch.delenv("DATACONN_SECRET_KEYS", raising=False)
    monkeypatch.setenv("DATACONN_SEED_DEMO", "true")
    seed_history()
    monkeypatch.setenv("DATACONN_LIVE_REFRESH_S", str(LIVE_REFRESH_S))
    yield request.getfixturevalue("app_server")


def _updated_at(page: Page) -> str:
    caption = page.get_by_text(UPDATED)
    expect(caption).to_be_visible()
    match = UPDATED.search(caption.inner_text())
    assert match
    return match.group(1)


def test_live_updates_itself_and_history_downloads_the_chosen_range(page: Page, history_server: str) -> None:
    _open(page, f"{history_server}/live", "Live")
    expect(page.get_by_test_id("stMetric").filter(has_text="PV")).to_be_visible()
    expect(page.get_by_text("stale", exact=True)).to_have_count(0)  # the collector's pass has just run
    first = _updated_at(page)
    url = page.url
    # No click, no reload: the fragment reruns on its own and the caption moves on.
    expect(page.get_by_text(UPDATED)).not_to_have_text(re.compile(re.escape(first)), timeout=4 * LIVE_REFRESH_S * 1000)
    assert page.url == url

    page.get_by_test_id("stSidebar").get_by_role("link", name="History").click()
    expect(page.get_by_role("heading", name="History", exact=True)).to_be_visible()
    _idle(page)
    today = datetime.now(UTC).astimezone(ZoneInfo("Europe/Brussels")).date()
    start, end = today - timedelta(days=3), today - timedelta(days=2)
    # Streamlit's range picker keeps its two ends in hidden date inputs; setting both commits the range.
    ends = page.locator('[class*="st-key-hist_range"] input[type="date"]')
    ends.first.fill(start.isoformat(), force=True)
    ends.last.fill(end.isoformat(), force=True)
    ends.last.press("Escape")
    page.get_by_role("heading", name="History", exact=True).click()
    _idle(page)
    energy = page.get_by_role("button", name="Download CSV").nth(1)  # power, then energy
    expect(energy).to_be_visible()

    with page.expect_download() as download_info:
        energy.click()
    download = download_info.value
    assert download.suggested_filename == f"Demo-Rooftop-hour-{start}-{end}-energy.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    days = {row["bucket_start_local"][:10] for row in rows}
    assert days == {start.isoformat(), end.isoformat()}
    series = {row["series"] for row in rows}
    assert {"Production", "Load", "Grid import", "Grid export"} <= series
    zone = ZoneInfo("Europe/Brussels")
    midnight = lambda day: datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)  # noqa: E731
    hours = (midnight(end + timedelta(days=1)) - midnight(start)) // timedelta(hours=1)  # 47 to 49 across DST
    assert len(rows) == len(series) * hours  # every hourly bucket of the two local days, per series, none dropped
    assert all(row["energy_kwh"] != "" for row in rows)  # the demo month has no gap
