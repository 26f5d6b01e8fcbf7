"""`make sandbox`'s simulated MQTT devices publish what the README says: each topic's message is read by the payload
path and unit listed there, on a real Mosquitto broker."""

from __future__ import annotations

import threading
from pathlib import Path

from paho.mqtt.client import Client, MQTTMessage, MQTTv311
from paho.mqtt.enums import CallbackAPIVersion

from core.providers.mqtt.payload import PayloadReading, Unit
from tests.fakes import mqtt_devices
from tests.mqtt_broker import running_mosquitto, wait_until
from tests.processes import run_module

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
# What the README's Sandbox section tells a user to enter, and what the simulated device must then give.
SETTINGS = {
    mqtt_devices.TASMOTA_TOPIC: PayloadReading("ENERGY.Power", Unit.W),
    mqtt_devices.SHELLY_TOPIC: PayloadReading("apower", Unit.W),
    mqtt_devices.OPENDTU_AC_POWER: PayloadReading("", Unit.W),
    mqtt_devices.OPENDTU_YIELD_TOTAL: PayloadReading("", Unit.KWH),
}


def test_each_simulated_device_is_read_with_the_settings_the_readme_gives(tmp_path: Path) -> None:
    received: dict[str, bytes] = {}
    lock = threading.Lock()

    def keep(client: Client, userdata: object, message: MQTTMessage) -> None:
        with lock:
            received[message.topic] = bytes(message.payload)

    with running_mosquitto(tmp_path / "broker") as broker:
        listener = Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTv311)
        listener.on_message = keep
        listener.connect("127.0.0.1", broker.port)
        listener.subscribe("#", qos=1)
        listener.loop_start()
        try:
            result = run_module("tests.fakes.mqtt_devices", "--port", str(broker.port), "--once", timeout=30)
            assert result.returncode == 0, result.stderr
            wait_until(lambda: set(SETTINGS) <= set(received), "every device's message")
        finally:
            listener.disconnect()
            listener.loop_stop()
    for topic, reading in SETTINGS.items():
        value = reading.read(received[topic])
        assert value >= 0, topic
    assert SETTINGS[mqtt_devices.TASMOTA_TOPIC].read(received[mqtt_devices.TASMOTA_TOPIC]) in (2.0, *range(82, 89))
    assert SETTINGS[mqtt_devices.OPENDTU_YIELD_TOTAL].read(received[mqtt_devices.OPENDTU_YIELD_TOTAL]) > 1_234_000
    for topic in (mqtt_devices.TASMOTA_TOPIC, mqtt_devices.SHELLY_TOPIC, mqtt_devices.OPENDTU_AC_POWER):
        assert f"`{topic}`" in README
