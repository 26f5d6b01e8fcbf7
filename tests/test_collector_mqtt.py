"""The collector's MQTT part against a real Mosquitto broker (tests/mqtt_broker.py) and a real temporary DuckDB:
messages become minute rows with coverage in `readings`, written like a pass (runs, change marks), spooled while
another program holds the file; the connection state reaches `mqtt_status`; and the real `python -m jobs.collector`
follows a broker that is killed and restarted. At fleet scale (issue 15's 1,000 topics, `bench/bench_mqtt.py`): the
states of 1,000 sources cost one snapshot of their broker, the passwords of 1,000 sources one query, and a status
build never trips over a sync on another thread."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core.catalog import catalog as cat
from core.catalog.connections import new_draft, save_connections
from core.collect.mqtt_feed import MqttFeed
from core.collect.mqtt_status import SCHEMA as STATUS_SCHEMA
from core.collect.status_table import StatusTable
from core.config import load_settings
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn, UpdateFrequency
from core.providers.mqtt.spec import PASSWORD
from core.runtime import open_runtime
from core.store.change_marks import ChangeMarks
from core.store.crypto import SecretBox, generate_key
from core.store.secret_store import put_secrets
from core.store.spool import Spool
from core.store.store import Store
from core.store.store_episodes import StoreEpisodes
from tests.fakes.server import free_port
from tests.holder import held
from tests.mqtt_broker import publisher, running_mosquitto, wait_until

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "tele/fridge/SENSOR"


def add_mqtt_source(store: Store, box: SecretBox, port: int, **values: object) -> int:
    site = cat.create_site(store, SiteIn(name="Home", latitude=50.85, longitude=4.35, timezone="Europe/Brussels"))
    meter = cat.create_meter(store, site.id, MeterIn(name="Plugs", category=Category.CONS))
    draft = new_draft("new-plug", meter.id, meter.category)
    draft.values |= {"name": "Fridge plug", "capacity_kw": "1", "use_api": True, "api_provider": "mqtt"}
    draft.values |= {"update_frequency": "5min", "mqtt_host": "127.0.0.1", "mqtt_port": port, "mqtt_topic": TOPIC}
    draft.values |= {"mqtt_payload_path": "ENERGY.Power"} | values
    save_connections(store, box, site.id, [draft], set())
    return cat.load_catalog(store).sources[0].id


def status(store: Store) -> dict[str, object]:
    with store.connect(read_only=True) as con:
        rows = con.sql("SELECT * FROM mqtt_status").pl().to_dicts()
    return rows[0] if rows else {}


def minutes(store: Store) -> list[tuple]:
    with store.connect(read_only=True) as con:
        return con.sql("SELECT ts, interval_s, value, coverage, is_final FROM readings ORDER BY ts").fetchall()


def feed_for(store: Store, box: SecretBox) -> MqttFeed:
    spool = Spool.beside(store.path)
    return MqttFeed(store, box, spool, StoreEpisodes(store, spool.directory), min_backoff_s=1, max_backoff_s=1)


def test_messages_become_minute_rows_with_coverage_written_like_a_pass(
    tmp_path: Path, store: Store, box: SecretBox
) -> None:
    with running_mosquitto(tmp_path / "broker") as broker, publisher(broker.port) as device:
        source_id = add_mqtt_source(store, box, broker.port)
        feed = feed_for(store, box)
        try:
            feed.sync(cat.load_catalog(store))

            def subscribed() -> bool:
                feed.publish_status(force=True)
                return status(store).get("subscribed") is True

            wait_until(subscribed, "the subscription")
            assert status(store)["state"] == "connected" and status(store)["broker"] == f"127.0.0.1:{broker.port}"
            first = datetime.now(UTC)
            for power in (100, 100, 100):
                device.publish(TOPIC, f'{{"ENERGY":{{"Power":{power}}}}}')
                time.sleep(0.2)
            device.publish(TOPIC, '{"ENERGY":{"Powr":5}}')  # a payload error: counted, skipped
            wait_until(lambda: feed.publish_status(force=True) and status(store)["payload_errors"] == 1, "the error")
            feed.tick(first + timedelta(minutes=3))  # the clock closes the minutes
            assert feed.writer.flush(10)
        finally:
            feed.close()
    rows = minutes(store)
    assert rows, "no minute was written"
    assert all(interval == 60 and final for _, interval, _, _, final in rows)
    assert all(value == pytest.approx(100.0) for _, _, value, _, _ in rows if value is not None)
    covered = [coverage for *_, coverage, _ in rows]
    assert all(0 < c <= 1 for c in covered) and sum(covered) > 0.9  # the last sample holds 90 s at most
    first_minute = first.replace(second=0, microsecond=0)
    assert rows[0][0] == first_minute
    with store.connect(read_only=True) as con:
        runs = con.sql("SELECT provider, outcome, rows_written FROM collector_runs").fetchall()
        last_error = con.sql("SELECT last_payload_error FROM mqtt_status").fetchall()[0][0]
    assert runs == [("mqtt", "ok", len(rows))]
    assert last_error == "There is no `Power` in `ENERGY` (it has: Powr)."
    assert ChangeMarks(store.path).newest([source_id]) is not None
    assert status(store)["state"] == "stopped"


def test_minutes_are_spooled_while_the_file_is_held_and_written_after(
    tmp_path: Path, store: Store, box: SecretBox
) -> None:
    with running_mosquitto(tmp_path / "broker") as broker, publisher(broker.port) as device:
        add_mqtt_source(store, box, broker.port)
        feed = feed_for(store, box)
        try:
            feed.sync(cat.load_catalog(store))
            wait_until(lambda: feed.publish_status(force=True) and status(store).get("subscribed"), "subscription")
            device.publish(TOPIC, '{"ENERGY":{"Power":42}}')
            wait_until(lambda: feed.publish_status(force=True) and status(store)["messages_per_minute"], "the sample")
            later = datetime.now(UTC) + timedelta(minutes=3)
            with held(store.path):
                feed.tick(later)
                assert feed.writer.flush(15)
                assert len(Spool.beside(store.path).pending()) == 1
            assert minutes(store) == []
            feed.tick(later + timedelta(minutes=1))  # nothing new, but the next commit drains first
            device.publish(TOPIC, '{"ENERGY":{"Power":43}}')
            time.sleep(0.3)
            feed.tick(later + timedelta(minutes=10))
            assert feed.writer.flush(15)
        finally:
            feed.close()
    assert Spool.beside(store.path).pending() == []
    assert minutes(store) and minutes(store)[0][2] == pytest.approx(42.0)


def _publish(port: int, payload: str) -> None:
    tool = shutil.which("mosquitto_pub")
    assert tool, "mosquitto_pub is not installed (Debian's mosquitto-clients)"
    subprocess.run([tool, "-h", "127.0.0.1", "-p", str(port), "-t", TOPIC, "-m", payload], check=False, timeout=10)


def test_the_collector_process_follows_a_broker_killed_and_restarted(
    tmp_path: Path, app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATACONN_SEED_DEMO", "false")  # only the MQTT source
    runtime = open_runtime(load_settings())
    with running_mosquitto(tmp_path / "broker") as broker:
        source_id = add_mqtt_source(runtime.store, runtime.box, broker.port, mqtt_payload_path="")
        store = runtime.store
        process = subprocess.Popen(
            [sys.executable, "-m", "jobs.collector"], cwd=ROOT, env=os.environ.copy(), stderr=subprocess.PIPE, text=True
        )
        try:
            wait_until(lambda: status(store).get("subscribed") is True, "the collector's subscription", 30)
            _publish(broker.port, "250")
            wait_until(lambda: (status(store).get("messages_per_minute") or 0) >= 1, "the message counted", 15)
            broker.kill()
            wait_until(lambda: status(store).get("state") == "connecting", "the state 'connecting'", 20)
            assert "lost" in str(status(store)["reason"]) or "Nothing accepts" in str(status(store)["reason"])
            broker.start()
            restarted = datetime.now(UTC)
            wait_until(lambda: status(store).get("state") == "connected" and status(store)["subscribed"], "again", 30)

            def a_minute_after_the_restart() -> bool:
                _publish(broker.port, "250")
                return any(ts >= restarted.replace(second=0, microsecond=0) for ts, *_ in minutes(store))

            wait_until(a_minute_after_the_restart, "a minute row after the restart", 100)
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        finally:
            process.kill()
    rows = minutes(store)
    assert rows
    for _, interval, value, coverage, _ in rows:
        assert interval == 60 and 0 <= coverage <= 1 and (value is None or value == pytest.approx(250.0))
    assert process.returncode == 0 and "Traceback" not in stderr
    assert "MQTT broker 127.0.0.1" in stderr
    assert status(store)["state"] == "stopped"
    assert source_id


# --- at fleet scale ---------------------------------------------------------------------------------------------

MANY = 1_000


def add_many(store: Store, port: int, count: int, **api: object) -> list[int]:
    """`count` MQTT sources on the broker at 127.0.0.1:`port` (topic `plugs/<n>/power`, a plain number in W), 100 to a
    site, written through the catalog in one transaction (a thousand saved through the page would take minutes)."""
    made = []
    with store.transaction() as con:
        meter_id = 0
        for n in range(count):
            if n % 100 == 0:
                site = cat.insert_site(con, SiteIn(name=f"Flats {n}", latitude=50.8, longitude=4.3, timezone="UTC"))
                meter_id = cat.insert_meter(con, site, MeterIn(name="Plugs", category=Category.CONS))
            settings = ApiSettings(
                use_api=True,
                api_provider=Provider.MQTT,
                update_frequency=UpdateFrequency.MIN5,
                mqtt_host="127.0.0.1",
                mqtt_port=port,
                mqtt_topic=f"plugs/{n}/power",
                **api,  # type: ignore[arg-type]
            )
            source = SourceIn(
                name=f"Plug {n}", source_type="load", capacity_kw=1, carbon_intensity_g_per_kwh=0, cost_per_mwh=0
            )
            made.append(cat.insert_source(con, meter_id, source.model_copy(update={"api": settings})))
    return made


def counted(store: Store, where: str) -> int:
    with store.connect(read_only=True) as con:
        return int(con.sql(f"SELECT count(*) FROM mqtt_status WHERE {where}").fetchall()[0][0])


def test_the_states_of_a_thousand_sources_on_one_broker_cost_one_snapshot_of_it(
    tmp_path: Path, store: Store, box: SecretBox
) -> None:
    """The status build took each source's state from a snapshot of its whole broker (every source's counters, under
    the lock the broker's network thread takes for every message): 1,000 snapshots of 1,000 sources, seconds every
    tick, during which messages waited; with 1,000 topics at a message a second, minutes were stored 13-19 s after
    their end instead of 2-3 s (bench/bench_mqtt.py)."""
    with running_mosquitto(tmp_path / "broker") as broker, publisher(broker.port) as device:
        add_many(store, broker.port, MANY)
        feed = feed_for(store, box)
        try:
            feed.sync(cat.load_catalog(store))
            wait_until(lambda: feed.publish_status(force=True) and counted(store, "subscribed") == MANY, "subs", 60)
            for n in range(MANY):
                device.publish(f"plugs/{n}/power", "100")
            wait_until(
                lambda: feed.publish_status(force=True) and counted(store, "messages_per_minute = 1") == MANY,
                "a message counted for every source",
                60,
            )
            started = time.perf_counter()
            assert feed.publish_status(force=True)
            took = time.perf_counter() - started
        finally:
            feed.close()
    assert took < 1.0, f"writing the states of {MANY} sources took {took:.1f} s"


def test_the_passwords_of_a_thousand_sources_are_read_in_one_go(tmp_path: Path, store: Store, box: SecretBox) -> None:
    """`sync` (every minute, on the collector's scheduler thread, which also hands the minutes over) read each
    source's password with a query of its own: 2.5 s for 1,000 sources."""
    port = free_port()  # nothing listens: the subscriber keeps trying, which costs the sync nothing
    ids = add_many(store, port, MANY, mqtt_user="dc")
    with store.transaction() as con:
        put_secrets(con, box, [(source_id, PASSWORD, "secret") for source_id in ids])
    catalog = cat.load_catalog(store)
    feed = feed_for(store, box)
    try:
        feed.sync(catalog)  # the first starts the subscriber
        started = time.perf_counter()
        feed.sync(catalog)
        took = time.perf_counter() - started
        assert len(feed._followed) == MANY
        assert {broker.password for broker, _ in feed._followed.values()} == {"secret"}
    finally:
        feed.close()
    assert took < 1.0, f"a sync of {MANY} MQTT sources took {took:.1f} s"


def test_a_password_that_cannot_be_decrypted_leaves_out_only_its_source(
    tmp_path: Path, store: Store, box: SecretBox, caplog: pytest.LogCaptureFixture
) -> None:
    users = {"dc": "right"}
    with (
        running_mosquitto(tmp_path / "broker", users=users) as broker,
        publisher(broker.port, username="dc", password="right") as device,
    ):
        own, lost, borrower = add_many(store, broker.port, 3, mqtt_user="dc")
        with store.transaction() as con:
            put_secrets(con, box, [(own, PASSWORD, "right")])
            put_secrets(con, SecretBox([generate_key()]), [(lost, PASSWORD, "right")])  # a key this box lacks
            con.execute(
                "UPDATE energy_sources SET metadata = json_merge_patch(metadata, json_object('credentialsSourceId', ?))"
                " WHERE id = ?",
                [own, borrower],
            )
        feed = feed_for(store, box)
        try:
            feed.sync(cat.load_catalog(store))
            assert set(feed._followed) == {own, borrower}
            wait_until(lambda: feed.publish_status(force=True) and counted(store, "subscribed") == 2, "both")
            device.publish("plugs/2/power", "7")
            wait_until(lambda: feed.publish_status(force=True) and counted(store, "messages_per_minute = 1"), "it")
            feed.sync(cat.load_catalog(store))  # said once, not at every sync
        finally:
            feed.close()
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and said[0].startswith(f"MQTT source {lost} not followed: its password cannot be read")


def test_the_states_can_be_written_while_a_sync_runs_on_another_thread(store: Store, box: SecretBox) -> None:
    """A status build indexed the subscribers by broker while `sync` (another thread, if the tick ever leaves the
    scheduler's) had already stopped and dropped one and not yet replaced the followed sources: KeyError. The build
    now reads one reference that each sync replaces whole."""
    first, second = free_port(), free_port()  # nothing listens on either: subscribers keep trying to connect
    ids = add_many(store, first, 20)
    on_first = cat.load_catalog(store)
    with store.transaction() as con:
        con.execute(
            "UPDATE energy_sources SET metadata = json_merge_patch(metadata, json_object('mqttPort', ?))", [second]
        )
    on_second = cat.load_catalog(store)
    feed = feed_for(store, box)
    stop = threading.Event()
    failures: list[BaseException] = []

    def syncing() -> None:
        try:
            while not stop.is_set():
                feed.sync(on_first)
                feed.sync(on_second)
        except BaseException as exc:  # said by the test below
            failures.append(exc)

    thread = threading.Thread(target=syncing)
    thread.start()
    writes = 0
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            writes += feed.publish_status(force=True)
    finally:
        stop.set()
        thread.join(30)
        feed.close()
    assert failures == [] and writes > 0
    assert counted(store, "true") == len(ids)


def test_the_status_table_says_when_a_write_is_due(store: Store) -> None:
    """`due()` lets a caller ticking every 2 s build its rows (1,000 sources' counters) only when they are written."""
    table = StatusTable(store, "mqtt_status", every_s=0.3)
    now = datetime.now(UTC)
    row = {"source_id": 1, "broker": "127.0.0.1:1883", "state": "connected", "reason": None, "since": now}
    row |= {"subscribed": True, "last_message_at": now, "messages_per_minute": 60, "payload_errors": 0}
    row |= {"last_payload_error": None, "updated_at": now}
    rows = pl.DataFrame([row], schema=STATUS_SCHEMA)
    assert table.due()
    assert table.publish(rows)
    assert not table.due() and not table.publish(rows)  # not due: nothing written
    time.sleep(0.35)
    assert table.due() and table.publish(rows)
    assert counted(store, "true") == 1
