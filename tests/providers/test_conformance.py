"""One conformance suite, run against every vendor client and its fake vendor server over loopback.

Each fake module exposes `make_harness()`: the app to serve and a harness that builds a client pointed at it,
sets quotas, and counts the calls the fake served. What must hold for every provider is asserted here; vendor
quirks are tested in each vendor's own test module.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from core.providers.base import (
    CHANNELS,
    READINGS_SCHEMA,
    AuthError,
    BadResponse,
    ProviderConnectionError,
    ProviderError,
    RateLimited,
)
from core.providers.quota import QuotaLedger
from tests.fakes.server import serve

VENDORS = ["solaredge_v2", "solaredge_v1", "enphase"]


@pytest.fixture(params=VENDORS)
def vendor(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[Any, str]]:
    caplog.set_level(logging.DEBUG)  # everything any library logs is captured and checked for secrets below
    module = importlib.import_module(f"tests.fakes.{request.param}")
    app, harness = module.make_harness()
    with serve(app) as url:
        yield harness, url
    leaked = [s for s in harness.secrets if s and s in caplog.text]
    assert leaked == [], "a credential reached a log record"


def check_readings(frame: pl.DataFrame, start: datetime, end: datetime) -> None:
    assert frame.schema == READINGS_SCHEMA
    assert frame.height > 0
    assert set(frame["channel"].unique()) <= set(CHANNELS)
    assert frame["ts"].min() >= start and frame["ts"].max() < end  # type: ignore[operator]
    assert frame.select(pl.struct("ts", "channel").is_unique().all()).item()
    assert frame.equals(frame.sort(["ts", "channel"]))


def test_connection_reports_the_site(vendor: tuple[Any, str]) -> None:
    harness, url = vendor
    now = datetime.now(UTC)
    info = harness.client(url).test_connection(now)
    assert info.site_name
    assert info.last_update.tzinfo is not None and info.last_update <= now + timedelta(minutes=1)
    assert info.current_power_w is None or math.isfinite(info.current_power_w)


def test_wrong_credentials_are_an_auth_error(vendor: tuple[Any, str]) -> None:
    harness, url = vendor
    with pytest.raises(AuthError) as info:
        harness.client(url, bad_credentials=True).test_connection(datetime.now(UTC))
    assert all(secret not in str(info.value) for secret in harness.secrets if secret)


def test_rate_limit_says_when_to_retry(vendor: tuple[Any, str]) -> None:
    harness, url = vendor
    client = harness.client(url)
    harness.state.failures.fail_next("429")
    with pytest.raises(RateLimited) as info:
        client.test_connection(datetime.now(UTC))
    assert info.value.retry_at is not None and info.value.retry_at.tzinfo is not None


@pytest.mark.parametrize(
    ("failure", "error"),
    [("timeout", ProviderConnectionError), ("5xx", ProviderConnectionError), ("malformed", BadResponse)],
)
def test_failures_are_classified(vendor: tuple[Any, str], failure: str, error: type[ProviderError]) -> None:
    harness, url = vendor
    client = harness.client(url, timeout_s=1.0)
    harness.state.failures.fail_next(failure)
    with pytest.raises(error) as info:
        client.test_connection(datetime.now(UTC))
    assert all(secret not in str(info.value) for secret in harness.secrets if secret)


def test_history_is_split_into_allowed_windows(vendor: tuple[Any, str]) -> None:
    harness, url = vendor
    client = harness.client(url)
    start, end = harness.history_range()
    assert end - start > client.max_window
    before = harness.calls_served()
    frame = client.history(start, end)
    check_readings(frame, start, end)
    assert harness.calls_served() - before >= math.ceil((end - start) / client.max_window)


def test_history_carries_grid_flows_that_balance_the_site(vendor: tuple[Any, str]) -> None:
    """Every vendor's history has grid import and export, and per quarter hour the flows close the energy balance
    `pv + grid_import + battery = load + grid_export` within the vendors' rounding (Enphase rounds each term to
    whole Wh, i.e. 4 W per 15 minutes; its PV comes in 5-minute intervals and is averaged to the quarter hour).
    V1's energyDetails has no storage meter, so on its battery site only the grid channels' presence is checked."""
    harness, url = vendor
    start, end = harness.history_range()
    frame = harness.client(url).history(start, end)
    assert {"grid_import_w", "grid_export_w"} <= set(frame["channel"].unique())
    if "battery_w" not in set(frame["channel"].unique()):
        return
    quarters = (
        frame.drop_nulls("value")
        .with_columns(pl.col("ts").dt.truncate("15m"))
        .group_by("ts", "channel")
        .agg(pl.col("value").mean())
        .pivot(on="channel", index="ts", values="value")
        .drop_nulls()
    )
    gap = quarters.select(
        (
            pl.col("pv_w") + pl.col("grid_import_w") + pl.col("battery_w") - pl.col("load_w") - pl.col("grid_export_w")
        ).abs()
    ).to_series()
    assert quarters.height > 0
    assert gap.max() <= 15.0  # type: ignore[operator]


def test_quota_is_never_exceeded_as_the_fake_counts(vendor: tuple[Any, str]) -> None:
    harness, url = vendor
    harness.set_quota(3)
    client = harness.client(url, ledger=QuotaLedger())
    refused = 0
    for _ in range(6):
        try:
            client.test_connection(datetime.now(UTC))
        except RateLimited as exc:
            refused += 1
            assert exc.retry_at is not None
    assert refused >= 3
    assert harness.calls_served() <= 3


def test_the_simulator_speaks_the_same_shape() -> None:
    """The built-in provider has no server to fake; it must still return the common readings shape."""
    from core.providers.simulator.client import SimulatedSite, SimulatorProvider

    provider = SimulatorProvider(SimulatedSite(50.85, 4.35, "Europe/Brussels", 100.0))
    start = datetime(2026, 6, 1, tzinfo=UTC)
    end = start + provider.max_window * 2 + timedelta(hours=1)
    check_readings(provider.history(start, end), start, end)
    assert provider.list_sites()[0].timezone == "Europe/Brussels"
