"""An MQTT source's stored settings (`ApiSettings.mqtt_*` and its decrypted password) as what the subscriber takes:
the `Broker` to connect to and the `Subscription` to make. One place, so Test Connection and the collector connect
alike."""

from __future__ import annotations

from collections.abc import Hashable

from core.models import ApiSettings
from core.providers.mqtt.payload import PayloadReading, Unit
from core.providers.mqtt.subscriber import Broker, Subscription


def broker_of(api: ApiSettings, password: str) -> Broker:
    return Broker(
        host=api.mqtt_host.strip(),
        port=api.mqtt_port,
        tls=api.mqtt_tls,
        username=api.mqtt_user,
        password=password,
    )


def subscription_of(source_id: Hashable, api: ApiSettings) -> Subscription:
    return Subscription(source_id, api.mqtt_topic, PayloadReading(api.mqtt_payload_path, Unit(api.mqtt_unit)))
