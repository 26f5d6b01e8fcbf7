"""The no-data alert for sources whose readings are brought to us, against real temporary DuckDB files.

Push (HTTP) and MQTT sources are saved as Data Connections saves them (`save_connections`). A push source's readings
are sent over HTTP to the real ingest service (`jobs.ingest`, on loopback), each request in the sender's own interval;
an MQTT source's samples go through the collector's own writer (`MqttFeed`: its minute aggregator, the 1-minute rows
with their coverage, the same commit as a pass), fed directly instead of by a broker. Each source is judged at its
own Update Frequency x the no-data factor (what the user said to expect, whatever the readings' interval), stays
quiet while readings keep coming at that cadence, is late exactly one minute past its limit, resolves when readings
come back, and says nothing while it is switched off (Enable API off: the ingest service then refuses its sender).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from core.analytics.alert_rules import Thresholds
from core.analytics.alerts import evaluate
from core.catalog import catalog as cat
from core.catalog.connections import draft_from_source, new_draft, save_connections
from core.catalog.push_sources import make_token
from core.collect.mqtt_feed import MqttFeed
from core.config import Settings
from core.models import Category, MeterIn, SiteIn
from core.providers.mqtt.subscriber import Sample
from core.runtime import Runtime, open_runtime
from core.store.spool import Spool
from core.store.store_episodes import StoreEpisodes
from jobs.ingest import IngestService, create_app
from tests.fakes.server import serve

TH = Thresholds.from_settings(Settings())
ZONE = "Europe/Brussels"
# The timelines run in the past (the ingest service takes readings at most a day ahead), from a whole hour.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=12)


def minutes(count: float) -> datetime:
    return T0 + timedelta(minutes=count)


def local(moment: datetime) -> str:
    """A time as the alert messages give it: in the site's zone."""
    return moment.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M %Z")


# --- sources, saved as Data Connections saves them -------------------------------------------------------------------


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return open_runtime(Settings(db_path=tmp_path / "d.duckdb", key_file=tmp_path / "k.key", seed_demo=False))


def save_sources(runtime: Runtime, *sources: tuple[str, str, str, bool]) -> dict[str, int]:
    """Sources (name, provider, update frequency, Enable API) of one consumption meter of a Brussels site, saved
    through the page's own save; they count as added a day before T0 (the no-data rule counts from then at most)."""
    store = runtime.store
    site = cat.create_site(store, SiteIn(name="Works", latitude=50.85, longitude=4.35, timezone=ZONE))
    meter = cat.create_meter(store, site.id, MeterIn(name="Main", category=Category.CONS))
    drafts = []
    for name, provider, every, on in sources:
        draft = new_draft(f"new-{name.lower()}", meter.id, Category.CONS)
        draft.values |= {"name": name, "source_type": "load", "capacity_kw": "50", "use_api": on}
        draft.values |= {"api_provider": provider, "update_frequency": every}
        if provider == "mqtt":
            draft.values |= {"mqtt_host": "127.0.0.1", "mqtt_topic": f"plugs/{name.lower()}/power"}
        drafts.append(draft)
    save_connections(store, runtime.box, site.id, drafts, set())
    ids = {s.name: s.id for s in cat.load_catalog(store).sources_of_site(site.id)}
    with store.transaction() as con:  # the one thing the page cannot do: add a source in the past
        con.execute(
            f"UPDATE energy_sources SET created_at = ? WHERE id IN ({', '.join(map(str, ids.values()))})",
            [T0 - timedelta(days=1)],
        )
    return ids


def switch_off(runtime: Runtime, source_id: int) -> None:
    """Enable API turned off on the page and saved (the provider and its settings stay)."""
    catalog = cat.load_catalog(runtime.store)
    draft = draft_from_source(catalog.source(source_id))
    draft.values["use_api"] = False
    site = catalog.site_of_source(source_id)
    assert site is not None
    save_connections(runtime.store, runtime.box, site.id, [draft], set())


# --- readings, as a sender and a device bring them -------------------------------------------------------------------


@dataclass
class Sender:
    """A logger posting readings of one Push source to the ingest service."""

    url: str
    source_id: int
    token: str

    def send(self, start: datetime, values: list[float], step_s: int) -> httpx.Response:
        body = {
            "readings": [
                {"ts": (start + timedelta(seconds=i * step_s)).isoformat(), "value": v, "interval_s": step_s}
                for i, v in enumerate(values)
            ]
        }
        target = f"{self.url}/api/v1/sources/{self.source_id}/readings"
        return httpx.post(target, json=body, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def sent(self, start: datetime, values: list[float], step_s: int) -> None:
        answer = self.send(start, values, step_s)
        assert answer.status_code == 200 and answer.json()["status"] == "stored", answer.text


@pytest.fixture
def ingest(runtime: Runtime) -> Iterator[str]:
    """The ingest service on loopback; yields its URL."""
    service = IngestService(runtime)
    try:
        with serve(create_app(service)) as url:
            yield url
    finally:
        service.close()


def sender(runtime: Runtime, url: str, source_id: int) -> Sender:
    return Sender(url, source_id, make_token(runtime.store, runtime.box, source_id, T0))


@pytest.fixture
def feed(runtime: Runtime) -> Iterator[MqttFeed]:
    """The collector's MQTT writer, without a broker: samples are handed to its aggregator as a subscriber would."""
    spool = Spool.beside(runtime.store.path)
    mqtt = MqttFeed(runtime.store, runtime.box, spool, StoreEpisodes(runtime.store, spool.directory))
    yield mqtt
    mqtt.close()


def publish(feed: MqttFeed, source_id: int, start: datetime, end: datetime, every_s: int, watts: float) -> None:
    """The samples of a device that publishes its power every `every_s` (from T0 on) which fall in [start, end)."""
    step = timedelta(seconds=every_s)
    at = T0 + -((T0 - start) // step) * step  # the first instant of its schedule at or after `start`
    while at < end:
        feed.aggregator.add(Sample(source_id, at, watts, counter=False))
        at += step


def written(feed: MqttFeed, now: datetime) -> None:
    """The collector's tick at `now`: the minutes the clock closed are stored."""
    feed.tick(now)
    assert feed.writer.flush(10)


# --- alerts ---------------------------------------------------------------------------------------------------------


def no_data(runtime: Runtime, now: datetime) -> dict[int, tuple[str, float]]:
    """Evaluate every rule at `now`; the no-data alerts active then: {source id: (message, value)}."""
    evaluate(runtime.store, TH, now)
    with runtime.store.connect(read_only=True) as con:
        rows = con.sql(
            "SELECT source_id, message, value FROM alerts WHERE rule = 'no_data' AND status <> 'resolved'"
        ).fetchall()
    return {int(source_id): (message, value) for source_id, message, value in rows}


def history(runtime: Runtime) -> list[tuple[int, str, str]]:
    with runtime.store.connect(read_only=True) as con:
        rows = con.sql("SELECT source_id, rule, status FROM alerts ORDER BY id").fetchall()
    return [(int(r[0]), r[1], r[2]) for r in rows]


# --- push -----------------------------------------------------------------------------------------------------------


def test_push_sources_are_late_at_their_own_cadence_and_resolve_when_the_sender_comes_back(
    runtime: Runtime, ingest: str
) -> None:
    ids = save_sources(runtime, ("Hall", "push", "15min", True), ("Lab", "push", "5min", True))
    hall, lab = sender(runtime, ingest, ids["Hall"]), sender(runtime, ingest, ids["Lab"])
    # Two hours of each sender at its cadence: the hall's logger a 15-minute reading each quarter hour, the lab's a
    # 5-minute one every 5 minutes. Judged just before each next request (the oldest the newest reading gets): quiet.
    hall.sent(minutes(-15), [12_000.0], 900)
    lab.sent(minutes(-5), [800.0], 300)
    for m in range(5, 125, 5):
        lab.sent(minutes(m - 5), [800.0], 300)
        if m % 15 == 0:
            hall.sent(minutes(m - 15), [12_000.0], 900)
        assert no_data(runtime, minutes(m + 4)) == {}

    # Both stop after the readings ending at T0 + 120 min. Each is late once 2 x its own cadence has passed.
    stop = minutes(120)
    assert no_data(runtime, stop + timedelta(minutes=10)) == {}  # the lab's limit, 2 x 5 min: not yet over it
    assert no_data(runtime, stop + timedelta(minutes=11)) == {
        ids["Lab"]: (f"No reading pushed for 11 min (expected every 5 min); the newest ended {local(stop)}.", 11.0)
    }
    assert set(no_data(runtime, stop + timedelta(minutes=30))) == {ids["Lab"]}  # the hall's limit, 2 x 15 min
    late = no_data(runtime, stop + timedelta(minutes=31))
    assert late[ids["Hall"]] == (
        f"No reading pushed for 31 min (expected every 15 min); the newest ended {local(stop)}.",
        31.0,
    )

    # The hall's logger comes back with the three quarter hours it kept: resolved; the lab is still late.
    hall.sent(stop, [11_000.0, 11_500.0, 12_500.0], 900)
    assert set(no_data(runtime, stop + timedelta(minutes=46))) == {ids["Lab"]}
    assert history(runtime) == [(ids["Lab"], "no_data", "open"), (ids["Hall"], "no_data", "resolved")]


def test_a_push_source_sending_every_minute_is_judged_by_its_update_frequency(runtime: Runtime, ingest: str) -> None:
    ids = save_sources(runtime, ("Gateway", "push", "1hour", True))
    gateway = sender(runtime, ingest, ids["Gateway"])
    for m in range(1, 21):  # a 1-minute reading every minute for 20 minutes
        gateway.sent(minutes(m - 1), [3_000.0], 60)
        if m % 5 == 0:
            assert no_data(runtime, minutes(m) + timedelta(seconds=30)) == {}
    # Silent from T0 + 20 min: ten, sixty, then 120 of its 1-minute intervals go by. The user said to expect a reading
    # every hour, so only more than 2 hours of silence is late, not what the readings' own interval would suggest.
    stop = minutes(20)
    for after in (10, 60, 120):
        assert no_data(runtime, stop + timedelta(minutes=after)) == {}
    assert no_data(runtime, stop + timedelta(minutes=121)) == {
        ids["Gateway"]: (
            f"No reading pushed for 2.0 h (expected every 1 hour); the newest ended {local(stop)}.",
            121.0,
        )
    }
    gateway.sent(stop, [3_100.0] * 125, 60)  # what it kept while the network was down
    assert no_data(runtime, stop + timedelta(minutes=126)) == {}
    assert history(runtime) == [(ids["Gateway"], "no_data", "resolved")]


def test_a_push_source_that_never_sent_says_so(runtime: Runtime) -> None:
    ids = save_sources(runtime, ("Hall", "push", "15min", True))
    assert no_data(runtime, minutes(0)) == {  # added a day before: it has had 48 quarter hours to send something
        ids["Hall"]: ("No reading pushed yet (expected every 15 min).", 1440.0)
    }


# --- MQTT -----------------------------------------------------------------------------------------------------------


def test_mqtt_sources_are_late_at_their_own_cadence_and_resolve_when_the_device_publishes_again(
    runtime: Runtime, feed: MqttFeed
) -> None:
    ids = save_sources(runtime, ("Plug", "mqtt", "5min", True), ("Meter", "mqtt", "15min", True))
    plug, meter = ids["Plug"], ids["Meter"]
    # An hour of both devices: the plug publishes every 10 s (every minute fully covered), the meter every 4 minutes
    # (each sample held 90 s: a covered minute, a half-covered one, then none until the next sample). The collector
    # writes the minutes the clock closes and the rules run every 6 minutes: quiet.
    for m in range(0, 60, 6):
        publish(feed, plug, minutes(m), minutes(m + 6), 10, 120.0)
        publish(feed, meter, minutes(m), minutes(m + 6), 240, 2_000.0)
        written(feed, minutes(m + 6))
        assert no_data(runtime, minutes(m + 6)) == {}
    with runtime.store.connect(read_only=True) as con:
        coverage = dict(
            con.execute(
                "SELECT source_id, list(DISTINCT coverage ORDER BY coverage) FROM readings"
                " WHERE interval_s = 60 GROUP BY source_id"
            ).fetchall()
        )
    assert coverage == {plug: [1.0], meter: [0.5, 1.0]}  # 1-minute rows with their coverage

    # Both go quiet at T0 + 60 min. The plug's last sample (59:50) holds until 61:20: its newest minute ends at 62:00;
    # the meter's (56:00) until 57:30, so its newest ends at 58:00.
    for m in (63, 70, 72):
        written(feed, minutes(m))
        assert no_data(runtime, minutes(m)) == {}  # the plug is 10 min old at 72:00: not yet over 2 x 5 min
    written(feed, minutes(73))
    newest = local(minutes(62))
    assert no_data(runtime, minutes(73)) == {
        plug: (f"No reading from its MQTT device for 11 min (expected every 5 min); the newest ended {newest}.", 11.0)
    }
    assert set(no_data(runtime, minutes(88))) == {plug}  # the meter: 30 min old, 2 x 15 min
    assert set(no_data(runtime, minutes(89))) == {plug, meter}

    # The plug publishes again: resolved at the first minute written; the meter stays late.
    publish(feed, plug, minutes(90), minutes(92), 10, 130.0)
    written(feed, minutes(92))
    assert set(no_data(runtime, minutes(92))) == {meter}
    assert history(runtime) == [(plug, "no_data", "resolved"), (meter, "no_data", "open")]


# --- switched off -----------------------------------------------------------------------------------------------------


def test_a_switched_off_push_or_mqtt_source_raises_no_alert(runtime: Runtime, ingest: str, feed: MqttFeed) -> None:
    ids = save_sources(
        runtime, ("Hall", "push", "15min", True), ("Plug", "mqtt", "5min", True), ("Spare", "push", "5min", False)
    )
    hall = sender(runtime, ingest, ids["Hall"])
    spare = sender(runtime, ingest, ids["Spare"])  # saved as Push with Enable API off: its sender is refused
    assert spare.send(minutes(0), [1.0], 300).status_code == 409
    hall.sent(minutes(0), [9_000.0, 9_100.0], 900)
    publish(feed, ids["Plug"], minutes(0), minutes(30), 10, 60.0)
    written(feed, minutes(30))
    assert set(no_data(runtime, minutes(75))) == {ids["Hall"], ids["Plug"]}  # both silent since 30:00 at the latest

    # Both switched off on the page: the rule no longer applies to them, so their alerts resolve, and nothing fires
    # for them (nor for the spare, which never sent anything) however long they stay silent.
    switch_off(runtime, ids["Hall"])
    switch_off(runtime, ids["Plug"])
    assert no_data(runtime, minutes(76)) == {}
    assert no_data(runtime, minutes(60 * 11)) == {}
    assert sorted(history(runtime)) == [(ids["Hall"], "no_data", "resolved"), (ids["Plug"], "no_data", "resolved")]
    # The ingest service refuses the hall's sender once it reads the change (within its 5-second refresh).
    deadline = time.monotonic() + 15
    while (answer := hall.send(minutes(30), [], 900)).status_code != 409:
        assert answer.status_code == 200 and time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    assert "switched off" in answer.json()["detail"]
