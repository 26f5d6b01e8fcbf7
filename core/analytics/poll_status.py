"""What the collector last saw of each source: its newest poll, since when it fails, why it stopped, its newest
reading. Data Connections shows this beside the last connection test, whichever is newer (a source that polls fine
is not "Untested" because nobody pressed Test).

Read in one short read-only connection over the last `LOOKBACK` of `collector_runs` (the API Health page reads the
same rows, over the same bound, for its own figures). Runs that made no vendor call (`skipped`, `spooled`) are not
polls. Stored errors were redacted when written; `scrub` is applied again as defence in depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from core.analytics.api_health import LOOKBACK, NOT_POLLS
from core.analytics.live import Reading, format_age, format_value, newest_readings
from core.providers.answers import scrub
from core.store.store import Store, ts_literal

VALUE_LOOKBACK = timedelta(days=3)  # longer than the slowest poll (daily) plus its re-read


@dataclass(frozen=True)
class PollStatus:
    polled_at: datetime | None  # the newest poll, whatever its outcome; None when none in `LOOKBACK`
    ok: bool  # the newest poll succeeded
    failing_since: datetime | None  # the first failed poll after the last success, when the newest one failed
    error: str | None  # the newest failed poll's message, when the newest poll failed
    stopped_reason: str | None  # the collector stopped polling it until its configuration changes
    reading: Reading | None  # the newest reading with a value within `VALUE_LOOKBACK` (the interval in progress
    # is often stored without one until the vendor completes it)


def poll_statuses(store: Store, source_ids: Sequence[int], now: datetime) -> dict[int, PollStatus]:
    """Per source that the collector polled in `LOOKBACK` or stopped: its `PollStatus` at `now`."""
    ids = [int(i) for i in source_ids]
    if not ids:
        return {}
    listed = ", ".join(str(i) for i in ids)
    skip = ", ".join(f"'{o}'" for o in NOT_POLLS)
    with store.connect(read_only=True) as con:
        rows = con.sql(
            f"""
            WITH runs AS (
                SELECT source_id, started_at, outcome, error FROM collector_runs
                WHERE source_id IN ({listed}) AND started_at >= {ts_literal(now - LOOKBACK)}
                  AND outcome NOT IN ({skip})
            ),
            newest AS (
                SELECT source_id, max(started_at) AS polled_at,
                       arg_max({{'outcome': outcome, 'error': error}}, started_at) AS last,
                       max(started_at) FILTER (WHERE outcome = 'ok') AS ok_at
                FROM runs GROUP BY source_id
            ),
            failing AS (
                SELECT r.source_id, min(r.started_at) AS since FROM runs r JOIN newest n USING (source_id)
                WHERE r.outcome <> 'ok' AND (n.ok_at IS NULL OR r.started_at > n.ok_at) GROUP BY r.source_id
            ),
            stopped AS (
                SELECT source_id, stopped_reason FROM source_state
                WHERE source_id IN ({listed}) AND stopped_reason IS NOT NULL
            )
            SELECT source_id, n.polled_at, n.last.outcome, n.last.error, f.since, s.stopped_reason
            FROM newest n FULL JOIN stopped s USING (source_id) LEFT JOIN failing f USING (source_id)
            """
        ).fetchall()
        polled = [int(r[0]) for r in rows]
        readings = newest_readings(con, polled, now - VALUE_LOOKBACK, now, with_value=True)
    statuses = {}
    for source_id, polled_at, outcome, error, since, stopped in rows:
        ok = outcome == "ok"
        statuses[int(source_id)] = PollStatus(
            polled_at=polled_at,
            ok=ok,
            failing_since=None if ok else since,
            error=None if ok or error is None else scrub(error),
            stopped_reason=None if stopped is None else scrub(stopped),
            reading=readings.get(int(source_id)),
        )
    return statuses


@dataclass(frozen=True)
class PollLine:
    """One status line for the page: `kind` is "ok", "failing" or "stopped"; `text` follows the bold word."""

    kind: str
    headline: str
    text: str


def newer_than_test(poll: PollStatus | None, last_tested: datetime | None) -> bool:
    """Whether the collector's view of a source is newer than its last connection test (a stop always is: it holds
    until the source's configuration changes, whatever a test said before)."""
    if poll is None:
        return False
    if poll.stopped_reason is not None:
        return True
    return poll.polled_at is not None and (last_tested is None or poll.polled_at > last_tested)


# How the newest write is named for each way readings arrive (`ProviderSpec.delivery`): only polled sources are polled.
WRITTEN = {"poll": "polled", "push": "readings received", "subscribe": "minute written"}
SOURCE_OF_LINE = {
    "poll": "the collector's last poll",
    "push": "the newest pushed readings",
    "subscribe": "the collector's newest MQTT minute",
}


def describe(
    poll: PollStatus, now: datetime, tz: tzinfo, unit: str = "W", unreported: str = "", delivery: str = "poll"
) -> PollLine:
    """ "Connected · polled 3 min ago, 1.2 kW" / "Failing since 09:40: <reason>" / "Stopped: <reason>". `unit` is
    the source's (a battery's state of charge is in %). `unreported` says what the vendor does not report when its
    polls succeed but none brought this source a value ("SolarEdge reports no battery for this site"): a channel
    the vendor site lacks (its polls move on without it: `core.collect.poll_result.newest_finals`). `delivery`
    words a pushed or MQTT source's line ("readings received 3 min ago"): nobody polls those."""
    if poll.stopped_reason is not None:
        return PollLine("stopped", "Stopped", poll.stopped_reason)
    assert poll.polled_at is not None  # `newer_than_test` let only polled sources through
    if poll.ok:
        power = ""
        if poll.reading is not None and poll.reading.value is not None:
            at = poll.reading.ts.astimezone(tz).strftime("%H:%M")  # the interval's start, in the site's time
            power = f", {format_value(poll.reading.value, unit)} at {at}"
        elif unreported:
            power = f"; {unreported}"
        written = WRITTEN.get(delivery, "polled")
        return PollLine("ok", "Connected", f"{written} {format_age(now - poll.polled_at)}{power}")
    since = (poll.failing_since or poll.polled_at).astimezone(tz)
    when = since.strftime("%H:%M") if since.date() == now.astimezone(tz).date() else since.strftime("%Y-%m-%d %H:%M")
    return PollLine("failing", f"Failing since {when}", poll.error or "the vendor's answer could not be used")


def unreported(vendor: str, what: str) -> str:
    """What the page says of a source none of whose successful polls brought a value (see `describe`)."""
    return f"{vendor} reports no {what.lower()} for this site" if vendor and what else ""
