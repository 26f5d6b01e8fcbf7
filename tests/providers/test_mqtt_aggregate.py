"""MQTT samples of many sources into minute rows (core.providers.mqtt.aggregate): power and counters, a counter
reset, the clock's tick, and samples that came through a real Mosquitto broker."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core.providers.mqtt.aggregate import MINUTE_ROW_SCHEMA, MinuteAggregator
from core.providers.mqtt.payload import PayloadReading, Unit
from core.providers.mqtt.subscriber import Broker, BrokerSubscriber, Sample, Subscription
from tests.mqtt_broker import Mosquitto, publisher, running_mosquitto, wait_until

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def energy_wh(rows: pl.DataFrame) -> float:
    return float((rows["value"].fill_null(0.0) * rows["coverage"] * rows["interval_s"] / 3600).sum())


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    with running_mosquitto(tmp_path / "broker") as broker:
        yield broker


def test_power_samples_of_several_sources_become_minute_rows_with_coverage() -> None:
    aggregator = MinuteAggregator(hold_s=30)
    for second in range(0, 120, 10):
        aggregator.add(Sample(1, at(second), 100.0, counter=False))
    for second in (5, 15):  # a device that went quiet after 15 s
        aggregator.add(Sample(2, at(second), 40.0, counter=False))
    rows = aggregator.tick(at(130))
    assert rows.schema == MINUTE_ROW_SCHEMA
    assert rows.rows() == [
        (1, at(0), 60, 100.0, 1.0, 6, True),
        (1, at(60), 60, 100.0, 1.0, 6, True),
        (2, at(0), 60, 40.0, pytest.approx(40 / 60), 2, True),  # held from :05 to :45 (30 s past :15)
    ]
    assert aggregator.tick(at(130)).is_empty()  # a minute leaves once


def test_a_counter_becomes_power_and_its_reset_gives_a_gap_never_negative_power() -> None:
    aggregator = MinuteAggregator()
    readings = [(0, 1_000.0), (60, 1_010.0), (120, 1_030.0), (150, 2.0), (180, 7.0), (240, 17.0)]  # Wh
    for second, wh in readings:
        aggregator.add(Sample(3, at(second), wh, counter=True))
    rows = aggregator.tick(at(400))
    assert rows.select("ts", "value", "coverage").rows() == [
        (at(0), pytest.approx(600.0), 1.0),  # 10 Wh in a minute
        (at(60), pytest.approx(1_200.0), 1.0),
        (at(120), pytest.approx(600.0), 0.5),  # 2:30 to 3:00 is the reset: no power, not negative
        (at(180), pytest.approx(600.0), 1.0),
    ]
    assert energy_wh(rows) == pytest.approx(10 + 20 + 5 + 10)


def test_forgetting_a_source_drops_its_open_and_ready_minutes() -> None:
    aggregator = MinuteAggregator()
    for second in (0, 30, 60, 90):
        aggregator.add(Sample(1, at(second), 5.0, counter=False))
        aggregator.add(Sample(2, at(second), 6.0, counter=False))
    aggregator.forget(1)
    assert aggregator.tick(at(300))["source_id"].unique().to_list() == [2]


def test_samples_through_a_real_broker_become_minute_rows(mosquitto: Mosquitto) -> None:
    aggregator = MinuteAggregator()
    subscriptions = [
        Subscription(1, "solar/+/0/power", PayloadReading("", Unit.W)),
        Subscription(2, "shellyplus1pm-a8032ab12345/status/switch:0", PayloadReading("aenergy.total", Unit.WH)),
    ]
    samples: list[Sample] = []

    def take(sample: Sample) -> None:
        samples.append(sample)
        aggregator.add(sample)

    connection = BrokerSubscriber(Broker("127.0.0.1", mosquitto.port), subscriptions, take)
    connection.start()
    try:
        wait_until(lambda: len(connection.status().subscribed) == 2, "both subscriptions")
        with publisher(mosquitto.port) as device:
            for watts in ("250", "250", "250"):
                device.publish("solar/116491234567/0/power", watts)
            for total in (1_000.0, 1_001.5, 3.0, 4.0):  # the plug restarted between 1001.5 and 3
                device.publish(
                    "shellyplus1pm-a8032ab12345/status/switch:0", f'{{"id":0,"aenergy":{{"total":{total}}}}}'
                )
        wait_until(lambda: connection.status().messages_per_minute == 7, "all seven messages")
    finally:
        connection.stop()
    totals = [sample for sample in samples if sample.source_id == 2]
    assert [(sample.value, sample.counter) for sample in totals] == [
        (1_000.0, True),
        (1_001.5, True),
        (3.0, True),
        (4.0, True),
    ]
    # The counter's newest minute waits for its next reading: one more, unchanged, a minute later closes it.
    aggregator.add(Sample(2, totals[-1].at + timedelta(minutes=1), 4.0, counter=True))
    rows = aggregator.tick(datetime.now(UTC) + timedelta(minutes=3))
    power = rows.filter(pl.col("source_id") == 1)
    assert power["value"].to_list() == [pytest.approx(250.0)] * power.height
    assert power["samples"].sum() == 3 and power["coverage"].is_between(0, 1, closed="right").all()
    assert power["interval_s"].unique().to_list() == [60] and power["is_final"].all()
    # The counter's two spans give 1.5 Wh and 1 Wh, the reset nothing (never negative power).
    counter = rows.filter(pl.col("source_id") == 2)
    assert (counter["value"].fill_null(0) >= 0).all()
    # (Loosely: these messages are milliseconds apart, and epoch seconds as floats carry about 0.2 us.)
    assert energy_wh(counter) == pytest.approx(2.5, rel=1e-2)
