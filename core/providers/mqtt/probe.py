"""Test Connection for an MQTT source: connect to its broker, subscribe to its topic and wait a few seconds for a
message, then disconnect. Uses the collector's own `BrokerSubscriber`, so a test that passes means the collector's
connection will too; the answer is one sentence a user can act on, never with the password."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from core.providers.mqtt.status import ConnectionState
from core.providers.mqtt.subscriber import CONNECT_TIMEOUT_S, Broker, BrokerSubscriber, Sample, Subscription

MESSAGE_WAIT_S = 5.0  # long enough for a device publishing every few seconds; a page waits this long at most
_POLL_S = 0.05


@dataclass(frozen=True)
class ProbeResult:
    connected: bool
    message: str  # what happened, in a user's words
    value: float | None = None  # the first message's number (W, or Wh for a counter), when one arrived


def probe(
    broker: Broker,
    subscription: Subscription,
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S + 1,
    message_wait_s: float = MESSAGE_WAIT_S,
) -> ProbeResult:
    samples: list[Sample] = []
    arrived = threading.Event()

    def take(sample: Sample) -> None:
        samples.append(sample)
        arrived.set()

    # No backoff worth the name: the first failed attempt is the answer.
    subscriber = BrokerSubscriber(broker, [subscription], take, min_backoff_s=1, max_backoff_s=1)
    subscriber.start()
    try:
        return _watch(subscriber, subscription, samples, arrived, connect_timeout_s, message_wait_s)
    finally:
        subscriber.stop()


def _watch(
    subscriber: BrokerSubscriber,
    subscription: Subscription,
    samples: list[Sample],
    arrived: threading.Event,
    connect_timeout_s: float,
    message_wait_s: float,
) -> ProbeResult:
    where, topic = subscriber.broker.label, subscription.topic
    deadline = time.monotonic() + connect_timeout_s
    while True:
        status = subscriber.status()
        if status.state == ConnectionState.REFUSED or (status.state == ConnectionState.CONNECTING and status.reason):
            return ProbeResult(False, status.reason)
        if status.state == ConnectionState.CONNECTED and topic in status.subscribed:
            break
        if time.monotonic() > deadline:
            if status.state == ConnectionState.CONNECTED:
                return ProbeResult(False, f"Connected to {where}, but the broker did not confirm the subscription.")
            return ProbeResult(False, f"{where} did not answer within {connect_timeout_s:g} s.")
        time.sleep(_POLL_S)
    unit = "Wh" if subscription.reading.unit.is_counter else "W"
    end = time.monotonic() + message_wait_s
    while time.monotonic() < end:
        if arrived.wait(_POLL_S):
            value = samples[0].value
            said = f"Connected to {where} and subscribed to `{topic}`: a message arrived, {value:,.1f} {unit}."
            return ProbeResult(True, said, value)
        source = subscriber.status().sources.get(subscription.source_id)
        if source is not None and source.last_payload_error:
            return ProbeResult(
                False, f"Connected to {where} and subscribed to `{topic}`, but: {source.last_payload_error}"
            )
    return ProbeResult(
        True,
        f"Connected to {where} and subscribed to `{topic}`; no message arrived within {message_wait_s:g} s (a device"
        " that publishes less often is fine; check the topic if it should have).",
    )
