"""Dates typed with the keyboard on History and KPIs apply on Tab, on Enter and on a click on another widget (issue 11).

Streamlit's date field is made of year/month/day segments and sends a typed date only when focus leaves the whole
field for another element: on its own, Enter did nothing and Tab stopped on the field's calendar button, so the page
kept showing the old dates (ui/typed_dates.js says how the pages fix it). Each test types digits into the segments as
a user does, checks that typing alone changed nothing on the page, then finishes one way and checks that what the
page shows (the KPI period caption, the History range caption) follows the typed dates.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.e2e.test_connection_flow import _idle, _open

pytestmark = pytest.mark.browser

SITE_ZONE = "Europe/Brussels"  # the demo site's
FINISHES = ("tab", "enter", "click")


def _site_today() -> date:
    return datetime.now(UTC).astimezone(ZoneInfo(SITE_ZONE)).date()


def _date_input(page: Page, label: str) -> Locator:
    return page.get_by_test_id("stDateInput").filter(has=page.get_by_test_id("stWidgetLabel").filter(has_text=label))


def _type_date(field: Locator, day: date, end: bool = False) -> None:
    """Click the year segment (of the range's end with `end`) and type the date's digits, as a user does."""
    name = re.compile(r"^year, .*end date$") if end else re.compile(r"^year, (?!.*end date$)")
    field.get_by_role("spinbutton", name=name).click()
    keyboard = field.page.keyboard
    keyboard.type(f"{day.year:04d}")  # each full segment moves on to the next one by itself
    keyboard.type(f"{day.month:02d}")
    keyboard.type(f"{day.day:02d}")


def _finish(page: Page, field: Locator, how: str, elsewhere: Locator) -> None:
    """End the typing one way: Tab, Enter, or a click on another widget (`elsewhere`)."""
    if how == "click":
        elsewhere.click()
        return
    page.keyboard.press("Tab" if how == "tab" else "Enter")
    # Focus goes where Tab always went, the field's calendar button, and the calendar pop-up is closed.
    expect(field.get_by_test_id("stDateInputCalendarButton")).to_be_focused()
    expect(page.get_by_test_id("stDateInputCalendar")).to_have_count(0)


def _kpi_caption(page: Page) -> Locator:
    return page.get_by_test_id("stMain").get_by_test_id("stCaptionContainer").filter(has_text=f" in {SITE_ZONE}")


def _open_custom_kpis(page: Page, app_server: str) -> None:
    _open(page, f"{app_server}/kpis", "KPIs")
    page.get_by_test_id("stRadio").get_by_text("Custom", exact=True).click()
    expect(_date_input(page, "From (site time)")).to_be_visible()
    _idle(page)


@pytest.mark.parametrize("how", FINISHES)
@pytest.mark.parametrize("seed_demo", [True], ids=["demo"])
def test_kpis_follow_typed_dates(page: Page, app_server: str, how: str) -> None:
    today = _site_today()
    first, last = today - timedelta(days=40), today - timedelta(days=10)
    _open_custom_kpis(page, app_server)
    caption = _kpi_caption(page)
    expect(caption).to_have_text(re.compile(rf"^{today.replace(day=1)}( to {today})? in {SITE_ZONE}"))
    start, end = _date_input(page, "From (site time)"), _date_input(page, "To (site time)")

    _type_date(start, first)
    expect(start.get_by_test_id("stDateInputField")).to_have_text(re.compile(first.strftime("%Y.*%m.*%d")))
    _idle(page)
    expect(caption).not_to_contain_text(str(first))  # typing alone sends nothing
    # A click "elsewhere" for the start date is the user's next step: the end date's field.
    _finish(page, start, how, elsewhere=end.get_by_role("spinbutton").first)
    expect(caption).to_have_text(re.compile(rf"^{first} to {today} in {SITE_ZONE}"))
    _idle(page)

    _type_date(end, last)
    _idle(page)
    expect(caption).to_have_text(re.compile(rf"^{first} to {today} in {SITE_ZONE}"))
    _finish(page, end, how, elsewhere=page.get_by_test_id("stExpander").filter(has_text="Production: formula"))
    expect(caption).to_have_text(f"{first} to {last} in {SITE_ZONE}")
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)


@pytest.mark.parametrize("how", FINISHES)
@pytest.mark.parametrize("seed_demo", [True], ids=["demo"])
def test_history_follows_typed_range(page: Page, app_server: str, how: str) -> None:
    today = _site_today()
    first, last = today - timedelta(days=20), today - timedelta(days=15)
    _open(page, f"{app_server}/history", "History")
    caption = page.get_by_test_id("stMain").get_by_test_id("stCaptionContainer").filter(has_text="times in")
    expect(caption).to_contain_text(f"{today - timedelta(days=6)} to {today}, times in {SITE_ZONE}.")
    field = _date_input(page, "Dates (site time")

    _type_date(field, first)
    page.keyboard.press("Tab")  # from the start's last segment to the end's first: still inside the range field
    expect(field.get_by_role("spinbutton", name=re.compile(r"^year, .*end date$"))).to_be_focused()
    page.keyboard.type(f"{last.year:04d}")
    page.keyboard.type(f"{last.month:02d}")
    page.keyboard.type(f"{last.day:02d}")
    expect(field.get_by_test_id("stDateInputField")).to_have_text(re.compile(f"{first}.*{last}"))
    _idle(page)
    expect(caption).to_contain_text(f"{today - timedelta(days=6)} to {today}, times in")  # nothing sent yet

    _finish(page, field, how, elsewhere=page.get_by_label("Years back", exact=True))
    expect(caption).to_contain_text(f"{first} to {last}, times in {SITE_ZONE}.")
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)


@pytest.mark.parametrize("seed_demo", [True], ids=["demo"])
def test_kpi_calendar_clicks_still_apply(page: Page, app_server: str) -> None:
    """The pop-up calendar keeps working beside the keyboard: a day clicked there is applied at once."""
    today = _site_today()
    earlier = (today.replace(day=1) - timedelta(days=1)).replace(day=15)  # the 15th of the previous month
    _open_custom_kpis(page, app_server)
    start = _date_input(page, "From (site time)")
    start.get_by_test_id("stDateInputCalendarButton").click()
    calendar = page.get_by_test_id("stDateInputCalendar")
    expect(calendar).to_be_visible()
    calendar.get_by_role("button", name="Previous month").click()
    calendar.get_by_role("button", name=re.compile(rf"\b{earlier:%B} 15, {earlier.year}\b")).click()
    expect(_kpi_caption(page)).to_have_text(re.compile(rf"^{earlier} to {today} in {SITE_ZONE}"))
