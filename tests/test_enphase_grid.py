"""Enphase grid import and export: the v4 import/export telemetry endpoints, parsed, collected, counted and balanced.

Parsers run on fixtures in the documented shapes (tests/fixtures/enphase/PROVENANCE.md); the client runs against
the fake Enphase cloud over loopback, and the quota planner's cost of a poll is checked against the calls the
client actually made.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import SecretStr

from core.catalog.account_import import LAYOUT
from core.catalog.quota_plan import MINUTES_PER_DAY, calls_per_poll, windows_per_poll
from core.models import Category, Provider, UpdateFrequency
from core.providers.base import CHANNELS, READINGS_SCHEMA, BadResponse
from core.providers.enphase.client import EnphaseClient
from core.providers.enphase.parse import parse_energy_export, parse_energy_import
from tests.fakes.enphase import (
    SANDBOX_API_KEY,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_SYSTEM_ID,
    FakeState,
    FakeSystem,
    create_app,
    seeded_tokens,
)
from tests.fakes.server import serve
from tests.providers.token_stores import InMemoryTokenStore

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "enphase"
GRID = frozenset({"grid_import_w", "grid_export_w"})
NO_BATTERY_ID = 698905990  # added per test: consumption meter, no battery


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# --- parsing --------------------------------------------------------------------------------------------------


def test_import_and_export_are_labelled_by_interval_start_in_average_watts() -> None:
    imported = parse_energy_import(fixture("energy_import_telemetry.json"))
    exported = parse_energy_export(fixture("energy_export_telemetry.json"))
    assert imported.schema == exported.schema == READINGS_SCHEMA
    assert imported["ts"].to_list() == [at(1764749700 - 900), at(1764750600 - 900)]
    assert set(imported["channel"]) == {"grid_import_w"} and set(exported["channel"]) == {"grid_export_w"}
    assert set(imported["interval_s"]) == {900}
    assert imported["value"].to_list() == [160.0, 548.0]  # 40 and 137 Wh in 15 minutes
    assert exported["value"].to_list() == [0.0, 848.0]


def test_the_schemas_nested_interval_list_reads_like_the_flat_example() -> None:
    nested = parse_energy_import(fixture("energy_import_telemetry_nested.json"))
    assert nested.equals(parse_energy_import(fixture("energy_import_telemetry.json")))


def test_empty_intervals_are_no_rows_and_a_missing_end_is_refused() -> None:
    assert parse_energy_export({"intervals": []}).height == 0
    assert parse_energy_import({"intervals": [[]]}).height == 0
    with pytest.raises(BadResponse, match="end_at"):
        parse_energy_import({"intervals": [{"wh_imported": 5}]})


# --- the client against the fake ------------------------------------------------------------------------------


@pytest.fixture
def state() -> FakeState:
    fake = FakeState()
    fake.set_plan("Kilowatt")
    fake.systems[NO_BATTERY_ID] = FakeSystem(
        NO_BATTERY_ID, "No battery", "Europe/Brussels", 4.0, 50.85, 4.35, battery_kwh=0.0, seed=5
    )
    return fake


@pytest.fixture
def url(state: FakeState) -> Iterator[str]:
    with serve(create_app(state)) as base:
        yield base


def make_client(url: str, state: FakeState, system_id: int = SANDBOX_SYSTEM_ID, **kwargs: Any) -> EnphaseClient:
    return EnphaseClient(
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SecretStr(SANDBOX_CLIENT_SECRET),
        api_key=SecretStr(SANDBOX_API_KEY),
        system_id=str(system_id),
        token_store=InMemoryTokenStore(seeded_tokens(url, state)),
        base_url=f"{url}/api/v4",
        auth_url=f"{url}/oauth",
        plan="kilowatt",
        timeout_s=5.0,
        **kwargs,
    )


def past_day() -> tuple[datetime, datetime]:
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    return end - timedelta(hours=12), end


def paths(client: EnphaseClient) -> list[str]:
    return [exchange.endpoint.split("?")[0].rsplit("/", 1)[-1] for exchange in client.exchanges()]


def quarters(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per quarter hour, one column per channel (5-minute PV averaged to the quarter)."""
    return (
        frame.drop_nulls("value")
        .with_columns(pl.col("ts").dt.truncate("15m"))
        .group_by("ts", "channel")
        .agg(pl.col("value").mean())
        .pivot(on="channel", index="ts", values="value")
        .drop_nulls()
    )


def test_grid_channels_come_from_the_import_and_export_endpoints_only(url: str, state: FakeState) -> None:
    client = make_client(url, state, channels=GRID)
    frame = client.history(*past_day())
    assert set(frame["channel"]) == GRID
    assert sorted(paths(client)) == ["energy_export_telemetry", "energy_import_telemetry"]
    assert frame.filter(pl.col("channel") == "grid_import_w").height == 48  # 12 hours of quarter hours


def test_a_site_that_reads_no_grid_channel_never_calls_them(url: str, state: FakeState) -> None:
    client = make_client(url, state, channels=frozenset({"pv_w", "load_w"}))
    client.history(*past_day())
    assert sorted(paths(client)) == ["consumption_meter", "production_micro"]


def test_import_minus_export_is_consumption_minus_production_within_rounding(url: str, state: FakeState) -> None:
    frame = make_client(url, state, system_id=NO_BATTERY_ID).history(*past_day())
    table = quarters(frame)
    assert "battery_w" not in table.columns and table.height == 48
    gap = table.select((pl.col("grid_import_w") - pl.col("grid_export_w")) - (pl.col("load_w") - pl.col("pv_w")))
    assert gap.to_series().abs().max() <= 8.0  # type: ignore[operator]  # whole Wh: 4 W per term and quarter


def test_with_a_battery_the_balance_counts_charge_and_discharge(url: str, state: FakeState) -> None:
    frame = make_client(url, state).history(*past_day())
    table = quarters(frame)
    assert {"battery_w", "grid_import_w", "grid_export_w"} <= set(table.columns) and table.height == 48
    gap = table.select(
        (pl.col("grid_import_w") - pl.col("grid_export_w")) - (pl.col("load_w") - pl.col("pv_w") - pl.col("battery_w"))
    )
    assert gap.to_series().abs().max() <= 12.0  # type: ignore[operator]
    assert table["grid_import_w"].max() > 0  # type: ignore[operator]  # real flows, not a row of zeros


def test_the_nested_shape_served_by_the_fake_is_collected_alike(url: str, state: FakeState) -> None:
    window = past_day()
    flat = make_client(url, state, channels=GRID).history(*window)
    state.grid_nested = True
    nested = make_client(url, state, channels=GRID).history(*window)
    assert nested.height == flat.height > 0 and nested.equals(flat)


def test_a_system_without_a_consumption_meter_has_no_grid_readings_and_no_error(url: str, state: FakeState) -> None:
    client = make_client(url, state, system_id=698905956, channels=GRID)  # the sandbox garage: production meter only
    assert client.history(*past_day()).height == 0
    assert len(paths(client)) == 2  # both asked (and counted), both empty


# --- the quota planner counts what a poll costs ---------------------------------------------------------------


@pytest.mark.parametrize(
    "channels",
    [GRID, frozenset({"grid_import_w"}), frozenset({"pv_w", "load_w", "grid_export_w"}), None],
    ids=["grid", "import", "pv-load-export", "all"],
)
def test_one_poll_window_costs_what_the_planner_counts(
    url: str, state: FakeState, channels: frozenset[str] | None
) -> None:
    client = make_client(url, state, channels=channels)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    before = sum(state.calls.values())
    client.history(end - timedelta(hours=2), end)  # one window, as a steady-state poll
    wanted = channels if channels is not None else frozenset(CHANNELS)
    assert sum(state.calls.values()) - before == calls_per_poll(Provider.ENPHASE, wanted)


def test_the_planner_charges_grid_reading_sources_two_calls_more() -> None:
    assert calls_per_poll(Provider.ENPHASE, GRID) == 2
    assert calls_per_poll(Provider.ENPHASE, CHANNELS) == 5
    hourly = MINUTES_PER_DAY // 60 * windows_per_poll(Provider.ENPHASE, UpdateFrequency.HOUR1) * 31
    assert hourly * calls_per_poll(Provider.ENPHASE, {"pv_w", *GRID}) == 2_232  # > Watt's 1,000: the planner says so


def test_import_sites_offers_enphase_grid_sources_in_the_meters_group() -> None:
    meters = [(category, sources) for group, _, category, sources in LAYOUT[Provider.ENPHASE] if group == "meters"]
    assert (Category.CONS, (("Load", "load"), ("Grid import", "grid"))) in meters
    assert (Category.INJ, (("Grid export", "grid"),)) in meters
