"""How far a source's data could have arrived by now: what coverage is judged against.

Polling every 15 minutes, the newest quarter hour is stored up to a poll period after it ends, and a vendor serves
an interval only some time after it ends (an Enphase gateway uploads about every 15 minutes; SolarEdge publishes
a quarter hour about 15 minutes after it closes, clients are advised to ask about 15 min 10 s later). Judged
against the clock, a healthy source would read a few percent short most of the time ("Data incomplete: 99.5 %" at
07:45, nothing at 07:20). So each source is judged up to `available_until`: the end of its newest interval that
its update frequency and its vendor's delay (`ProviderSpec.data_delay`) make available, or its newest stored
reading when that is later. A source without API (imported or manual data) has no schedule: it is judged up to
the clock, as before.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from core.models import ApiSettings, Provider, UpdateFrequency
from core.providers.registry import spec_of

STEP = timedelta(minutes=15)  # judged in whole quarter hours, as the KPIs cut their data


def available_until(
    use_api: bool,
    provider: Provider,
    frequency: UpdateFrequency,
    newest_end: datetime | None,
    cut: datetime,
) -> datetime:
    """The instant up to which a source's data could be stored by `cut`, at most `cut`."""
    if not use_api:
        return cut
    reachable = cut - timedelta(minutes=frequency.minutes) - spec_of(provider).data_delay
    reachable -= timedelta(seconds=reachable.timestamp() % STEP.total_seconds())  # floored to the quarter hour
    if newest_end is not None and newest_end > reachable:
        reachable = newest_end
    return min(reachable, cut)


def judged_until(api: ApiSettings, newest_end: datetime | None, cut: datetime) -> datetime:
    """`available_until` for a source's API settings."""
    return available_until(api.use_api, api.api_provider, api.update_frequency, newest_end, cut)


NEWEST_REACH = timedelta(days=3)  # no schedule waits longer than a day plus the vendor's delay


def newest_ends(con: duckdb.DuckDBPyConnection, source_ids: list[int], cut: datetime) -> dict[int, datetime]:
    """The end of each source's newest stored interval before `cut`, looking back `NEWEST_REACH` at most."""
    rows = con.execute(
        "SELECT source_id, max(ts + to_seconds(interval_s)) FROM readings"
        " WHERE source_id IN (SELECT UNNEST(?::BIGINT[])) AND ts >= ? AND ts < ? GROUP BY source_id",
        [source_ids, cut - NEWEST_REACH, cut],
    ).fetchall()
    return {int(source_id): end for source_id, end in rows}
