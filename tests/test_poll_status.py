"""What Data Connections shows of a saved source: the collector's newest poll when it is newer than the last test.

Polls are real collection passes against real DuckDB files: the demo's simulator, and a SolarEdge site on the fake
SolarEdge V2 server (working, failing with 5xx, or refusing the key).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from core.analytics.poll_status import describe, newer_than_test, poll_statuses
from core.catalog import catalog as cat
from core.catalog.demo import seed_demo
from core.collect.collection import collect_once
from core.config import Settings, load_settings
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.runtime import open_runtime
from core.store.crypto import SecretBox
from core.store.store import Store
from tests.fakes import solaredge_v2
from tests.fakes.server import serve
from tests.test_collection import london_roof
from tests.test_pages_connections import open_connections, status_of

LONDON = ZoneInfo("Europe/London")


def test_a_working_source_is_connected_with_its_age_and_power(store: Store, box: SecretBox) -> None:
    seed_demo(store)
    now = datetime.now(UTC)
    collect_once(store, box, ProviderContext(Settings(), QuotaLedger()), now)
    source = next(s for s in cat.load_catalog(store).sources if s.name == "Rooftop PV Array")

    poll = poll_statuses(store, [source.id], now + timedelta(minutes=3))[source.id]
    assert poll.ok and poll.failing_since is None and poll.stopped_reason is None
    assert poll.polled_at is not None and abs(poll.polled_at - now) < timedelta(minutes=1)
    assert newer_than_test(poll, None)
    assert not newer_than_test(poll, poll.polled_at + timedelta(seconds=1))  # a test made after it wins
    line = describe(poll, poll.polled_at + timedelta(minutes=3), LONDON)
    assert (line.kind, line.headline) == ("ok", "Connected")
    assert line.text.startswith("polled 3 min ago")
    # Nobody polls a pushed or an MQTT source: their line names what arrived.
    later = poll.polled_at + timedelta(minutes=3)
    assert describe(poll, later, LONDON, delivery="push").text.startswith("readings received 3 min ago")
    assert describe(poll, later, LONDON, delivery="subscribe").text.startswith("minute written 3 min ago")
    assert poll.reading is not None and poll.reading.value is not None  # at night the PV reports 0 W: still a value
    at = poll.reading.ts.astimezone(LONDON).strftime("%H:%M")
    assert line.text.endswith((f" W at {at}", f" kW at {at}")), line.text


def test_the_power_shown_is_the_newest_value_not_an_empty_interval(store: Store, box: SecretBox) -> None:
    """The vendor stores the interval in progress without a value: the line shows the newest interval with one."""
    london_roof(store, box, solaredge_v2.SANDBOX_API_KEY)
    now = datetime.now(UTC)
    with serve(solaredge_v2.create_app(solaredge_v2.FakeState())) as url:
        collect_once(store, box, ProviderContext(Settings(solaredge_base_url=f"{url}/v2"), QuotaLedger()), now)
    source_id = cat.load_catalog(store).sources[0].id
    with store.connect(read_only=True) as con:
        newest_value = con.sql(
            f"SELECT value FROM readings WHERE source_id = {source_id} AND value IS NOT NULL ORDER BY ts DESC LIMIT 1"
        ).fetchall()[0][0]
    with store.transaction() as con_rw:  # an empty newest interval, as vendors report the one in progress
        con_rw.execute(
            "INSERT INTO readings (source_id, ts, interval_s, value, is_final, received_at)"
            " VALUES (?, ?, 900, NULL, false, ?)",
            [source_id, now.replace(second=0, microsecond=0), now],
        )
    poll = poll_statuses(store, [source_id], now + timedelta(minutes=1))[source_id]
    assert poll.reading is not None and poll.reading.value == newest_value


def test_a_failing_source_says_since_when_and_why(store: Store, box: SecretBox) -> None:
    london_roof(store, box, solaredge_v2.SANDBOX_API_KEY)
    state = solaredge_v2.FakeState()
    first = datetime(2026, 12, 3, 9, 40, tzinfo=UTC)
    with serve(solaredge_v2.create_app(state)) as url:
        context = ProviderContext(Settings(solaredge_base_url=f"{url}/v2"), QuotaLedger())
        collect_once(store, box, context, first - timedelta(hours=1))  # works
        state.failures.fail_next("5xx", 5)
        collect_once(store, box, context, first)
        collect_once(store, box, context, first + timedelta(minutes=30))
    source_id = cat.load_catalog(store).sources[0].id

    poll = poll_statuses(store, [source_id], first + timedelta(hours=1))[source_id]
    assert not poll.ok and poll.failing_since == first  # the first failure after the last success
    assert poll.polled_at == first + timedelta(minutes=30)
    line = describe(poll, first + timedelta(hours=1), LONDON)
    assert (line.kind, line.headline) == ("failing", "Failing since 09:40")
    assert line.text == poll.error and line.text
    yesterday = describe(poll, first + timedelta(days=1), LONDON)
    assert yesterday.headline == "Failing since 2026-12-03 09:40"


def test_a_rejected_key_shows_the_stop_and_never_the_key(store: Store, box: SecretBox) -> None:
    london_roof(store, box, "sk-wrong-999")
    with serve(solaredge_v2.create_app(solaredge_v2.FakeState())) as url:
        collect_once(
            store, box, ProviderContext(Settings(solaredge_base_url=f"{url}/v2"), QuotaLedger()), datetime.now(UTC)
        )
    source_id = cat.load_catalog(store).sources[0].id

    poll = poll_statuses(store, [source_id], datetime.now(UTC))[source_id]
    assert poll.stopped_reason and "sk-wrong-999" not in poll.stopped_reason
    line = describe(poll, datetime.now(UTC), LONDON)
    assert (line.kind, line.headline) == ("stopped", "Stopped")
    assert newer_than_test(poll, datetime.now(UTC) + timedelta(days=1))  # a stop holds whatever a test said


def test_a_source_never_polled_has_no_status(store: Store, box: SecretBox) -> None:
    seed_demo(store)
    ids = [s.id for s in cat.load_catalog(store).sources]
    assert poll_statuses(store, ids, datetime.now(UTC)) == {}
    assert poll_statuses(store, [], datetime.now(UTC)) == {}


def test_the_page_shows_the_last_poll_of_a_saved_source(app_env: Path) -> None:
    at = open_connections(app_env)
    source = next(
        s for s in cat.load_catalog(open_runtime(load_settings()).store).sources if s.name == "Rooftop PV Array"
    )
    key = f"s{source.id}"
    assert status_of(at, key).startswith("**Untested**")  # never tested, never polled

    runtime = open_runtime(load_settings())
    collect_once(runtime.store, runtime.box, ProviderContext(runtime.settings, QuotaLedger()), datetime.now(UTC))
    at = open_connections(app_env)
    shown = status_of(at, key)
    assert shown.startswith("**Connected** · polled "), shown
    assert any("From the collector's last poll" in c.value for c in at.main.get_by_key(f"status-{key}").caption)

    # A test made now is newer than that poll: its result is what the page shows.
    at.button(key=f"dc_test_{key}").click().run()
    assert status_of(at, key).startswith("**Connected** · ")
    assert "polled" not in status_of(at, key)


def test_a_source_without_api_says_so(app_env: Path) -> None:
    at = open_connections(app_env)
    store = open_runtime(load_settings()).store
    source = next(s for s in cat.load_catalog(store).sources if s.name == "Rooftop PV Array")
    key = f"s{source.id}"
    at.toggle(key=f"dc_{key}_use_api").set_value(False).run()
    at.button(key="dc_save_all").click().run()
    assert not cat.load_catalog(store).source(source.id).api.use_api
    assert status_of(open_connections(app_env), key) == "**No API**: imported or manual data"
