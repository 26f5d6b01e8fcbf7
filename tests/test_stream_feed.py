"""The collector's Enphase live streams (core.collect.stream_feed) against the fake Enphase cloud on loopback and a
real temporary DuckDB: a watched source opens its system's stream and stops it when nobody watches; a schedule keeps
one open; frames reach the newest-value files within a second or two and become minute rows in `live_readings` (never
in `readings`); a plan or system that cannot stream is refused without more calls; a passing fault retries; a held
file keeps the minutes until it is free; API Health's `stream_status` says all of it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.catalog import catalog as cat
from core.catalog import enphase_auth
from core.catalog.connections import draft_from_source, save_connections
from core.collect.stream_feed import StreamFeed
from core.config import Settings
from core.models import Category, MeterIn
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.store.change_marks import ChangeMarks, WatchMarks
from core.store.crypto import SecretBox
from core.store.oauth_tokens import StoredTokens
from core.store.store import Store
from core.store.stream_now import StreamNow
from tests.crafting import saved_enphase_source
from tests.fakes import enphase
from tests.fakes.server import serve
from tests.holder import held
from tests.mqtt_broker import wait_until


@pytest.fixture
def fake() -> Iterator[tuple[enphase.FakeState, Settings]]:
    state = enphase.FakeState(systems=enphase.sandbox_systems())
    state.set_plan("Kilowatt")
    state.stream_cadence_s = 0.2  # five frames a second: the tests need not wait for real seconds
    with serve(enphase.create_app(state)) as url:
        yield (
            state,
            Settings(enphase_base_url=f"{url}/api/v4", enphase_auth_url=f"{url}/oauth", enphase_plan="kilowatt"),
        )


def streaming_source(
    store: Store, box: SecretBox, fake: enphase.FakeState, settings: Settings, **stream: object
) -> int:
    """The sandbox system's PV source, authorised, with these stream settings, and a load source on the same system."""
    source = saved_enphase_source(store, box)
    enphase_auth.complete(store, box, settings, source.id, fake.issue_code(enphase_auth.redirect_uri(settings)),
                          datetime.now(UTC))  # fmt: skip
    site_id = cat.load_catalog(store).meter(source.meter_id).site_id
    draft = draft_from_source(cat.load_catalog(store).source(source.id))
    draft.values |= stream
    load_meter = cat.create_meter(store, site_id, MeterIn(name="Load", category=Category.CONS))
    load = draft_from_source(cat.load_catalog(store).source(source.id))
    load.key, load.meter_id, load.source_id = "new-load", load_meter.id, None
    load.values |= {"name": "House load", "source_type": "load", "stream_on_live": False}
    load.secrets = {"client_secret": enphase.SANDBOX_CLIENT_SECRET, "app_api_key": enphase.SANDBOX_API_KEY}
    try:
        save_connections(store, box, site_id, [draft, load], set(), enphase_plan="kilowatt")
    except Exception as exc:
        raise AssertionError(getattr(exc, "errors", exc)) from exc
    return source.id


def feed_for(store: Store, box: SecretBox, settings: Settings, **options: float) -> StreamFeed:
    context = ProviderContext(settings, QuotaLedger(), lambda source_id: StoredTokens(store, box, source_id))
    feed = StreamFeed(store, box, context, duration_s=30, **options)  # type: ignore[arg-type]
    feed.sync(cat.load_catalog(store))
    return feed


def states(store: Store) -> dict[int, dict[str, object]]:
    with store.connect(read_only=True) as con:
        return {row["source_id"]: row for row in con.sql("SELECT * FROM stream_status").pl().to_dicts()}


def count(store: Store, table: str) -> int:
    with store.connect(read_only=True) as con:
        return int(con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def test_watching_live_opens_the_systems_stream_and_leaving_closes_it(
    store: Store, box: SecretBox, fake: tuple[enphase.FakeState, Settings]
) -> None:
    state, settings = fake
    pv = streaming_source(store, box, state, settings, stream_on_live=True)
    load = next(s.id for s in cat.load_catalog(store).sources if s.id != pv)
    feed = feed_for(store, box, settings, watch_s=1.0)
    now_files = StreamNow(store.path)
    try:
        feed.tick()
        assert state.stream_durations == []  # nobody watches: no call
        WatchMarks(store.path).mark([pv])
        feed.tick()

        wait_until(lambda: now_files.read([pv, load]).keys() == {pv, load}, "the newest values of both sources")
        at, _ = now_files.read([pv])[pv]
        assert datetime.now(UTC) - at < timedelta(seconds=5)
        loads = {float(frame["data"]["consumption_power"]) for frame in state.stream_sent}
        assert now_files.read([load])[load][1] in loads  # the load source shows the frame's consumption
        feed.publish_status(force=True)
        shown = states(store)
        assert shown[pv]["state"] == "streaming" and shown[pv]["wanted_by"] == "Live"
        assert shown[load]["state"] == "streaming"  # the stream is the system's: it feeds every source of it
        assert state.stream_durations == [30]

        wait_until(lambda: not _watched_tick(feed), "the stream to stop once nobody watches", timeout_s=10)
        feed.publish_status(force=True)
        assert states(store)[pv]["state"] == "idle"
    finally:
        feed.close()
    rows = _live_rows(store)
    assert {r[0] for r in rows} == {pv, load}  # a minute row per source, with its coverage
    assert all(r[2] == 60 and 0 < r[4] <= 1 for r in rows)
    assert count(store, "readings") == 0  # never mixed with the history
    assert ChangeMarks(store.path).newest([pv]) is not None  # Live learns that there are new minutes


def _watched_tick(feed: StreamFeed) -> bool:
    feed.tick()
    return any(stream.running for stream in feed._streams.values())


def _live_rows(store: Store) -> list[tuple]:
    with store.connect(read_only=True) as con:
        return con.sql(
            "SELECT source_id, ts, interval_s, value, coverage FROM live_readings ORDER BY source_id, ts"
        ).fetchall()


def test_a_schedule_keeps_a_stream_open_without_anyone_watching(
    store: Store, box: SecretBox, fake: tuple[enphase.FakeState, Settings]
) -> None:
    state, settings = fake
    pv = streaming_source(store, box, state, settings, stream_schedule="always")
    feed = feed_for(store, box, settings)
    try:
        feed.tick()
        wait_until(lambda: pv in StreamNow(store.path).read([pv]), "a frame")
        feed.publish_status(force=True)
        assert states(store)[pv]["wanted_by"] == "schedule"
    finally:
        feed.close()
    assert _live_rows(store)


def test_a_plan_without_streaming_is_refused_without_a_call(
    store: Store, box: SecretBox, fake: tuple[enphase.FakeState, Settings]
) -> None:
    state, settings = fake
    settings = settings.model_copy(update={"enphase_plan": "watt"})
    pv = streaming_source(store, box, state, settings, stream_schedule="always")
    feed = feed_for(store, box, settings)
    try:
        feed.tick()
        wait_until(lambda: feed._streams and not next(iter(feed._streams.values())).running, "the refusal")
        for _ in range(3):
            feed.tick()  # a refused system is not opened again at every tick
        feed.publish_status(force=True)
        shown = states(store)[pv]
        assert shown["state"] == "refused" and "Kilowatt plan or above" in str(shown["reason"])
        assert state.stream_durations == []
    finally:
        feed.close()


def test_a_system_that_cannot_stream_is_refused_and_a_passing_fault_retries(
    store: Store, box: SecretBox, fake: tuple[enphase.FakeState, Settings]
) -> None:
    state, settings = fake
    pv = streaming_source(store, box, state, settings, stream_schedule="always")
    state.stream_errors[enphase.SANDBOX_SYSTEM_ID] = 473  # the gateway is not reporting now: try again later
    feed = feed_for(store, box, settings)
    try:
        feed.tick()
        wait_until(lambda: feed.status_rows(datetime.now(UTC))["state"].to_list()[0] == "waiting", "a wait")
        assert "not reporting" in str(feed.status_rows(datetime.now(UTC))["reason"][0])
    finally:
        feed.close()
    state.stream_errors[enphase.SANDBOX_SYSTEM_ID] = 466  # the gateway's software cannot stream
    feed = feed_for(store, box, settings)
    try:
        feed.tick()
        wait_until(lambda: feed.status_rows(datetime.now(UTC))["state"].to_list()[0] == "refused", "the refusal")
        opened = len(state.stream_durations)
        for _ in range(3):
            feed.tick()
        assert len(state.stream_durations) == opened
        assert "software 6.0.0" in str(feed.status_rows(datetime.now(UTC))["reason"][0])
    finally:
        feed.close()
    assert pv


def test_minutes_wait_for_a_held_file_and_are_written_once_it_is_free(
    tmp_path: Path, store: Store, box: SecretBox, fake: tuple[enphase.FakeState, Settings]
) -> None:
    state, settings = fake
    pv = streaming_source(store, box, state, settings, stream_schedule="always")
    feed = feed_for(store, box, settings)
    feed.tick()
    wait_until(lambda: pv in StreamNow(store.path).read([pv]), "a frame")
    with held(store.path):
        for stream in feed._streams.values():
            stream.release()
            stream.join(5)
        feed.tick(datetime.now(UTC) + timedelta(minutes=2))  # every minute touched is complete: to the writer
        feed.writer.flush(10)
        assert feed._pending  # the file was held: kept, not lost
    feed.close()
    assert {r[0] for r in _live_rows(store)} >= {pv}


def test_a_minute_completed_by_the_next_frame_is_stored_whole_beside_the_next(
    store: Store, box: SecretBox, fake: tuple[enphase.FakeState, Settings]
) -> None:
    state, settings = fake
    pv = streaming_source(store, box, state, settings, stream_schedule="always")
    now = datetime.now(UTC)
    state.clock_offset = timedelta(seconds=57 - now.second - now.microsecond / 1e6)  # the fake's clock at hh:mm:57
    feed = feed_for(store, box, settings)
    try:
        feed.tick()
        wait_until(lambda: len(state.stream_sent) >= 30, "six seconds of frames, across the minute")  # 5 a second
        feed.tick(datetime.now(UTC) + state.clock_offset + timedelta(seconds=10))  # the first minute is due
        feed.writer.flush(10)
        first = _live_rows(store)
        assert {r[0] for r in first} == {pv, pv + 1}  # the minute the next frame completed, for both sources
    finally:
        feed.close()
    minutes = sorted({r[1] for r in _live_rows(store)})
    assert len(minutes) == 2 and minutes[1] - minutes[0] == timedelta(minutes=1)
    earlier = [r for r in _live_rows(store) if r[1] == minutes[0] and r[0] == pv]
    assert earlier and 0.03 < earlier[0][4] < 0.2  # the 3 s of it the stream covered, of 60
