"""When the collector keeps an Enphase system's live stream open: an `ApiSettings.stream_schedule` read, checked in a
user's terms and asked "now?".

The forms (docs/real-time.md, "The Enphase live stream"):
- "off" (the default): never on a schedule; Live may still open one while someone watches, when the source allows it;
- "always": day and night;
- "daylight": while the sun is above the horizon at the site (a PV system has nothing to stream at night but the
  load, and half the calls);
- "HH:MM-HH:MM": between these times of the site's day; a window that ends before it starts runs over midnight
  ("22:00-06:00").

Every stream opened is a call of the Enphase plan (one per `duration`, 300 s at most: 12 an hour, 288 a day streamed
around the clock), so `calls_per_day` tells the page and the quota planner what a schedule costs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pandas as pd

from core.models import ApiSettings, Site
from core.sun import sun_elevation

OFF, ALWAYS, DAYLIGHT = "off", "always", "daylight"
_HOURS = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]):([0-5]\d)$")
SCHEDULE_HELP = 'off, always, daylight, or hours of the site\'s day such as "07:00-19:00"'
STREAM_CALL_S = 300  # how long each stream the collector opens lasts (the `duration` header's maximum)


@dataclass(frozen=True)
class StreamSchedule:
    kind: str  # OFF, ALWAYS, DAYLIGHT or "hours"
    start: time | None = None
    end: time | None = None

    def active(self, now: datetime, site: Site) -> bool:
        """Whether the collector keeps the stream open at `now` (aware) for a system at `site`."""
        if self.kind == OFF:
            return False
        if self.kind == ALWAYS:
            return True
        if self.kind == DAYLIGHT:
            elevation = sun_elevation(site.latitude, site.longitude, pd.DatetimeIndex([now]))
            return bool(elevation[0] > 0)
        assert self.start is not None and self.end is not None
        local = now.astimezone(ZoneInfo(site.timezone)).time().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # over midnight

    def share_of_day(self) -> float | None:
        """The part of a day it streams (daylight: None, it depends on the season and the site)."""
        if self.kind == OFF:
            return 0.0
        if self.kind == ALWAYS:
            return 1.0
        if self.kind == DAYLIGHT:
            return None
        assert self.start is not None and self.end is not None
        minutes = (_minutes(self.end) - _minutes(self.start)) % (24 * 60)
        return minutes / (24 * 60)

    @property
    def text(self) -> str:
        if self.kind in (OFF, ALWAYS, DAYLIGHT):
            return self.kind
        assert self.start is not None and self.end is not None
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _minutes(moment: time) -> int:
    return moment.hour * 60 + moment.minute


def parse_schedule(text: str) -> StreamSchedule:
    """The schedule a setting names; `ValueError` with a message in the user's terms otherwise."""
    value = text.strip().lower()
    if value in ("", OFF):
        return StreamSchedule(OFF)
    if value in (ALWAYS, DAYLIGHT):
        return StreamSchedule(value)
    match = _HOURS.match(value)
    if match is None:
        raise ValueError(f"must be {SCHEDULE_HELP}, not {text.strip()!r}")
    start = time(int(match[1]), int(match[2]))
    end = time(int(match[3]), int(match[4]))
    if start == end:
        raise ValueError(f'cannot start and end at the same time ({text.strip()}): use "always" to stream all day')
    return StreamSchedule("hours", start, end)


def schedule_problems(api: ApiSettings) -> dict[str, str]:
    """{field: message} for a stream schedule that cannot be read (the message reads on after the field's label);
    empty when it can."""
    try:
        parse_schedule(api.stream_schedule)
    except ValueError as exc:
        return {"stream_schedule": str(exc)}
    return {}


def calls_per_day(schedule: StreamSchedule, *, daylight_share: float = 0.5) -> int:
    """About how many calls of the plan a schedule costs a day, one per stream of `STREAM_CALL_S`; daylight counts
    as `daylight_share` of the day."""
    share = schedule.share_of_day()
    share = daylight_share if share is None else share
    return round(share * timedelta(days=1).total_seconds() / STREAM_CALL_S)


def cost_note(text: str, plan: str) -> str:
    """What a schedule typed on the page costs, in the plan's terms (`plan`: the Enphase plan setting)."""
    from core.providers.enphase.spec import PLANS, plan_key  # the spec imports this module

    try:
        key = plan_key(plan)
    except ValueError:
        key = "watt"
    if key == "watt":
        return "The Watt plan has no live stream: set the Enphase plan setting to Kilowatt or above to stream."
    try:
        schedule = parse_schedule(text)
    except ValueError:
        return f"Schedule: {SCHEDULE_HELP}."
    if schedule.kind == OFF:
        return f"Off: no stream on a schedule. Or {SCHEDULE_HELP.removeprefix('off, ')}."
    calls = calls_per_day(schedule) * 31  # the longest month, as the quota planner counts
    rough = " (daylight: about half the day)" if schedule.kind == DAYLIGHT else ""
    return (
        f"About {calls:,} calls a month{rough} of the {key.title()} plan's {PLANS[key][1]:,}: one per "
        f"{STREAM_CALL_S // 60}-minute stream, shared with this application's polls."
    )
