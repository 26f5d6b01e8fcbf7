"""MQTT sources on the pages through AppTest: Data Connections shows a source's broker and topic fields and says
what is wrong with a bad topic (saving nothing); API Health shows the collector's connection to the broker, written
by the real MQTT feed against a real Mosquitto broker."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.catalog import catalog as cat
from core.catalog.connections import new_draft, save_connections
from core.collect.mqtt_feed import MqttFeed
from core.config import load_settings
from core.models import Category, MeterIn, Provider
from core.runtime import open_runtime
from core.store.spool import Spool
from core.store.store import Store
from core.store.store_episodes import StoreEpisodes
from tests.markdown_text import shown
from tests.mqtt_broker import publisher, running_mosquitto, wait_until

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TOPIC = "shellyplus1pm-a8032ab12345/status/switch:0"


def open_page(page: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page(page).run()
    assert not app.exception
    return app


def test_data_connections_shows_the_mqtt_fields_and_refuses_a_bad_topic(app_env: Path) -> None:
    at = open_page("pages/data_connections.py")
    store = open_runtime(load_settings(), prepare=False).store
    source = next(s for s in cat.load_catalog(store).sources if s.name == "Rooftop PV Array")
    key = f"s{source.id}"
    at.selectbox(key=f"dc_{key}_api_provider").set_value("mqtt").run()
    labels = {
        w.label for w in [*at.text_input, *at.number_input, *at.checkbox, *at.selectbox] if w.key and key in w.key
    }
    assert {"Broker Host", "Broker Port", "TLS", "Broker User", "Topic", "Payload Path", "Unit"} <= labels
    assert "Broker Password" in labels
    at.text_input(key=f"dc_{key}_mqtt_mqtt_host").input("127.0.0.1")
    at.text_input(key=f"dc_{key}_mqtt_mqtt_topic").input("shellies/#/status")
    at.text_input(key=f"dc_{key}_mqtt_mqtt_payload_path").input("apower")
    at.button(key="dc_save_all").click().run()
    assert not at.exception
    errors = [shown(e.value) for e in at.error]
    # under the Topic field, as typed, and in the summary of problems
    assert "In `shellies/#/status`, `#` must be a whole level and the last one (like `tele/#`)." in errors, errors
    assert any(e.startswith("1 problem(s) to fix before saving; nothing was saved.") for e in errors)
    assert cat.load_catalog(store).source(source.id).api.api_provider is Provider.SIMULATOR  # nothing changed

    at.text_input(key=f"dc_{key}_mqtt_mqtt_topic").input(TOPIC)
    at.selectbox(key=f"dc_{key}_mqtt_mqtt_unit").set_value("W")
    at.button(key="dc_save_all").click().run()
    assert not at.exception
    api = cat.load_catalog(store).source(source.id).api
    assert (api.api_provider, api.mqtt_host, api.mqtt_topic, api.mqtt_payload_path) == (
        Provider.MQTT,
        "127.0.0.1",
        TOPIC,
        "apower",
    )


def test_api_health_shows_each_mqtt_source_connection(tmp_path: Path, app_env: Path) -> None:
    runtime = open_runtime(load_settings())
    store, box = runtime.store, runtime.box
    site = cat.load_catalog(store).sites[0]
    meter = cat.create_meter(store, site.id, MeterIn(name="Plugs", category=Category.CONS))
    spool = Spool.beside(store.path)
    with (
        running_mosquitto(tmp_path / "open") as broker,
        running_mosquitto(tmp_path / "locked", users={"dc": "right"}) as locked,
        publisher(broker.port) as device,
    ):
        drafts = []
        for name, port, user, password in (("Washer", broker.port, "", ""), ("Dryer", locked.port, "dc", "wrong")):
            draft = new_draft(f"new-{name}", meter.id, Category.CONS)
            draft.values |= {"name": name, "capacity_kw": "3", "use_api": True, "api_provider": "mqtt"}
            draft.values |= {"mqtt_host": "127.0.0.1", "mqtt_port": port, "mqtt_topic": TOPIC, "mqtt_user": user}
            draft.values |= {"mqtt_payload_path": "apower", "update_frequency": "5min"}
            if password:
                draft.secrets["mqtt_password"] = password
            drafts.append(draft)
        save_connections(store, box, site.id, drafts, set())
        feed = MqttFeed(store, box, spool, StoreEpisodes(store, spool.directory), min_backoff_s=1, max_backoff_s=1)
        try:
            feed.sync(cat.load_catalog(store))
            wait_until(lambda: feed.publish_status(force=True) and _states(store) == {"connected", "refused"}, "both")
            device.publish(TOPIC, '{"id":0,"apower":10.7}')
            device.publish(TOPIC, '{"id":0,"output":true}')
            wait_until(lambda: feed.publish_status(force=True) and _errors(store) == 1, "the payload error")
            feed.tick(datetime.now(UTC) + timedelta(minutes=3))  # the Washer's minutes written
            assert feed.writer.flush(10)
            assert feed.publish_status(force=True)
            at = open_page("pages/api_health.py")  # while the collector's feed runs
        finally:
            feed.close()
    *_, sources, mqtt = (frame.value for frame in at.dataframe)
    sources, mqtt = sources.set_index("Source"), mqtt.set_index("Source")
    expected = r".*\(in [45] min\) · published by its device, expected every 5 min"
    assert re.fullmatch(expected, sources.loc["Washer", "Next poll"])
    assert sources.loc["Dryer", "Next poll"] == "waiting for its device's first message"
    assert mqtt.loc["Washer", "Connection"] == "connected"
    assert mqtt.loc["Washer", "Messages/min"] == "2"
    assert mqtt.loc["Washer", "Payload errors"] == "1: There is no `apower` in the message (it has: id, output)."
    assert mqtt.loc["Dryer", "Connection"] == (
        "refused: The broker refused the user name or password (or this user is not allowed to connect)."
    )
    assert "wrong" not in mqtt.to_string()


def _states(store: Store) -> set[str]:
    """The states of the sources' connections, a connected one counting once its topic is subscribed."""
    with store.connect(read_only=True) as con:
        rows = con.sql("SELECT state FROM mqtt_status WHERE state <> 'connected' OR subscribed").fetchall()
    return {row[0] for row in rows}


def _errors(store: Store) -> int:
    with store.connect(read_only=True) as con:
        found = con.sql("SELECT max(payload_errors) FROM mqtt_status").fetchall()[0][0]
    return int(found or 0)
