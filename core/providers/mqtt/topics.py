"""Topic filters: the topic a source subscribes to, with MQTT's wildcards (docs/mqtt-devices.md).

`+` stands for exactly one level (`solar/+/0/power`: that channel of every OpenDTU inverter), `#` for any number of
levels and must come last (`shellies/#`). A wildcard fills a whole level. Matching is the MQTT client's own
(`paho.mqtt.client.topic_matches_sub`), so what we check and what the broker sends follow the same rules.
"""

from __future__ import annotations

from paho.mqtt.client import topic_matches_sub

MAX_TOPIC_BYTES = 65_535  # MQTT's limit on a topic's UTF-8 length


def check_filter(topic: str) -> str | None:
    """Why `topic` cannot be a subscription filter (None when it can), in a user's terms."""
    if not topic:
        return "The topic is empty."
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        return "The topic is longer than MQTT allows (65,535 bytes)."
    if "\x00" in topic:
        return "The topic contains a NUL character."
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return f"In `{topic}`, `#` must be a whole level and the last one (like `tele/#`)."
        if "+" in level and level != "+":
            return f"In `{topic}`, `+` must be a whole level (like `solar/+/0/power`)."
    return None


def matches(topic_filter: str, topic: str) -> bool:
    """Whether a message published on `topic` is delivered to a subscription to `topic_filter`."""
    return topic_matches_sub(topic_filter, topic)
