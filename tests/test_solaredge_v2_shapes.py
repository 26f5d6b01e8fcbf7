"""SolarEdge V2 battery shapes seen in the field: state of energy on either scale, negative energy samples.

Parsers run on fixtures that reproduce the observed shapes (tests/fixtures/solaredge_v2/PROVENANCE.md says where
each was seen); the client runs against the fake over loopback with the fake's field-quirk switches. The last test
keeps every fixture's provenance line honest: a fixture without one fails.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import SecretStr

from core.providers.base import BadResponse
from core.providers.simulator.client import simulate
from core.providers.solaredge_v2.client import SolarEdgeV2Client
from core.providers.solaredge_v2.parse import parse_storage, read_storage, soc_factor
from tests.fakes.server import serve
from tests.fakes.solaredge_v2 import SANDBOX_API_KEY, FakeState, create_app

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
OFFICE = "1234567"  # sandbox site with meter and battery (Chicago)


def load(name: str) -> Any:
    return json.loads((FIXTURES / "solaredge_v2" / f"{name}.json").read_text())


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- state of energy: the two scales --------------------------------------------------------------------------


def test_the_live_fraction_scale_is_read_as_percent() -> None:
    storage = parse_storage(load("storage_telemetry_fraction"))[1]
    ten = utc(2026, 9, 14, 8)  # 10:00 at +02:00
    assert storage["soc"][ten] == pytest.approx(98.27)
    assert storage["soc"][ten + timedelta(minutes=15)] == pytest.approx(98.67)  # 0.9867 on the wire
    assert storage["soc"][ten + timedelta(minutes=45)] is None  # the bucket in progress stays unknown
    assert storage["battery"][ten] == pytest.approx(-412.0)  # 103 Wh charged in 15 minutes


def test_the_documented_percent_scale_is_kept() -> None:
    storage = parse_storage(load("storage_telemetry"))[1]
    assert storage["soc"][utc(2026, 9, 29, 17)] == 67.8
    assert storage["soc"][utc(2026, 9, 29, 17, 15)] == 64.0


@pytest.mark.parametrize(
    ("unit", "values", "factor"),
    [
        ("PERCENTAGE", [0.61, 0.9867, None], 100.0),  # live: fractions under PERCENTAGE
        ("percentage", [0.5], 100.0),  # units compare case-insensitively
        (None, [0.3], 100.0),  # no unit: the values decide
        ("PERCENTAGE", [0.8, 45.0], 1.0),  # one value above 1 settles 0-100 for the whole series
        ("PERCENTAGE", [100.0], 1.0),
        ("PERCENTAGE_100", [0.5, 1.0], 1.0),  # the unit's name says 0-100
        ("PERCENTAGE", [None, None], 100.0),  # nothing to scale: the factor changes nothing
        ("PERCENTAGE", [1.0, 0.0], 100.0),  # full then empty, as a fraction
    ],
)
def test_the_scale_rule(unit: str | None, values: list[float | None], factor: float) -> None:
    assert soc_factor(unit, values, {}) == factor


def test_an_unknown_state_of_energy_unit_is_refused_not_guessed() -> None:
    body = load("storage_telemetry_fraction")
    body["storage"]["7F104920-B1"]["stateOfEnergy"]["unit"] = "KWH"
    with pytest.raises(BadResponse, match="state-of-energy unit"):
        parse_storage(body)


def test_each_battery_is_scaled_on_its_own_before_the_mean() -> None:
    stamp = "2026-09-14T10:00:00+02:00"
    body = {
        "resolution": "QUARTER_HOUR",
        "storage": {
            "A": {"stateOfEnergy": {"unit": "PERCENTAGE", "values": [{"timestamp": stamp, "value": 0.8}]}},
            "B": {"stateOfEnergy": {"unit": "PERCENTAGE", "values": [{"timestamp": stamp, "value": 60.0}]}},
        },
    }
    assert parse_storage(body)[1]["soc"][utc(2026, 9, 14, 8)] == pytest.approx(70.0)


# --- negative energy samples ----------------------------------------------------------------------------------


def test_a_negative_charge_sample_is_dropped_and_counted_not_turned_into_a_discharge() -> None:
    read = read_storage(load("storage_telemetry_negative_charge"))
    seven = utc(2026, 9, 14, 17)  # 19:00 at +02:00
    assert read.negative_dropped == 1
    battery = read.series["battery"]
    assert battery[seven + timedelta(minutes=15)] is None  # unknown, not 4 x 1,576 W of made-up discharge
    assert battery[seven] == pytest.approx(840.0) and battery[seven + timedelta(minutes=30)] == pytest.approx(792.0)
    assert read.series["soc"][seven] == pytest.approx(65.12)


def test_negative_power_samples_are_dropped_too() -> None:
    stamp = "2026-09-14T19:00:00+02:00"
    body = {
        "resolution": "QUARTER_HOUR",
        "storage": {
            "A": {
                "chargePower": {"unit": "W", "values": [{"timestamp": stamp, "value": 0.0}]},
                "dischargePower": {"unit": "W", "values": [{"timestamp": stamp, "value": -250.0}]},
            }
        },
    }
    read = read_storage(body)
    assert read.negative_dropped == 1 and read.series["battery"][utc(2026, 9, 14, 17)] is None


# --- the client against the fake ------------------------------------------------------------------------------


@pytest.fixture
def fake(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[FakeState, str]]:
    caplog.set_level(logging.DEBUG)
    state = FakeState(per_minute_limit=1000, monthly_credits=100_000)
    with serve(create_app(state)) as url:
        yield state, url
    assert SANDBOX_API_KEY not in caplog.text


def client(url: str) -> SolarEdgeV2Client:
    return SolarEdgeV2Client(
        SecretStr(SANDBOX_API_KEY), OFFICE, base_url=f"{url}/v2", timeout_s=5.0, calls_per_minute=1000
    )


@pytest.mark.parametrize("scale", ["fraction", "percent"])
def test_state_of_charge_matches_the_simulator_whichever_scale_the_fake_sends(
    fake: tuple[FakeState, str], scale: str
) -> None:
    state, url = fake
    state.soe_scale = scale  # type: ignore[assignment]
    start, end = utc(2026, 6, 1, 5), utc(2026, 6, 1, 15)
    soc = client(url).history(start, end).filter(pl.col("channel") == "soc_pct").drop_nulls("value")
    site = state.site(int(OFFICE))
    assert site is not None
    truth = simulate(site.simulated(), start, end, 15).select("ts", pl.col("soc_pct").alias("sim"))
    joined = soc.join(truth, on="ts", how="inner")
    assert joined.height >= 30
    assert (joined["value"] - joined["sim"]).abs().max() < 0.01  # type: ignore[operator]
    assert joined["value"].max() > 1.0  # type: ignore[operator]  # a percentage, not a fraction read as %


def test_a_negative_sample_from_the_vendor_leaves_that_quarter_unknown_and_is_logged(
    fake: tuple[FakeState, str], caplog: pytest.LogCaptureFixture
) -> None:
    state, url = fake
    start, end = utc(2026, 6, 1, 5), utc(2026, 6, 1, 9)
    odd = utc(2026, 6, 1, 7)
    state.negative_charge[odd] = -1576.0
    reader = client(url)
    battery = reader.history(start, end).filter(pl.col("channel") == "battery_w")
    assert battery.filter(pl.col("ts") == odd)["value"].to_list() == [None]
    assert battery.filter(pl.col("ts") != odd).drop_nulls("value").height == battery.height - 1
    assert battery["value"].max() < 6000  # type: ignore[operator]  # no invented +6 kW discharge
    assert reader.negative_storage_samples == 1
    logged = [r for r in caplog.records if r.levelno == logging.INFO and "negative battery energy" in r.getMessage()]
    assert len(logged) == 1 and " 1 negative" in logged[0].getMessage() and OFFICE in logged[0].getMessage()


# --- documentation -----------------------------------------------------------------------------


def test_the_v2_code_cites_our_own_documentation_which_states_the_rules() -> None:
    for path in (
        "core/providers/solaredge_v2/client.py",
        "core/providers/solaredge_v2/parse.py",
        "tests/fakes/solaredge_v2.py",
    ):
        text = (ROOT / path).read_text()
        assert "shared/reference" not in text and "docs/solaredge-v2.md" in text, path
    doc = (ROOT / "docs" / "solaredge-v2.md").read_text()
    for fact in ("stateOfEnergy", "PERCENTAGE_100", "0.9867", "-1,576 Wh", "12 hours", "2,000 credits", "Retry-After"):
        assert fact in doc, fact
