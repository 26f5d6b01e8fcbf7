"""MQTT sources as users configure them: validation in their terms (Data Connections and the config file), the
password stored encrypted, and Test Connection against a real Mosquitto broker (tests/mqtt_broker.py)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.catalog import catalog as cat
from core.catalog import connections
from core.catalog.config_export import export_config
from core.catalog.config_io import ConfigImportError, import_config
from core.catalog.connections import SaveRejected, new_draft, save_connections
from core.config import Settings
from core.models import Category, ConnectionStatus, MeterIn, SiteIn
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.store.crypto import SecretBox
from core.store.secret_store import load_secrets
from core.store.store import Store
from tests.mqtt_broker import publisher, running_mosquitto

CONTEXT = ProviderContext(Settings(), QuotaLedger())
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def site(store: Store) -> cat.Site:
    return cat.create_site(store, SiteIn(name="Home", latitude=50.85, longitude=4.35, timezone="Europe/Brussels"))


@pytest.fixture
def load_meter(store: Store, site: cat.Site) -> cat.Meter:
    return cat.create_meter(store, site.id, MeterIn(name="Plugs", category=Category.CONS))


def mqtt_draft(meter: cat.Meter, key: str = "new-plug", password: str = "", **values: object):  # type: ignore[no-untyped-def]
    draft = new_draft(key, meter.id, meter.category)
    draft.values |= {"name": "Fridge plug", "capacity_kw": "1", "use_api": True, "api_provider": "mqtt"}
    draft.values |= {"update_frequency": "5min", "mqtt_host": "127.0.0.1", "mqtt_topic": "tele/fridge/SENSOR"}
    draft.values |= {"mqtt_payload_path": "ENERGY.Power"} | values
    if password:
        draft.secrets["mqtt_password"] = password
    return draft


def test_bad_settings_get_one_message_each_and_nothing_is_saved(
    store: Store, box: SecretBox, site: cat.Site, load_meter: cat.Meter
) -> None:
    bad = mqtt_draft(load_meter, mqtt_host="", mqtt_topic="tele/#/SENSOR", mqtt_payload_path="ENERGY..Power")
    bad.values["mqtt_unit"] = "MW"
    with pytest.raises(SaveRejected) as info:
        save_connections(store, box, site.id, [bad], set())
    assert info.value.errors == {
        "new-plug": {
            "mqtt_host": "is required for MQTT (the broker's host name or IP address)",
            "mqtt_topic": "In `tele/#/SENSOR`, `#` must be a whole level and the last one (like `tele/#`).",
            "mqtt_payload_path": "The payload path `ENERGY..Power` has an empty name between dots (write it like"
            " `ENERGY.Power`).",
            "mqtt_unit": "must be one of W, kW, Wh, kWh (got 'MW')",
        }
    }
    assert cat.load_catalog(store).sources == []


def test_a_saved_source_keeps_its_settings_and_its_password_only_encrypted(
    store: Store, box: SecretBox, site: cat.Site, load_meter: cat.Meter
) -> None:
    draft = mqtt_draft(load_meter, password="pl4in-s3cret", mqtt_port=8883, mqtt_tls=True, mqtt_user="dc")
    save_connections(store, box, site.id, [draft], set())
    (source,) = cat.load_catalog(store).sources
    api = source.api
    assert (api.mqtt_host, api.mqtt_port, api.mqtt_tls, api.mqtt_user) == ("127.0.0.1", 8883, True, "dc")
    assert (api.mqtt_topic, api.mqtt_payload_path, api.mqtt_unit) == ("tele/fridge/SENSOR", "ENERGY.Power", "W")
    assert load_secrets(store, box, source.id)["mqtt_password"].get_secret_value() == "pl4in-s3cret"
    assert b"pl4in-s3cret" not in Path(store.path).read_bytes()
    exported = export_config(store)["sites"][0]["meters"][0]["sources"][0]["api"]
    assert exported["mqtt_topic"] == "tele/fridge/SENSOR" and exported["mqtt_port"] == 8883


def test_test_connection_reports_a_message_and_its_value(
    tmp_path: Path, store: Store, box: SecretBox, site: cat.Site, load_meter: cat.Meter
) -> None:
    with running_mosquitto(tmp_path / "broker") as broker, publisher(broker.port) as device:
        draft = mqtt_draft(load_meter, mqtt_port=broker.port)
        stop = threading.Event()

        def publish() -> None:
            while not stop.wait(0.3):
                device.publish("tele/fridge/SENSOR", '{"ENERGY":{"Power":87.5,"Total":514.1}}')

        thread = threading.Thread(target=publish)
        thread.start()
        try:
            outcome = connections.test_connection(store, box, site.id, draft, NOW, CONTEXT)
        finally:
            stop.set()
            thread.join()
    assert outcome.status is ConnectionStatus.CONNECTED
    assert outcome.message == (
        f"Connected to 127.0.0.1:{broker.port} and subscribed to `tele/fridge/SENSOR`: a message arrived, 87.5 W."
    )
    assert outcome.power_w == 87.5


def test_test_connection_says_why_not(
    tmp_path: Path, store: Store, box: SecretBox, site: cat.Site, load_meter: cat.Meter
) -> None:
    users = {"device": "right-password"}
    with running_mosquitto(tmp_path / "broker", users=users) as broker:
        wrong = mqtt_draft(load_meter, password="wr0ng-password", mqtt_port=broker.port, mqtt_user="device")
        refused = connections.test_connection(store, box, site.id, wrong, NOW, CONTEXT)
        quiet = mqtt_draft(load_meter, password="right-password", mqtt_port=broker.port, mqtt_user="device")
        started = time.monotonic()
        silent = connections.test_connection(store, box, site.id, quiet, NOW, CONTEXT)
        waited = time.monotonic() - started
        port = broker.port
    nobody = connections.test_connection(store, box, site.id, mqtt_draft(load_meter, mqtt_port=port), NOW, CONTEXT)
    assert refused.status is ConnectionStatus.FAILED
    assert refused.message == "The broker refused the user name or password (or this user is not allowed to connect)."
    assert "wr0ng" not in refused.message
    assert silent.status is ConnectionStatus.CONNECTED and "no message arrived within 5 s" in silent.message
    assert 4.5 < waited < 8
    assert nobody.status is ConnectionStatus.FAILED
    assert nobody.message == (
        f"Nothing accepts connections on 127.0.0.1:{port}: is the broker running, and is the port right?"
    )


def mqtt_file_source(**api: object) -> dict[str, object]:
    settings = {"enabled": True, "provider": "mqtt", "update_frequency": "5min", "mqtt_host": "broker.lan"}
    return {
        "name": "Plug",
        "source_type": "load",
        "capacity_kw": 1,
        "carbon_intensity_g_per_kwh": 0,
        "cost_per_mwh": 0,
        "api": settings | api,
    }


def mqtt_file(source: dict[str, object]) -> dict[str, object]:
    meter = {"name": "Plugs", "category": "CONS", "sources": [source]}
    site = {"name": "Flat", "latitude": 50.5, "longitude": 4.25, "timezone": "Europe/Brussels", "meters": [meter]}
    return {"version": 1, "sites": [site]}


def test_config_import_checks_mqtt_settings_alike_and_round_trips(store: Store, box: SecretBox) -> None:
    bad = mqtt_file(mqtt_file_source(mqtt_topic="tele/+x/SENSOR", mqtt_port=70_000))
    with pytest.raises(ConfigImportError) as caught:
        import_config(store, box, bad, environ={})
    assert caught.value.errors == ["sites[0].meters[0].sources[0].api.mqtt_port: Broker Port must be at most 65,535"]
    bad = mqtt_file(mqtt_file_source(mqtt_topic="tele/+x/SENSOR"))
    with pytest.raises(ConfigImportError) as caught:
        import_config(store, box, bad, environ={})
    assert caught.value.errors == [
        "sites[0].meters[0].sources[0].api.mqtt_topic: Topic: In `tele/+x/SENSOR`, `+` must be a whole level (like"
        " `solar/+/0/power`)."
    ]
    assert cat.load_catalog(store).sources == []

    good = mqtt_file(mqtt_file_source(mqtt_topic="tele/plug/SENSOR", mqtt_user="dc", mqtt_payload_path="ENERGY.Total"))
    source_entry = good["sites"][0]["meters"][0]["sources"][0]  # type: ignore[index]
    source_entry["credentials"] = {"mqtt_password": {"env": "MQTT_PASSWORD"}}
    import_config(store, box, good, environ={"MQTT_PASSWORD": "from-env"})
    (source,) = cat.load_catalog(store).sources
    api = source.api
    assert (api.mqtt_host, api.mqtt_topic, api.mqtt_user) == ("broker.lan", "tele/plug/SENSOR", "dc")
    assert load_secrets(store, box, source.id)["mqtt_password"].get_secret_value() == "from-env"
    exported = export_config(store)["sites"][0]["meters"][0]["sources"][0]["api"]
    assert exported["mqtt_payload_path"] == "ENERGY.Total" and "from-env" not in str(export_config(store))
