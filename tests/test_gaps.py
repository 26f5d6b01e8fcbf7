"""Holes before the bookmark are found and re-read, oldest first, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.catalog.demo import seed_demo
from core.collect.collection import collect_once
from core.collect.gaps import oldest_gaps
from core.config import Settings
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.store import rollups
from core.store.crypto import SecretBox
from core.store.store import Store

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
