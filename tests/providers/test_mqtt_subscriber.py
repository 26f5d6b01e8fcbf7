"""One broker connection (core.providers.mqtt.subscriber) against a real Mosquitto broker started by the test:
device messages become samples, wildcards, payload errors, a refused password, a broker that dies and comes back,
TLS, subscriptions changed while connected, and a clean stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.providers.mqtt.payload import PayloadReading, Unit
from core.providers.mqtt.status import ConnectionState
from core.providers.mqtt.subscriber import Broker, BrokerSubscriber, Sample, Subscription
from tests.fakes.server import free_port
from tests.mqtt_broker import Mosquitto, make_tls_files, publisher, running_mosquitto, wait_until
from tests.providers.test_mqtt_payload import SHELLY_SWITCH, TASMOTA_SENSOR

PASSWORD = "s3cret-Broker-pw"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    with running_mosquitto(tmp_path / "broker") as broker:
        yield broker


@contextmanager
def subscriber(broker: Broker, subscriptions: list[Subscription]) -> Iterator[tuple[BrokerSubscriber, list[Sample]]]:
    samples: list[Sample] = []
    connection = BrokerSubscriber(broker, subscriptions, samples.append, min_backoff_s=1, max_backoff_s=2)
    connection.start()
    try:
        yield connection, samples
    finally:
        connection.stop()


def subscribed(connection: BrokerSubscriber, *filters: str) -> None:
    wait_until(lambda: connection.status().subscribed == tuple(sorted(filters)), f"subscriptions to {filters}")


def test_each_documented_device_format_becomes_samples(mosquitto: Mosquitto) -> None:
    subscriptions = [
        Subscription(1, "tele/+/SENSOR", PayloadReading("ENERGY.Power", Unit.W)),
        Subscription(2, "tele/+/SENSOR", PayloadReading("ENERGY.Total", Unit.KWH)),  # the same message, twice used
        Subscription(3, "shellyplus1pm-a8032ab12345/status/switch:0", PayloadReading("apower", Unit.W)),
        Subscription(4, "shellyplus1pm-a8032ab12345/status/switch:0", PayloadReading("aenergy.total", Unit.WH)),
        Subscription(5, "solar/+/0/power", PayloadReading("", Unit.W)),
        Subscription(6, "solar/+/0/yieldtotal", PayloadReading("", Unit.KWH)),
    ]
    with subscriber(Broker("127.0.0.1", mosquitto.port), subscriptions) as (connection, samples):
        subscribed(connection, *{subscription.topic for subscription in subscriptions})
        before = datetime.now(UTC)
        with publisher(mosquitto.port) as device:
            device.publish("tele/plug/SENSOR", TASMOTA_SENSOR)
            device.publish("shellyplus1pm-a8032ab12345/status/switch:0", SHELLY_SWITCH)
            device.publish("solar/116491234567/0/power", "123.4")
            device.publish("solar/116491234567/0/yieldtotal", "1234.567")
        wait_until(lambda: len(samples) == 6, "six samples")
        after = datetime.now(UTC)
    got = {sample.source_id: (sample.value, sample.counter) for sample in samples}
    assert got == {
        1: (56.0, False),
        2: (pytest.approx(514_153.0), True),
        3: (10.7, False),
        4: (46_791.262, True),
        5: (123.4, False),
        6: (pytest.approx(1_234_567.0), True),
    }
    assert all(before <= sample.at <= after for sample in samples)
    status = connection.status()
    assert status.state == ConnectionState.STOPPED and status.payload_errors == 0
    assert status.sources[1].last_message_at is not None and status.sources[1].messages_per_minute == 1


def test_wildcards_take_what_matches_and_nothing_else(mosquitto: Mosquitto) -> None:
    subscriptions = [Subscription(1, "solar/+/0/power"), Subscription(2, "shellies/#")]
    with subscriber(Broker("127.0.0.1", mosquitto.port), subscriptions) as (connection, samples):
        subscribed(connection, "solar/+/0/power", "shellies/#")
        with publisher(mosquitto.port) as device:
            for topic, value in [
                ("solar/A/0/power", "1"),
                ("solar/A/1/power", "99"),  # a DC input, not the AC channel
                ("solar/A/0/powerdc", "99"),
                ("solar/B/0/power", "2"),
                ("shellies/plug/relay/0/power", "3"),
                ("shellies", "4"),  # `#` also matches the parent level
                ("other/solar/A/0/power", "99"),
                ("shellies/last", "5"),  # delivered after all the others: once it is here, they would be too
            ]:
                device.publish(topic, value)
        wait_until(lambda: any(sample.value == 5.0 for sample in samples), "the last message")
    assert sorted((sample.source_id, sample.value) for sample in samples) == [
        (1, 1.0),
        (1, 2.0),
        (2, 3.0),
        (2, 4.0),
        (2, 5.0),
    ]


def test_a_payload_without_the_number_is_counted_with_its_reason_and_gives_no_sample(mosquitto: Mosquitto) -> None:
    subscriptions = [Subscription(7, "tele/plug/SENSOR", PayloadReading("ENERGY.Powr"))]
    with subscriber(Broker("127.0.0.1", mosquitto.port), subscriptions) as (connection, samples):
        subscribed(connection, "tele/plug/SENSOR")
        with publisher(mosquitto.port) as device:
            device.publish("tele/plug/SENSOR", TASMOTA_SENSOR)
            device.publish("tele/plug/SENSOR", TASMOTA_SENSOR)
        wait_until(lambda: connection.status().payload_errors == 2, "two payload errors")
        status = connection.status()
    assert samples == []
    reason = "There is no `Powr` in `ENERGY` (it has: ApparentPower, Current, Factor, Period, Power, ReactivePower,"
    assert status.last_payload_error.startswith(f"tele/plug/SENSOR: {reason}")
    assert status.sources[7].payload_errors == 2 and status.sources[7].last_payload_error.startswith(reason)
    assert status.messages_per_minute == 2 and status.last_message_at is not None


def test_a_retained_value_is_skipped_and_live_messages_are_taken(mosquitto: Mosquitto) -> None:
    with publisher(mosquitto.port) as device:
        device.publish("solar/A/0/power", "111", retain=True)  # stored by the broker, of unknown age
        with subscriber(Broker("127.0.0.1", mosquitto.port), [Subscription(1, "solar/A/0/power")]) as (c, samples):
            subscribed(c, "solar/A/0/power")
            device.publish("solar/A/0/power", "222")
            wait_until(lambda: samples, "the live message")
            assert c.status().messages_per_minute == 1
    assert [sample.value for sample in samples] == [222.0]


def test_a_wrong_password_is_refused_and_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with running_mosquitto(tmp_path / "broker", users={"meter": PASSWORD}) as broker:
        wrong = Broker("127.0.0.1", broker.port, username="meter", password=PASSWORD[::-1])
        with subscriber(wrong, [Subscription(1, "solar/+/0/power")]) as (connection, samples):
            wait_until(lambda: connection.status().state == ConnectionState.REFUSED, "the refusal")
            refused = connection.status()
        right = Broker("127.0.0.1", broker.port, username="meter", password=PASSWORD)
        with subscriber(right, [Subscription(1, "solar/+/0/power")]) as (connection, samples):
            subscribed(connection, "solar/+/0/power")
            with publisher(broker.port, username="meter", password=PASSWORD) as device:
                device.publish("solar/A/0/power", "42")
            wait_until(lambda: samples, "a sample with the right password")
    assert refused.reason == "The broker refused the user name or password (or this user is not allowed to connect)."
    assert refused.subscribed == () and refused.broker == f"127.0.0.1:{broker.port}"
    assert "refused" in caplog.text  # the state change was logged ...
    for secret in (PASSWORD, PASSWORD[::-1]):  # ... and neither password, anywhere
        assert secret not in caplog.text
        assert secret not in repr(refused) and secret not in repr(wrong)
        assert secret not in broker.log.read_text()


def test_the_subscriber_reconnects_when_the_broker_comes_back(mosquitto: Mosquitto) -> None:
    with subscriber(Broker("127.0.0.1", mosquitto.port), [Subscription(1, "solar/+/0/power")]) as (c, samples):
        subscribed(c, "solar/+/0/power")
        mosquitto.kill()  # a crash: no goodbye to the client
        wait_until(lambda: c.status().state == ConnectionState.CONNECTING, "the lost connection")
        wait_until(lambda: "Nothing accepts connections" in c.status().reason, "a failed reconnection")
        lost = c.status()
        mosquitto.start()  # same port, no memory of the old session
        subscribed(c, "solar/+/0/power")
        with publisher(mosquitto.port) as device:
            device.publish("solar/A/0/power", "7")
        wait_until(lambda: samples, "a sample after the reconnection")
        back = c.status()
    assert (
        lost.reason
        == f"Nothing accepts connections on 127.0.0.1:{mosquitto.port}: is the broker running, and is the port right?"
    )
    assert back.state == ConnectionState.CONNECTED and back.reason == "" and back.since > lost.since
    assert [sample.value for sample in samples] == [7.0]


def test_nothing_listening_is_reported_while_retrying() -> None:
    port = free_port()
    with subscriber(Broker("127.0.0.1", port), [Subscription(1, "a")]) as (connection, _):
        wait_until(lambda: connection.status().reason, "the first failed attempt")
        status = connection.status()
    assert status.state == ConnectionState.CONNECTING
    assert (
        status.reason
        == f"Nothing accepts connections on 127.0.0.1:{port}: is the broker running, and is the port right?"
    )


def test_subscriptions_follow_the_configuration_while_connected(mosquitto: Mosquitto) -> None:
    with subscriber(Broker("127.0.0.1", mosquitto.port), [Subscription(1, "meter/a")]) as (connection, samples):
        subscribed(connection, "meter/a")
        connection.update([Subscription(2, "meter/b")])
        subscribed(connection, "meter/b")
        with publisher(mosquitto.port) as device:
            device.publish("meter/a", "1")  # unsubscribed: no longer a source's
            device.publish("meter/b", "2")
        wait_until(lambda: samples, "the new topic's message")
        status = connection.status()
    assert [(sample.source_id, sample.value) for sample in samples] == [(2, 2.0)]
    assert set(status.sources) == {2}


def test_tls_checks_the_brokers_certificate(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    with running_mosquitto(tmp_path / "broker", tls=tls) as broker:
        system_store = Broker("127.0.0.1", broker.port, tls=True)
        with subscriber(system_store, [Subscription(1, "a")]) as (connection, _):
            wait_until(lambda: connection.status().reason, "the TLS refusal")
            untrusted = connection.status()
        own_ca = Broker("127.0.0.1", broker.port, tls=True, ca_file=str(tls.ca))
        with subscriber(own_ca, [Subscription(1, "a")]) as (connection, _):
            subscribed(connection, "a")
        plain = Broker("127.0.0.1", broker.port)  # TLS off against a TLS port
        with subscriber(plain, [Subscription(1, "a")]) as (connection, _):
            wait_until(lambda: connection.status().reason, "the plain connection's failure")
            mismatch = connection.status()
    assert untrusted.state == ConnectionState.CONNECTING
    assert untrusted.reason.startswith(f"The certificate of 127.0.0.1:{broker.port} is not trusted (")
    assert mismatch.state == ConnectionState.CONNECTING
    assert mismatch.reason == (
        f"127.0.0.1:{broker.port} closed the connection without answering; check the port and whether it uses TLS."
    )


def test_tls_against_a_plain_port_says_so(mosquitto: Mosquitto) -> None:
    with subscriber(Broker("127.0.0.1", mosquitto.port, tls=True), [Subscription(1, "a")]) as (connection, _):
        wait_until(lambda: connection.status().reason, "the TLS handshake's failure")
        status = connection.status()
    assert status.state == ConnectionState.CONNECTING
    assert status.reason == (
        f"127.0.0.1:{mosquitto.port} closed the connection at the TLS handshake; check that this port speaks TLS"
        " (usually 8883)."
    )


def test_stop_ends_the_network_thread(mosquitto: Mosquitto) -> None:
    with subscriber(Broker("127.0.0.1", mosquitto.port), [Subscription(1, "a")]) as (connection, _):
        subscribed(connection, "a")
        assert any(thread.name.startswith("paho-mqtt-client-dataconn-") for thread in threading.enumerate())
    assert connection.status().state == ConnectionState.STOPPED
    assert not any(thread.name.startswith("paho-mqtt-client-dataconn-") for thread in threading.enumerate())
