"""Holes before the bookmark are found and re-read, oldest first, once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from core.catalog.demo import seed_demo
from core.collect.collection import collect_once
from core.collect.gaps import oldest_gaps
from core.config import Settings
from core.providers.base import QuotaRule
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger, account_scope
from core.providers.solaredge_v2.spec import CALLS_PER_MINUTE, VENDOR
from core.store import rollups
from core.store.crypto import SecretBox
from core.store.store import Store
from tests.fakes import solaredge_v2
from tests.fakes.server import serve
from tests.test_collection import london_roof

NOW = datetime(2026, 6, 21, 12, 2, tzinfo=UTC)
HOUR = NOW.replace(minute=0)  # holes on the 15-minute grid


def punch(store: Store, start: datetime, end: datetime) -> list[int]:
    """Delete every source's readings in [start, end) and their rollups, as a lost window would leave them."""
    with store.transaction() as con:
        con.execute("DELETE FROM readings WHERE ts >= ? AND ts < ?", [start, end])
        ids = [int(r[0]) for r in con.sql("SELECT DISTINCT source_id FROM readings").fetchall()]
        rollups.refresh(con, ids, start, end)
    return ids


def readings_in(store: Store, start: datetime, end: datetime) -> int:
    with store.connect(read_only=True) as con:
        return int(con.execute("SELECT count(*) FROM readings WHERE ts >= ? AND ts < ?", [start, end]).fetchall()[0][0])


def test_the_oldest_hole_is_re_read_then_never_asked_for_again(store: Store, box: SecretBox) -> None:
    seed_demo(store)
    context = ProviderContext(Settings(), QuotaLedger())
    collect_once(store, box, context, NOW)  # a day of history
    full = readings_in(store, HOUR - timedelta(hours=20), HOUR - timedelta(hours=16))
    older, newer = (
        (HOUR - timedelta(hours=20), HOUR - timedelta(hours=19)),
        (HOUR - timedelta(hours=17), HOUR - timedelta(hours=16)),
    )
    ids = punch(store, *older) and punch(store, *newer)
    with store.connect(read_only=True) as con:
        found = oldest_gaps(con, dict.fromkeys(ids, NOW - timedelta(hours=3)), NOW)
    assert set(found.values()) == {older[0]}  # every source, at the oldest hole

    report = collect_once(store, box, context, NOW + timedelta(minutes=5))
    window = report.results[0].gap_window
    assert window is not None and window[0] == older[0]
    assert readings_in(store, HOUR - timedelta(hours=20), HOUR - timedelta(hours=16)) == full  # both holes: one window
    with store.connect(read_only=True) as con:
        attempts = con.sql("SELECT count(*), min(window_start) FROM gap_attempts").fetchall()[0]
    assert attempts == (6, older[0])

    punch(store, *older)  # the vendor "lost" it again: an attempted window is not asked for twice
    again = collect_once(store, box, context, NOW + timedelta(minutes=10))
    assert again.results[0].gap_window is None
    assert readings_in(store, *older) == 0


def test_no_hole_no_extra_call(store: Store, box: SecretBox) -> None:
    seed_demo(store)
    context = ProviderContext(Settings(), QuotaLedger())
    collect_once(store, box, context, NOW)
    report = collect_once(store, box, context, NOW + timedelta(minutes=5))
    assert report.results[0].gap_window is None


def test_a_gap_the_vendor_minute_cannot_take_waits_and_the_poll_keeps_its_answer(store: Store, box: SecretBox) -> None:
    london_roof(store, box, solaredge_v2.SANDBOX_API_KEY)  # one PV source: one call a poll, and one for a gap
    ledger = QuotaLedger()  # the dashboard's and one-off tools' kind: a full minute refuses at once
    with serve(solaredge_v2.create_app(solaredge_v2.FakeState())) as url:
        context = ProviderContext(Settings(solaredge_base_url=f"{url}/v2"), ledger)
        while datetime.now(UTC).second > 40:  # both polls and the calls made up below in one UTC minute
            time.sleep(1)
        now = datetime.now(UTC)
        collect_once(store, box, context, now)
        hour = now.replace(minute=0, second=0, microsecond=0)
        hole = (hour - timedelta(hours=10), hour - timedelta(hours=9))
        punch(store, *hole)
        # The minute filled up to one call: the next poll's own call is its tenth, the gap's would be an eleventh.
        scope = {"account": account_scope(solaredge_v2.SANDBOX_API_KEY), "site": "3066774"}
        while ledger.used(VENDOR, scope["account"], "minute", now) < CALLS_PER_MINUTE - 1:
            ledger.reserve(VENDOR, scope, (QuotaRule("account", "minute", CALLS_PER_MINUTE),), now)
        before = readings_in(store, now - timedelta(hours=3), now)

        report = collect_once(store, box, context, datetime.now(UTC))

    (result,) = report.results
    assert result.outcome == "ok" and result.gap_window is None  # the poll kept its answer; the gap waits
    assert readings_in(store, now - timedelta(hours=3), now) == before > 0
    assert readings_in(store, *hole) == 0
    with store.connect(read_only=True) as con:
        assert con.sql("SELECT count(*) FROM gap_attempts").fetchall()[0][0] == 0  # not attempted: asked again later
