"""A device's message to a number (core.providers.mqtt.payload) and topic filters (core.providers.mqtt.topics), on
the device formats of docs/mqtt-devices.md."""

from __future__ import annotations

import pytest

from core.providers.mqtt.payload import MAX_PAYLOAD_BYTES, PayloadError, PayloadReading, Unit, check_path
from core.providers.mqtt.topics import check_filter, matches

# The documented formats (docs/mqtt-devices.md), as devices publish them.
TASMOTA_SENSOR = (
    b'{"Time":"2023-05-19T20:52:56","ENERGY":{"TotalStartTime":"2022-03-20T15:20:48","Total":514.153,'
    b'"Yesterday":1.495,"Today":0.537,"Period":0,"Power":56,"ApparentPower":92,"ReactivePower":73,"Factor":0.61,'
    b'"Voltage":234,"Current":0.392}}'
)
TASMOTA_TWO_CHANNELS = b'{"Time":"2026-09-18T11:19:21","ENERGY":{"Total":[2.813,0.254],"Power":[52,5],"Voltage":235}}'
SHELLY_SWITCH = (
    b'{"id":0, "source":"init", "output":true, "apower":10.7, "voltage":120.7, "current":0.133,'
    b' "aenergy":{"total":46791.262,"by_minute":[73.921,177.749,177.749],"minute_ts":1682952864},'
    b' "temperature":{"tC":47.9, "tF":118.3}}'
)
OPENDTU_POWER = b"123.4"
OPENDTU_YIELD_TOTAL = b"1234.567"


@pytest.mark.parametrize(
    ("payload", "reading", "expected"),
    [
        (TASMOTA_SENSOR, PayloadReading("ENERGY.Power", Unit.W), 56.0),
        (TASMOTA_SENSOR, PayloadReading("ENERGY.Total", Unit.KWH), 514_153.0),
        (TASMOTA_TWO_CHANNELS, PayloadReading("ENERGY.Power.1", Unit.W), 5.0),
        (SHELLY_SWITCH, PayloadReading("apower", Unit.W), 10.7),
        (SHELLY_SWITCH, PayloadReading("aenergy.total", Unit.WH), 46_791.262),
        (OPENDTU_POWER, PayloadReading("", Unit.W), 123.4),
        (OPENDTU_YIELD_TOTAL, PayloadReading("", Unit.KWH), 1_234_567.0),
        (b" 2.5\n", PayloadReading("", Unit.KW), 2_500.0),
        (b'{"power": "812.5"}', PayloadReading("power"), 812.5),  # a number sent as a string
    ],
)
def test_each_documented_format_gives_its_number_in_w_or_wh(
    payload: bytes, reading: PayloadReading, expected: float
) -> None:
    assert reading.read(payload) == pytest.approx(expected)


def test_units_say_which_are_counters() -> None:
    assert [unit.is_counter for unit in Unit] == [False, False, True, True]


@pytest.mark.parametrize(
    ("payload", "path", "message"),
    [
        (TASMOTA_SENSOR, "ENERGY.Powr", "There is no `Powr` in `ENERGY` (it has: ApparentPower, Current, Factor"),
        (TASMOTA_SENSOR, "Energy.Power", "There is no `Energy` in the message (it has: ENERGY, Time)."),
        (TASMOTA_SENSOR, "ENERGY.Power.x", "There is no `x` in `ENERGY.Power`: it is '56', not an object."),
        (TASMOTA_TWO_CHANNELS, "ENERGY.Power.2", "`ENERGY.Power` has 2 values, so no value number 2"),
        (TASMOTA_SENSOR, "Time", "`Time` is '2023-05-19T20:52:56', not a number."),
        (TASMOTA_SENSOR, "ENERGY", '`ENERGY` is \'{"TotalStartTime": "2022-03-20T15:20:48"...\', not a number.'),
        (SHELLY_SWITCH, "output", "`output` is 'true', not a number."),
        (b'{"apower": null}', "apower", "`apower` is 'null', not a number."),
        (b'{"apower": NaN}', "apower", "`apower` is 'nan', not a finite number."),
        (b"offline", "", "The message is 'offline', not a number."),
        (b"inf", "", "The message is 'inf', not a finite number."),
        (SHELLY_SWITCH, "", "not a number. It is JSON: give a payload path to the number in it."),
        (b"ON", "apower", "The message is not JSON, so it has no `apower`: 'ON'."),
        (
            b"123.4",
            "apower",
            "'123.4', not an object. Leave the payload path empty when the whole message is the number.",
        ),
        (b"", "", "The message is empty."),
        (b"\xff\xfe", "", "The message is not text (not UTF-8)."),
        (b"1" * (MAX_PAYLOAD_BYTES + 1), "", "The message is 65,537 bytes, too large to be a reading."),
    ],
)
def test_a_payload_without_a_number_at_the_path_says_what_is_there(payload: bytes, path: str, message: str) -> None:
    with pytest.raises(PayloadError) as refused:
        PayloadReading(path).read(payload)
    assert message in str(refused.value)


def test_a_payload_path_is_dotted_names() -> None:
    assert check_path("") is None and check_path("ENERGY.Power") is None and check_path("switch:0.apower") is None
    assert check_path("ENERGY..Power") == (
        "The payload path `ENERGY..Power` has an empty name between dots (write it like `ENERGY.Power`)."
    )
    assert check_path(" apower") == "The payload path must not start or end with spaces."


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("solar/+/0/power", None),
        ("shellies/#", None),
        ("#", None),
        ("shellyplus1pm-a8032ab12345/status/switch:0", None),
        ("", "The topic is empty."),
        ("tele/#/SENSOR", "In `tele/#/SENSOR`, `#` must be a whole level and the last one (like `tele/#`)."),
        ("tele/plug#", "In `tele/plug#`, `#` must be a whole level and the last one (like `tele/#`)."),
        ("solar/1+/0/power", "In `solar/1+/0/power`, `+` must be a whole level (like `solar/+/0/power`)."),
        ("a\x00b", "The topic contains a NUL character."),
        ("a" * 65_536, "The topic is longer than MQTT allows (65,535 bytes)."),
    ],
)
def test_topic_filters_are_checked_in_the_users_terms(topic: str, message: str | None) -> None:
    assert check_filter(topic) == message


def test_wildcards_match_as_the_broker_delivers() -> None:
    assert matches("solar/+/0/power", "solar/116491234567/0/power")
    assert not matches("solar/+/0/power", "solar/116491234567/1/power")
    assert not matches("solar/+/0/power", "solar/116491234567/0/powerdc")
    assert matches("tele/#", "tele/plug/SENSOR") and matches("tele/#", "tele")
    assert not matches("tele/+", "tele/plug/SENSOR")
