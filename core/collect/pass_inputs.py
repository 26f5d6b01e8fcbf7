"""What a collection pass reads before polling, and the time windows it asks the vendors for.

- The window re-reads `RELOOK` before the newest stored final interval; intervals that end less than `SETTLE` ago
  are stored as not final and replaced when re-read (`core.cadence`, with the regular window's length, `poll_span`).
- A source with no bookmark yet starts `FIRST_BACKFILL` back. After downtime the window runs from the bookmark,
  at most `MAX_WINDOW_PER_PASS` a pass, oldest first, so a long outage fills in order and never bursts the quota.
- Holes before the bookmark (`core.collect.gaps`) are re-read one vendor window per pass, oldest first, and only while
  more than `GAP_RESERVE` of the budget remains.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from pydantic import SecretStr

from core.cadence import RELOOK
from core.catalog import catalog as cat
from core.catalog.demo import outage_days_by_site
from core.catalog.vendor_sites import group_by_provider_site
from core.collect.gaps import oldest_gaps
from core.collect.source_health import GroupKey
from core.models import Source
from core.store.crypto import SecretBox
from core.store.secret_store import read_all_secrets
from core.store.source_state import SourceState, read_states
from core.store.store import Store

FIRST_BACKFILL = timedelta(days=1)
MAX_WINDOW_PER_PASS = timedelta(days=7)
# A provider without a vendor quota (the simulator) costs nothing to read, so it starts a month back in one pass:
# a newcomer's demo site has a month of history within a minute of `make run`.
UNMETERED_BACKFILL = timedelta(days=31)
GAP_RESERVE = 0.2  # gap fills leave this share of a vendor budget to the regular polls
READ_WAIT_S = 2.0  # how long a collector pass waits to read before going on with the inputs it read last


@dataclass
class PassInputs:
    """What a pass reads before polling, in one read-only connection. The collector keeps the last one, so it can
    go on polling (and spooling) while an outside program holds the file."""

    catalog: cat.Catalog
    states: dict[int, SourceState]
    secrets: dict[int, dict[str, SecretStr]]
    unreadable: dict[int, str]  # source id -> why its stored credentials cannot be decrypted
    gaps: dict[int, datetime]  # source id -> oldest hole before its bookmark (core.collect.gaps)
    # site id -> local days its simulated inverter is tripped (the demo's fault, core.catalog.demo)
    outage_days: dict[int, frozenset[date]] = field(default_factory=dict)


def read_inputs(
    store: Store,
    box: SecretBox,
    now: datetime,
    *,
    timeout_s: float | None = None,
    only: set[GroupKey] | None = None,
    find_gaps: bool = True,
) -> PassInputs:
    """Everything a pass needs; holes are looked for only in the groups in `only` (all when None), and not at all
    without `find_gaps` (the collector's shared inputs look for them less often: the search reads a month of
    rollups)."""
    with store.connect(read_only=True, timeout_s=timeout_s) as con:
        catalog = cat.read_catalog(con)
        states = read_states(con)
        secrets, unreadable = read_all_secrets(con, box)
        polled = {
            s.id for key, group in group_by_provider_site(catalog).items() if only is None or key in only for s in group
        }
        uppers = {
            sid: state.bookmark - RELOOK
            for sid, state in states.items()
            if state.bookmark is not None and sid in polled
        }
        gaps = oldest_gaps(con, uppers, now) if find_gaps else {}
        outage_days = outage_days_by_site(con)
    return PassInputs(catalog, states, secrets, unreadable, gaps, outage_days)


def window_for(
    sources: list[Source], bookmarks: dict[int, datetime], now: datetime, *, unmetered: bool = False
) -> tuple[datetime, datetime]:
    """From the oldest bookmark of the group (minus RELOOK) to now, at most MAX_WINDOW_PER_PASS long; a source
    without a bookmark starts FIRST_BACKFILL back (UNMETERED_BACKFILL, in one pass, for a provider without a
    vendor quota)."""
    new = [s for s in sources if s.id not in bookmarks]
    first = UNMETERED_BACKFILL if unmetered else FIRST_BACKFILL
    starts = [bookmarks[s.id] - RELOOK for s in sources if s.id in bookmarks] + [now - first for _ in new[:1]]
    start = min(starts)
    # Only a first backfill of an unmetered group reads its month in one pass; catching up after downtime stays at
    # MAX_WINDOW_PER_PASS a pass, so no pass holds the file for a month of a whole fleet's readings.
    longest = UNMETERED_BACKFILL if unmetered and new else MAX_WINDOW_PER_PASS
    end = min(now, start + longest)
    return start, end


def gap_window(
    sources: list[Source], gaps: dict[int, datetime], before: datetime, max_window: timedelta
) -> tuple[datetime, datetime] | None:
    """The one hole this group re-reads this pass: from its sources' oldest gap, one vendor window long, ending
    at the regular window's start at the latest (core.collect.gaps explains the rule)."""
    starts = [gaps[s.id] for s in sources if s.id in gaps and gaps[s.id] < before]
    if not starts:
        return None
    start = min(starts)
    return start, min(before, start + min(max_window, MAX_WINDOW_PER_PASS))


def carry_bookmarks(fresh: PassInputs, kept: PassInputs) -> None:
    """While passes wait to be written, the stored bookmarks lag behind what was fetched: take the kept ones where
    they are ahead, so each held pass reads on from the last one instead of again from the stored bookmark (which
    would hold the same readings many times over, in memory or in the spool)."""
    for source_id, state in kept.states.items():
        stored = fresh.states.get(source_id)
        if stored is None:
            continue
        if state.bookmark is not None and (stored.bookmark is None or state.bookmark > stored.bookmark):
            fresh.states[source_id] = replace(stored, bookmark=state.bookmark)
            fresh.gaps.pop(source_id, None)  # a hole found against the lagging bookmark may be in a held pass
