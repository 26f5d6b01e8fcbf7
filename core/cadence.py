"""How often and how far back a vendor site is polled: the schedule rules the collector follows, and that the quota
planner and API Health reckon with (so they live here, below every layer, rather than in the collection).

- The collector (`jobs.collector`) polls a vendor site every m to m + `jitter_minutes(m)` minutes, so sites do not
  all poll at the start of the period.
- A poll re-reads `RELOOK` before the newest stored final interval, because vendors correct recent data late;
  intervals that end less than `SETTLE` ago are stored as not final and replaced when re-read.
- A regular poll's window is therefore at most its period (with jitter) plus SETTLE, two intervals and RELOOK
  long (`poll_span`): 3.5 to 4.5 hours at the seed's frequencies, about 17 hours at 12 h and 30 hours daily. The
  clients cut a window longer than one request may ask for into several requests (`split_windows` under each
  client's `max_window`: SolarEdge V2 12 h, Enphase 1 day, SolarEdge V1 25 days), and the quota planner counts
  them (`core.catalog.quota_plan`).
"""

from __future__ import annotations

from datetime import timedelta

RELOOK = timedelta(hours=2)
SETTLE = timedelta(hours=1)
LONGEST_INTERVAL = timedelta(minutes=15)  # the coarsest interval a client stores (a bookmark is an interval's start)


def jitter_minutes(period_min: int) -> int:
    """The collector's spread (`jobs.collector`): a vendor site is polled every m to m + this many minutes, so sites
    do not all poll at the start of the period."""
    return max(1, period_min // 10)


def poll_span(period_min: int) -> timedelta:
    """The longest regular window of a vendor site polled every `period_min` minutes, when all goes well: the
    previous poll, up to a jittered period ago, left the bookmark at the start of the newest interval that had ended
    SETTLE before it (on the interval grid, so up to two intervals further back); the window starts RELOOK before
    that bookmark and ends now (`core.collect.pass_inputs.window_for`)."""
    period = timedelta(minutes=period_min + jitter_minutes(period_min))
    return period + SETTLE + 2 * LONGEST_INTERVAL + RELOOK
