"""A site's local days, in its IANA time zone, as UTC instants: the one home of the day boundaries that KPIs,
History and the alert rules share.

A local day starts at the site's midnight, so it lasts 23, 24 or 25 hours (DST). Data is judged up to the data cut:
`now` floored to the quarter hour, because the quarter hour in progress is not expected yet.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def site_today(now: datetime, timezone: str) -> date:
    """The site's local date at the instant `now`."""
    return now.astimezone(ZoneInfo(timezone)).date()


def local_midnight(day: date, timezone: str) -> datetime:
    """The UTC instant the site's local `day` starts."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def data_cut(now: datetime) -> datetime:
    """`now` floored to the quarter hour (UTC; site zones are offset by whole quarter hours)."""
    now = now.astimezone(UTC)
    floored = now - timedelta(minutes=now.minute % 15, seconds=now.second, microseconds=now.microsecond)
    return floored
