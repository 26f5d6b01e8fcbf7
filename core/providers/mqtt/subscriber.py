"""One connection to one MQTT broker, subscribed to the topics of every source on it (docs/real-time.md).

The collector holds one `BrokerSubscriber` per `Broker` (host, port, TLS, user name, password: sources that share
all five share the connection). Its network thread is Paho's (`loop_start`); for each message on a source's topic
it reads the source's number (`payload.PayloadReading`) and hands a `Sample` to the callback, in that thread: the
callback must be quick and thread-safe (`aggregate.MinuteAggregator.add` is).

- **Time**: a sample's time is when the message arrived here (UTC). Devices' own time fields are left alone: many
  send local time without an offset, and a device's clock is not ours to trust.
- **Retained messages** (the broker's stored last value, sent on subscribing) are skipped: the time they describe
  is unknown, and a retained counter would make the first span swallow all the energy since it was published.
- **Reconnecting**: when the broker cannot be reached or goes away, Paho retries after 1, 2, 4 ... s, at most
  `max_backoff_s`, and we subscribe again on every connection (the session is clean). A refusal (wrong user name
  or password, not authorised) is retried on the same backoff: the broker's administrator may fix it without us.
- **State** (`status()`): connecting / connected / refused with the reason, the last message, messages per minute,
  payload errors with the last reason, per broker and per source (`status.BrokerStatus`).
- **Secrets**: the password goes to Paho and nowhere else: a broker is named by host and port in every log line
  and reason, Paho's own logger is not enabled, and `Broker`'s repr leaves the password out.
- **Stopping** (`stop`) disconnects and joins the network thread (a few seconds at most, while a connect attempt
  times out).
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage, MQTTv311
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.providers.mqtt.payload import PayloadError, PayloadReading
from core.providers.mqtt.status import BrokerActivity, BrokerStatus, ConnectionState

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
DEFAULT_KEEPALIVE_S = 30  # the broker notices a dead client, and we a dead broker, within 1.5 of this
DEFAULT_MIN_BACKOFF_S = 1
DEFAULT_MAX_BACKOFF_S = 60
CONNECT_TIMEOUT_S = 5.0
_BAD_CREDENTIALS, _NOT_AUTHORISED = 134, 135  # CONNACK reason codes (MQTT 3.1.1's 4 and 5, as Paho maps them)


@dataclass(frozen=True)
class Broker:
    """Where and as whom to connect. `ca_file`: trust this CA instead of the system's store (a private broker)."""

    host: str
    port: int = DEFAULT_PORT
    tls: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str | None = None

    @property
    def label(self) -> str:
        """How logs and API Health name the broker: host and port, never a credential."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Subscription:
    """A source's topic filter (wildcards allowed) and where its number is in a message."""

    source_id: Hashable
    topic: str
    reading: PayloadReading = field(default_factory=PayloadReading)


@dataclass(frozen=True)
class Sample:
    """One message's number: `value` in W, or in Wh when `counter` (a cumulative energy counter)."""

    source_id: Hashable
    at: datetime
    value: float
    counter: bool


class BrokerSubscriber:
    """One broker's connection; `start()`, `update()` the subscriptions at any time, `status()`, `stop()`."""

    def __init__(
        self,
        broker: Broker,
        subscriptions: Iterable[Subscription],
        on_sample: Callable[[Sample], None],
        *,
        keepalive_s: int = DEFAULT_KEEPALIVE_S,
        min_backoff_s: int = DEFAULT_MIN_BACKOFF_S,
        max_backoff_s: int = DEFAULT_MAX_BACKOFF_S,
    ) -> None:
        self.broker = broker
        self._on_sample = on_sample
        self._keepalive_s = keepalive_s
        self._activity = BrokerActivity(broker.label)
        self._lock = threading.Lock()  # guards _by_topic, read by the network thread
        self._by_topic: dict[str, tuple[Subscription, ...]] = {}
        # SUBSCRIBE message id -> its filters; the lock is held from sending to recording, as the answer may come first
        self._pending_lock = threading.Lock()
        self._pending: dict[int, list[str]] = {}
        self._stopping = False
        self._client = Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"dataconn-{uuid.uuid4().hex[:12]}",
            clean_session=True,
            protocol=MQTTv311,
        )
        self._client.suppress_exceptions = True  # an error of ours must never end the network thread
        self._client.connect_timeout = CONNECT_TIMEOUT_S
        self._client.reconnect_delay_set(min_delay=min_backoff_s, max_delay=max_backoff_s)
        if broker.username or broker.password:
            self._client.username_pw_set(broker.username, broker.password or None)
        if broker.tls:
            # The system's CA store (or the broker's own CA), and the host name checked against the certificate.
            self._client.tls_set_context(ssl.create_default_context(cafile=broker.ca_file))
        self._client.on_connect = self._connected
        self._client.on_connect_fail = self._connect_failed
        self._client.on_disconnect = self._disconnected
        self._client.on_subscribe = self._subscribed
        self.update(subscriptions)

    def start(self) -> None:
        """Connect in the background (the first attempt too is retried until `stop`)."""
        self._activity.set_state(ConnectionState.CONNECTING)
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=self._keepalive_s)
        self._client.loop_start()

    def update(self, subscriptions: Iterable[Subscription]) -> None:
        """Follow a new list of subscriptions: new topic filters are subscribed, dropped ones unsubscribed."""
        by_topic: dict[str, list[Subscription]] = {}
        for subscription in subscriptions:
            by_topic.setdefault(subscription.topic, []).append(subscription)
        with self._lock:
            added = [topic for topic in by_topic if topic not in self._by_topic]
            removed = [topic for topic in self._by_topic if topic not in by_topic]
            self._by_topic = {topic: tuple(subs) for topic, subs in by_topic.items()}
        for topic in removed:
            self._client.message_callback_remove(topic)
        for topic in added:
            # Paho's own matcher sends each message to the callback of every filter it matches.
            self._client.message_callback_add(topic, self._on_topic(topic))
        self._activity.keep_only({s.source_id for subs in by_topic.values() for s in subs})
        if self._activity.state == ConnectionState.CONNECTED:
            if removed:
                self._client.unsubscribe(removed)
                self._activity.unsubscribed(removed)
            self._subscribe(added)

    def status(self) -> BrokerStatus:
        return self._activity.snapshot(time.time())

    def stop(self) -> None:
        """Disconnect and end the network thread."""
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self._activity.set_state(ConnectionState.STOPPED)

    # Paho's callbacks, in its network thread.

    def _connected(
        self, client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if reason.is_failure:
            self._set_state(ConnectionState.REFUSED, _refusal(reason))
            return
        self._set_state(ConnectionState.CONNECTED)
        with self._lock:
            topics = list(self._by_topic)
        self._subscribe(topics)

    def _connect_failed(self, client: Client, userdata: Any) -> None:
        # Paho calls this inside its `except OSError` around the connect, so the exception is the one in flight.
        self._set_state(ConnectionState.CONNECTING, _unreachable(self.broker, sys.exc_info()[1]))

    def _disconnected(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        state = self._activity.state
        if self._stopping or state == ConnectionState.REFUSED:
            return  # a refusal keeps its reason until a connection succeeds
        if state == ConnectionState.CONNECTED:
            self._set_state(
                ConnectionState.CONNECTING, f"The connection to {self.broker.label} was lost; reconnecting."
            )
        else:  # closed before the broker said yes or no: typically TLS spoken to a plain port, or the reverse
            self._set_state(
                ConnectionState.CONNECTING,
                f"{self.broker.label} closed the connection without answering; check the port and whether it uses TLS.",
            )

    def _subscribed(
        self, client: Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Properties | None
    ) -> None:
        with self._pending_lock:
            topics = self._pending.pop(mid, [])
        refused = [topic for topic, reason in zip(topics, reasons, strict=False) if reason.is_failure]
        self._activity.subscribed([topic for topic in topics if topic not in refused])
        if refused:
            log.warning("MQTT broker %s refused the subscription to %s", self.broker.label, ", ".join(refused))
            for topic in refused:
                with self._lock:
                    subs = self._by_topic.get(topic, ())
                for sub in subs:
                    self._activity.payload_error(sub.source_id, topic, "The broker refused this topic (not allowed).")

    def _on_topic(self, topic_filter: str) -> Callable[[Client, Any, MQTTMessage], None]:
        def on_message(client: Client, userdata: Any, message: MQTTMessage) -> None:
            self._message(topic_filter, message)

        return on_message

    def _message(self, topic_filter: str, message: MQTTMessage) -> None:
        if message.retain:
            return  # see the module docstring
        now = time.time()
        at = datetime.fromtimestamp(now, UTC)
        with self._lock:
            subs = self._by_topic.get(topic_filter, ())
        for sub in subs:
            self._activity.message(sub.source_id, now)
            try:
                value = sub.reading.read(bytes(message.payload))
            except PayloadError as exc:
                if self._activity.payload_error(sub.source_id, message.topic, str(exc)):
                    log.warning("MQTT source %s, topic %s: %s", sub.source_id, message.topic, exc)
                continue
            try:
                self._on_sample(Sample(sub.source_id, at, value, sub.reading.unit.is_counter))
            except Exception:
                log.error("MQTT source %s: a sample could not be taken", sub.source_id)
                log.debug("Sample handler failed", exc_info=True)

    def _subscribe(self, topics: list[str]) -> None:
        if not topics:
            return
        with self._pending_lock:
            _, mid = self._client.subscribe([(topic, 0) for topic in topics])
            if mid is not None:
                self._pending[mid] = topics

    def _set_state(self, state: ConnectionState, reason: str = "") -> None:
        if self._activity.set_state(state, reason):
            level = logging.INFO if state == ConnectionState.CONNECTED else logging.WARNING
            log.log(level, "MQTT broker %s: %s%s", self.broker.label, state, f" ({reason})" if reason else "")


def _refusal(reason: ReasonCode) -> str:
    if reason.value in (_BAD_CREDENTIALS, _NOT_AUTHORISED):
        return "The broker refused the user name or password (or this user is not allowed to connect)."
    return f"The broker refused the connection: {reason.getName()}."


def _unreachable(broker: Broker, error: BaseException | None) -> str:
    where = broker.label
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"The certificate of {where} is not trusted ({error.verify_message}); check the host name and TLS."
    if isinstance(error, ssl.SSLError):
        return f"TLS with {where} failed; check that this port speaks TLS and that TLS is on ({error.reason})."
    if isinstance(error, socket.gaierror):
        return f"The host name {broker.host} could not be resolved."
    if isinstance(error, ConnectionResetError | ConnectionAbortedError) and broker.tls:
        # A plain-MQTT port answers a TLS hello by dropping the connection: the one likely cause worth naming.
        return f"{where} closed the connection at the TLS handshake; check that this port speaks TLS (usually 8883)."
    if isinstance(error, ConnectionRefusedError):
        return f"Nothing accepts connections on {where}: is the broker running, and is the port right?"
    if isinstance(error, TimeoutError | socket.timeout):
        return f"{where} did not answer within {CONNECT_TIMEOUT_S:g} s."
    if isinstance(error, OSError):
        return f"{where} could not be reached: {error.strerror or type(error).__name__}."
    return f"{where} could not be reached."
