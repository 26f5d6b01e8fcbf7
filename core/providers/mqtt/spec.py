"""MQTT as the rest of the program sees it (`core.providers.spec`): no vendor, no client, no budget; the collector
subscribes to the source's broker and turns what the device publishes into minute readings
(`core.collect.mqtt_feed`). The broker's password is the one credential (optional: many home brokers take anonymous
clients); the rest of the connection lives in `ApiSettings` (`mqtt_host` ... `mqtt_unit`) and is checked here in a
user's terms.
"""

from __future__ import annotations

from core.models import ApiSettings, Provider
from core.providers.mqtt.payload import Unit, check_path
from core.providers.spec import Credential, ProviderSpec

PASSWORD = "mqtt_password"
UNITS = tuple(unit.value for unit in Unit)


def check_settings(api: ApiSettings) -> dict[str, str]:
    """{field: message} for an MQTT source's broker and topic settings; the messages stand under their field."""
    # Imported here: topics.py brings Paho, and specs stay light for the pages that only read them.
    from core.providers.mqtt.topics import check_filter

    errors: dict[str, str] = {}
    host = api.mqtt_host.strip()
    if not host:
        errors["mqtt_host"] = "is required for MQTT (the broker's host name or IP address)"
    elif any(ch.isspace() for ch in host) or "/" in host:
        errors["mqtt_host"] = "must be a host name or IP address only (no spaces, no mqtt:// or path)"
    if not api.mqtt_topic:
        errors["mqtt_topic"] = "is required for MQTT (the topic the device publishes on)"
    elif problem := check_filter(api.mqtt_topic):
        errors["mqtt_topic"] = problem
    if problem := check_path(api.mqtt_payload_path):
        errors["mqtt_payload_path"] = problem
    if api.mqtt_unit not in UNITS:
        errors["mqtt_unit"] = f"must be one of {', '.join(UNITS)} (got {api.mqtt_unit[:10]!r})"
    return errors


SPEC = ProviderSpec(
    provider=Provider.MQTT,
    label="MQTT",
    build_client=None,
    delivery="subscribe",
    credentials=(Credential(PASSWORD, "Broker Password", required=False),),
    check_settings=check_settings,
)
