"""An Enphase source's live-stream schedule: read in a user's terms, asked "now?" in the site's time and sun, and
counted by the quota planner with the polls (a schedule the plan cannot carry is refused at Save)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.catalog.quota_plan import PlannedSource, check
from core.models import ApiSettings, Provider, Site, UpdateFrequency
from core.providers.enphase.stream_schedule import calls_per_day, parse_schedule, schedule_problems
from core.providers.registry import missing_credentials

BRUSSELS = Site(id=1, name="HQ", latitude=50.85, longitude=4.35, timezone="Europe/Brussels")


@pytest.mark.parametrize(
    ("text", "at_utc", "active"),
    [
        ("off", "2026-06-21T12:00", False),
        ("always", "2026-12-21T02:00", True),
        ("daylight", "2026-06-21T12:00", True),
        ("daylight", "2026-12-21T02:00", False),  # 03:00 in Brussels, December
        ("daylight", "2026-12-21T15:00", True),  # 16:00 local: the sun sets at about 16:40
        ("07:00-19:00", "2026-06-21T04:59", False),  # 06:59 local (summer time)
        ("07:00-19:00", "2026-06-21T05:00", True),  # 07:00 local
        ("07:00-19:00", "2026-06-21T17:00", False),  # 19:00 local: the end is not in
        ("22:00-06:00", "2026-12-21T23:30", True),  # 00:30 local: over midnight
        ("22:00-06:00", "2026-12-21T12:00", False),
        (" Always ", "2026-12-21T12:00", True),  # as a person types it
    ],
)
def test_a_schedule_is_asked_in_the_sites_time_and_sun(text: str, at_utc: str, active: bool) -> None:
    now = datetime.fromisoformat(at_utc).replace(tzinfo=UTC)
    assert parse_schedule(text).active(now, BRUSSELS) is active


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sometimes",
            "must be off, always, daylight, or hours of the site's day such as \"07:00-19:00\", not 'sometimes'",
        ),
        ("25:00-06:00", "must be off, always, daylight"),
        ("07:00-07:00", 'cannot start and end at the same time (07:00-07:00): use "always" to stream all day'),
    ],
)
def test_a_schedule_that_does_not_read_says_what_would(text: str, message: str) -> None:
    api = ApiSettings(use_api=True, api_provider=Provider.ENPHASE, system_id="1", client_id="c", stream_schedule=text)
    assert schedule_problems(api)["stream_schedule"].startswith(message)
    # The same check Save and the configuration import run (only when the API is on).
    assert missing_credentials(api, {"client_secret", "app_api_key"})["stream_schedule"].startswith(message)
    assert "stream_schedule" not in missing_credentials(api.model_copy(update={"use_api": False}), set())


def test_calls_a_day_follow_the_share_of_the_day_streamed() -> None:
    assert [calls_per_day(parse_schedule(t)) for t in ("off", "always", "07:00-19:00", "22:00-04:00")] == [
        0, 288, 144, 72
    ]  # fmt: skip


def test_the_quota_planner_counts_a_schedule_with_the_polls_and_says_so() -> None:
    def enphase(key: str, streams: int) -> PlannedSource:
        return PlannedSource(key, Provider.ENPHASE, "7", "app", "pv_w", UpdateFrequency.DAY1, True, streams)

    (quiet,) = check([enphase("s1", 0)], enphase_plan="kilowatt")
    assert quiet.fits and quiet.calls_per_day == 2  # a daily poll reads two windows
    (streaming,) = check([enphase("s1", 288)], enphase_plan="kilowatt")
    assert streaming.calls_per_day == 290 and streaming.fits  # 8,990 a month of 50,000
    (too_much,) = check([enphase("s1", 288)], enphase_plan="watt")
    assert not too_much.fits
    assert "for live-stream schedules: set one to off or to fewer hours" in too_much.message()
    # Two sources of one system share its stream: counted once.
    (shared,) = check([enphase("s1", 288), enphase("s2", 144)], enphase_plan="kilowatt")
    assert shared.calls_per_day == 290
