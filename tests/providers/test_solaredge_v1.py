"""SolarEdge Monitoring API V1: parsers from fixtures, then the client against the fake over real loopback HTTP."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import polars as pl
import pytest
from pydantic import SecretStr

from core.providers.base import (
    READINGS_SCHEMA,
    ApiRetired,
    AuthError,
    BadResponse,
    ProviderConnectionError,
    ProviderError,
    RateLimited,
)
from core.providers.quota import QuotaLedger
from core.providers.simulator.client import simulate
from core.providers.solaredge_v1.client import DEFAULT_MAX_WINDOW, DST_PADDING, SolarEdgeV1Client
from core.providers.solaredge_v1.parse import (
    error_text,
    is_range_error,
    local_series_to_utc,
    parse_details,
    parse_local_time,
    parse_meter_readings,
    parse_overview,
    parse_power_flow,
    parse_sites_list,
    retry_after,
)
from tests.fakes.server import serve
from tests.fakes.solaredge_v1 import (
    BAD_API_KEY,
    SANDBOX_API_KEY,
    SANDBOX_SITE_ID,
    SANDBOX_SITE_KEY,
    FakeSite,
    FakeState,
    create_app,
    make_harness,
    sandbox_state,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "solaredge_v1"
BRUSSELS = ZoneInfo("Europe/Brussels")
NOW = datetime(2026, 11, 20, 12, 7, 30, tzinfo=UTC)  # the fake's clock: every range below lies before it
QUARTER = timedelta(minutes=15)


def load(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def channel(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    return frame.filter(pl.col("channel") == name).sort("ts")


# --- parsing: details, overview, sites ------------------------------------------------------------------------


def test_details_give_name_capacity_zone_and_local_last_update() -> None:
    details = parse_details(load("details"))
    assert (details.id, details.name, details.capacity_kw) == ("1234567", "Brussels office", 8.4)
    assert details.timezone == "Europe/Brussels"
    assert details.last_update_local == datetime(2026, 10, 25, 2, 30)


def test_details_accept_date_only_times_and_the_doc_samples_gmt_zone() -> None:
    details = parse_details(load("details_gmt_date_only"))
    assert details.timezone == "GMT"
    assert details.last_update_local == datetime(2018, 11, 14)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2013-05-05 12:00:00", datetime(2013, 5, 5, 12)),
        ("2018-11-14", datetime(2018, 11, 14)),
        ("2026-10-25T02:15:00", datetime(2026, 10, 25, 2, 15)),
        (None, None),
    ],
)
def test_local_times_parse_in_every_observed_form(text: str | None, expected: datetime | None) -> None:
    assert parse_local_time(text) == expected


def test_overview_doc_sample_and_a_real_one_without_revenue() -> None:
    doc = parse_overview(load("overview"))
    assert (doc.current_power_w, doc.last_update_local) == (0.0, datetime(2013, 10, 1, 2, 37, 47))
    real = parse_overview(load("overview_meter_no_revenue"))
    assert real.current_power_w == 1234.5


def test_sites_list_reads_the_real_site_envelope_and_the_doc_list_envelope() -> None:
    sites, count = parse_sites_list(load("sites_list_site"))
    assert count == 2
    assert [(s.id, s.name, s.timezone, s.capacity_kw) for s in sites] == [
        ("1234567", "Brussels office", "Europe/Brussels", 8.4),
        ("2345678", "Lisbon warehouse", "Europe/Lisbon", None),
    ]
    doc_sites, doc_count = parse_sites_list(load("sites_list_doc"))
    assert doc_count == 1 and doc_sites[0].id == "1" and doc_sites[0].timezone == "GMT"


@pytest.mark.parametrize(
    "payload",
    [{"details": {"name": "no id"}}, {"detail": {}}, [], {"details": {"id": 1, "name": "x", "peakPower": "8 kW"}}],
)
def test_unexpected_detail_shapes_are_bad_responses_with_an_excerpt(payload: Any) -> None:
    with pytest.raises(BadResponse) as caught:
        parse_details(payload)
    assert "SolarEdge V1" in str(caught.value)
    assert caught.value.excerpt


# --- parsing: current power flow ------------------------------------------------------------------------------


def test_power_flow_in_kw_with_storage_discharging_to_the_load() -> None:
    flow = parse_power_flow(load("power_flow_kw_discharging"))
    assert flow == pytest.approx(
        {"pv_w": 0.0, "load_w": 1370.0, "grid_import_w": 10.0, "grid_export_w": 0.0, "battery_w": 1360.0, "soc_pct": 38}
    )


def test_power_flow_in_w_with_mixed_case_names_charging_and_exporting() -> None:
    flow = parse_power_flow(load("power_flow_w_charging_export"))
    assert flow == pytest.approx(
        {"pv_w": 4500.0, "load_w": 900.0, "grid_import_w": 0.0, "grid_export_w": 2100.0, "battery_w": -1500.0,
         "soc_pct": 72.5}
    )  # fmt: skip
    # The balance holds: pv + import + battery = load + export.
    assert flow["pv_w"] + flow["grid_import_w"] + flow["battery_w"] == pytest.approx(
        flow["load_w"] + flow["grid_export_w"]
    )


def test_empty_power_flow_means_the_site_cannot_measure_it() -> None:
    assert parse_power_flow(load("power_flow_empty")) == {}


def test_empty_storage_and_missing_connections_use_the_energy_balance_for_the_grid() -> None:
    flow = parse_power_flow(load("power_flow_empty_storage_no_connections"))
    assert flow == pytest.approx({"pv_w": 1200.0, "load_w": 2000.0, "grid_import_w": 800.0, "grid_export_w": 0.0})
    assert "battery_w" not in flow and "soc_pct" not in flow


def test_power_flow_with_an_unknown_unit_is_a_bad_response() -> None:
    payload = load("power_flow_kw_discharging")
    payload["siteCurrentPowerFlow"]["unit"] = "hp"
    with pytest.raises(BadResponse):
        parse_power_flow(payload)


# --- parsing: history -----------------------------------------------------------------------------------------


def test_power_details_keep_missing_values_and_nulls_as_null_and_skip_self_consumption() -> None:
    frame = parse_meter_readings(load("power_details"), "powerDetails", BRUSSELS)
    assert frame.schema == READINGS_SCHEMA
    assert set(frame["channel"]) == {"pv_w", "load_w", "grid_import_w", "grid_export_w"}
    assert frame.height == 12 and set(frame["interval_s"]) == {900}
    load_w = channel(frame, "load_w")
    assert load_w["ts"].to_list() == [utc(2026, 6, 15, 9), utc(2026, 6, 15, 9, 15), utc(2026, 6, 15, 9, 30)]
    assert load_w["value"].to_list() == [619.8288, 702.5, None]  # 11:00 CEST = 09:00 UTC; missing key -> null
    assert channel(frame, "grid_import_w")["value"].to_list() == [0.0, None, None]


def test_energy_details_wh_per_quarter_become_average_watts() -> None:
    frame = parse_meter_readings(load("energy_details_quarter"), "energyDetails", BRUSSELS)
    assert channel(frame, "pv_w")["value"].to_list() == [pytest.approx(5210.25), None, None]
    assert channel(frame, "grid_export_w")["value"].to_list() == [pytest.approx(4590.4212)]


def test_energy_details_hourly_kwh_become_average_watts_over_the_hour() -> None:
    frame = parse_meter_readings(load("energy_details_hour_kwh"), "energyDetails", BRUSSELS)
    assert frame["value"].to_list() == [pytest.approx(5100.0), pytest.approx(4800.0)]
    assert set(frame["interval_s"]) == {3600}


def test_a_site_without_meters_gives_empty_readings() -> None:
    frame = parse_meter_readings(load("energy_details_empty_meters"), "energyDetails", BRUSSELS)
    assert frame.is_empty() and frame.schema == READINGS_SCHEMA


def test_a_daily_time_unit_is_not_silently_misread() -> None:
    payload = load("energy_details_quarter")
    payload["energyDetails"]["timeUnit"] = "DAY"
    with pytest.raises(BadResponse):
        parse_meter_readings(payload, "energyDetails", BRUSSELS)


# --- DST: Europe/Brussels, 15-minute data ---------------------------------------------------------------------


def test_autumn_fold_repeated_hour_maps_to_two_distinct_utc_hours() -> None:
    """2026-10-25: local 02:00-02:59 happens twice (CEST, then CET); the labels repeat without an offset."""
    frame = parse_meter_readings(load("energy_details_dst_fold"), "energyDetails", BRUSSELS)
    load_w = channel(frame, "load_w")
    expected_ts = [utc(2026, 10, 24, 22) + i * QUARTER for i in range(24)]
    assert load_w["ts"].to_list() == expected_ts  # 24 distinct, contiguous UTC quarters: nothing merged or lost
    assert load_w["value"].to_list() == [pytest.approx((100 + i) * 4) for i in range(24)]
    by_ts = dict(zip(load_w["ts"], load_w["value"], strict=True))
    assert by_ts[utc(2026, 10, 25, 0, 0)] == pytest.approx(108 * 4)  # first "02:00:00" (CEST, +02:00)
    assert by_ts[utc(2026, 10, 25, 1, 0)] == pytest.approx(112 * 4)  # second "02:00:00" (CET, +01:00)
    assert channel(frame, "pv_w")["value"].null_count() == 24  # night: Production omits `value`


def test_spring_gap_skipped_hour_leaves_no_hole_in_utc() -> None:
    """2026-03-29: local 02:00-02:59 does not exist; 01:45 CET is followed by 03:00 CEST, 15 minutes later."""
    frame = parse_meter_readings(load("energy_details_dst_gap"), "energyDetails", BRUSSELS)
    load_w = channel(frame, "load_w")
    assert load_w["ts"].to_list() == [utc(2026, 3, 28, 23) + i * QUARTER for i in range(16)]
    assert load_w["value"].to_list() == [pytest.approx((100 + i) * 4) for i in range(16)]


def test_spring_gap_labels_sent_by_wall_clock_are_dropped_not_collided() -> None:
    """If the vendor labels every local quarter, 02:xx names no instant: drop it, keep 03:00 CEST = 01:00 UTC."""
    frame = parse_meter_readings(load("energy_details_dst_gap_wallclock"), "energyDetails", BRUSSELS)
    load_w = channel(frame, "load_w")
    assert load_w["ts"].to_list() == [utc(2026, 3, 28, 23) + i * QUARTER for i in range(16)]
    assert load_w["value"].to_list() == [pytest.approx((100 + i) * 4) for i in range(16)]


def test_fold_resolution_works_when_a_series_starts_inside_the_repeated_hour() -> None:
    labels = [datetime(2026, 10, 25, 2, 30), datetime(2026, 10, 25, 2, 45), datetime(2026, 10, 25, 2, 0),
              datetime(2026, 10, 25, 2, 15), datetime(2026, 10, 25, 3, 0)]  # fmt: skip
    assert local_series_to_utc(labels, BRUSSELS) == [
        utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 0, 45), utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 1, 15),
        utc(2026, 10, 25, 2, 0),
    ]  # fmt: skip


# --- parsing: error bodies ------------------------------------------------------------------------------------

TOMCAT_403 = (
    "<!doctype html><html><head><title>HTTP Status 403 - Forbidden</title></head><body><h1>HTTP Status 403 - "
    "Forbidden</h1><p><b>Type</b> Status Report</p><p><b>Message</b> Invalid token</p></body></html>"
)


def test_error_text_reads_problem_json_string_json_and_tomcat_html() -> None:
    assert error_text(json.dumps(load("error_401_problem"))) == "Invalid API key"
    assert error_text(json.dumps(load("error_403_token"))) == "Invalid token"
    assert error_text(TOMCAT_403) == "Invalid token"
    assert error_text("") == ""


def test_range_complaints_are_told_apart_from_access_refusals() -> None:
    assert is_range_error(load("error_403_range")["String"])
    assert not is_range_error("Invalid token")
    assert not is_range_error("Access is denied")


def test_retry_after_seconds_and_http_dates() -> None:
    assert retry_after("120", NOW) == NOW + timedelta(seconds=120)
    assert retry_after("Fri, 20 Nov 2026 13:00:00 GMT", NOW) == utc(2026, 11, 20, 13)
    assert retry_after(None, NOW) is None


# --- the client against the fake ------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[tuple[FakeState, str]]:
    state = sandbox_state()
    state.clock = lambda: NOW
    with serve(create_app(state)) as url:
        yield state, url


def make_client(url: str, key: str = SANDBOX_API_KEY, site_id: str = SANDBOX_SITE_ID, **kwargs: Any) -> Any:
    return closing(SolarEdgeV1Client(SecretStr(key), site_id, base_url=url, timeout_s=5.0, **kwargs))


def served(state: FakeState) -> int:
    return sum(state.calls_served.values())


def simulated(state: FakeState, site_id: str, start: datetime, end: datetime) -> pl.DataFrame:
    return simulate(state.sites[site_id].simulated(), start, end, 15)


def test_test_connection_reports_name_capacity_zone_power_and_utc_last_update(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    with make_client(url) as client:
        info = client.test_connection(NOW)
    assert (info.site_name, info.capacity_kw, info.timezone) == ("Brussels office", 8.0, "Europe/Brussels")
    assert info.last_update == utc(2026, 11, 20, 12, 0)  # "13:00:00" Brussels (CET) -> 12:00 UTC
    pv_now = simulate(state.sites[SANDBOX_SITE_ID].simulated(), utc(2026, 11, 20, 12, 5), utc(2026, 11, 20, 12, 10), 5)
    assert info.current_power_w == pytest.approx(pv_now["pv_w"][0], abs=0.01)
    assert served(state) == 2  # details + overview: V1 has no single call with both


def test_current_power_signs_follow_the_flow_connections(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    row = simulate(state.sites[SANDBOX_SITE_ID].simulated(), utc(2026, 11, 20, 12, 5), utc(2026, 11, 20, 12, 10), 5)
    expected = row.row(0, named=True)
    for unit in ("kW", "W"):
        state.flow_unit = unit  # type: ignore[assignment]
        with make_client(url) as client:
            power = client.current_power(NOW)
        assert set(power) == {"pv_w", "load_w", "grid_import_w", "grid_export_w", "battery_w", "soc_pct"}
        for name in ("pv_w", "load_w", "grid_import_w", "grid_export_w", "battery_w"):
            assert power[name] == pytest.approx(expected[name], abs=10.0), (unit, name)  # kW has 2 decimals
        assert power["soc_pct"] == pytest.approx(expected["soc_pct"], abs=0.5)


def test_current_power_falls_back_to_overview_when_the_site_has_no_flow_meter(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    with make_client(url, site_id="3456789") as client:
        power = client.current_power(NOW)
    assert set(power) == {"pv_w"}
    assert served(state) == 2


def test_list_sites_with_an_account_key_in_both_envelopes(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    for envelope in ("site", "list"):
        state.sites_list_key = envelope  # type: ignore[assignment]
        with make_client(url, site_id="") as client:
            sites = client.list_sites()
        assert [(s.id, s.timezone) for s in sites] == [
            ("1234567", "Europe/Brussels"), ("2345678", "Europe/Lisbon"), ("3456789", "America/Denver")
        ]  # fmt: skip


def test_list_sites_pages_through_more_than_one_hundred_sites(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    for i in range(150):
        site = FakeSite(str(5000000 + i), f"Site {i}", "Europe/Paris", 5.0, 48.8, 2.3)
        state.sites[site.id] = site
    state.api_keys[SANDBOX_API_KEY] = tuple(state.sites)
    with make_client(url, site_id="") as client:
        sites = client.list_sites()
    assert len(sites) == 153 and len({s.id for s in sites}) == 153
    assert served(state) == 2


def test_a_site_level_key_lists_its_own_site_through_details(fake: tuple[FakeState, str]) -> None:
    _, url = fake
    with make_client(url, key=SANDBOX_SITE_KEY) as client:
        sites = client.list_sites()
    assert [(s.id, s.name) for s in sites] == [(SANDBOX_SITE_ID, "Brussels office")]


def test_history_matches_the_simulated_site_with_nulls_where_the_vendor_has_no_value(
    fake: tuple[FakeState, str],
) -> None:
    state, url = fake
    start, end = utc(2026, 11, 10), utc(2026, 11, 13)
    with make_client(url) as client:
        frame = client.history(start, end)
    truth = simulated(state, SANDBOX_SITE_ID, start, end)
    assert frame.schema == READINGS_SCHEMA
    for name in ("load_w", "grid_import_w", "grid_export_w"):
        got = channel(frame, name)
        assert got["ts"].to_list() == truth["ts"].to_list()
        assert got["value"].to_list() == pytest.approx(truth[name].to_list(), abs=1e-3)
    pv = channel(frame, "pv_w").join(truth.select("ts", "pv_w"), on="ts")
    assert pv.filter(pl.col("pv_w") == 0)["value"].null_count() == pv.filter(pl.col("pv_w") == 0).height
    day = pv.filter(pl.col("pv_w") > 0)
    assert day.height > 0 and day["value"].to_list() == pytest.approx(day["pv_w"].to_list(), abs=1e-3)


def test_power_details_source_gives_the_same_history(fake: tuple[FakeState, str]) -> None:
    _, url = fake
    start, end = utc(2026, 11, 10, 6), utc(2026, 11, 10, 18)
    with make_client(url) as energy, make_client(url, history_source="powerDetails") as power:
        a, b = energy.history(start, end), power.history(start, end)
    assert a["ts"].to_list() == b["ts"].to_list() and a["channel"].to_list() == b["channel"].to_list()
    assert a["value"].to_list() == pytest.approx(b["value"].to_list(), abs=1e-3, nan_ok=True)


def test_long_history_is_split_into_windows_the_vendor_accepts(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    start, end = utc(2026, 8, 1), utc(2026, 9, 30)  # 60 days: 25 + 25 + 10
    with make_client(url) as client:
        frame = client.history(start, end)
    assert served(state) == 1 + 3  # details once (for the zone), then one call per window
    assert state.largest_window <= DEFAULT_MAX_WINDOW + 2 * DST_PADDING
    load_w = channel(frame, "load_w")
    assert load_w.height == 60 * 96 and load_w["ts"].is_unique().all()
    assert load_w["ts"].diff().drop_nulls().unique().to_list() == [QUARTER]


@pytest.mark.parametrize(
    ("start", "end"),
    [(utc(2026, 10, 24, 12), utc(2026, 10, 25, 12)), (utc(2026, 3, 28, 12), utc(2026, 3, 29, 12))],
    ids=["autumn-fold", "spring-gap"],
)
@pytest.mark.parametrize("max_window", [DEFAULT_MAX_WINDOW, timedelta(minutes=45)], ids=["one-call", "45-min"])
def test_history_across_brussels_dst_changes_matches_utc_truth(
    fake: tuple[FakeState, str], start: datetime, end: datetime, max_window: timedelta
) -> None:
    """Every UTC quarter exactly once with its own value, also when window edges fall inside the DST hour."""
    state, url = fake
    with make_client(url, timezone="Europe/Brussels", max_window=max_window) as client:
        frame = client.history(start, end)
    truth = simulated(state, SANDBOX_SITE_ID, start, end)
    load_w = channel(frame, "load_w")
    assert load_w.height == 96
    assert load_w["ts"].to_list() == truth["ts"].to_list()
    assert load_w["value"].to_list() == pytest.approx(truth["load_w"].to_list(), abs=1e-3)


def test_a_window_the_vendor_finds_too_long_is_a_usage_error_not_an_auth_error(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    for style in ("html", "json"):
        state.range_error_style = style  # type: ignore[assignment]
        client = make_client(url, timezone="Europe/Brussels", max_window=timedelta(days=40))
        with client as opened, pytest.raises(BadResponse) as caught:
            opened.history(utc(2026, 6, 1), utc(2026, 7, 20))
        assert "time range" in str(caught.value) and "max_window" in str(caught.value)
        assert not isinstance(caught.value, AuthError)


def test_the_timezone_setting_saves_the_details_call(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    with make_client(url, timezone="Europe/Brussels") as client:
        client.history(utc(2026, 11, 1), utc(2026, 11, 2))
    assert [path for path, _ in state.requests] == ["site/1234567/energyDetails"]


# --- errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "status_text"),
    [("problem", "401: Invalid API key"), ("legacy_json", "403: Invalid token"), ("legacy_html", "403: Invalid token")],
)
def test_a_bad_key_is_an_auth_error_in_every_observed_form(
    fake: tuple[FakeState, str], style: str, status_text: str
) -> None:
    state, url = fake
    state.auth_style = style  # type: ignore[assignment]
    with make_client(url, key=BAD_API_KEY) as client, pytest.raises(AuthError) as caught:
        client.test_connection(NOW)
    message = str(caught.value)
    assert status_text in message and "check the key in Data Connections" in message
    assert BAD_API_KEY not in message
    assert served(state) == 1  # not retried


def test_a_key_without_access_to_the_site_and_an_unknown_site_are_auth_errors(fake: tuple[FakeState, str]) -> None:
    _, url = fake
    with make_client(url, key=SANDBOX_SITE_KEY, site_id="2345678") as client, pytest.raises(AuthError) as denied:
        client.current_power(NOW)
    assert "denied access" in str(denied.value) and "Access is denied" in str(denied.value)
    with make_client(url, site_id="999") as client, pytest.raises(AuthError) as unknown:
        client.current_power(NOW)
    assert "404" in str(unknown.value) and "site ID" in str(unknown.value)


def test_a_retired_api_says_to_switch_to_v2_and_is_never_retried(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    state.retired = True
    with make_client(url) as client, pytest.raises(ApiRetired) as caught:
        client.history(utc(2026, 11, 1), utc(2026, 11, 2))
    assert '"SolarEdge" (V2)' in str(caught.value) and "Data Connections" in str(caught.value)
    assert served(state) == 1


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("429", RateLimited),
        ("5xx", ProviderConnectionError),
        ("timeout", ProviderConnectionError),
        ("malformed", BadResponse),
        ("html", BadResponse),
        ("410", ApiRetired),
    ],
)
def test_failure_switches_map_to_the_error_tree(
    fake: tuple[FakeState, str], kind: str, error: type[ProviderError]
) -> None:
    state, url = fake
    state.failures.timeout_s = 3.0
    state.failures.fail_next(kind)  # type: ignore[arg-type]
    client = SolarEdgeV1Client(SecretStr(SANDBOX_API_KEY), SANDBOX_SITE_ID, base_url=url, timeout_s=1.0)
    with closing(client), pytest.raises(error) as caught:
        client.current_power(NOW)
    assert SANDBOX_API_KEY not in str(caught.value)
    if isinstance(caught.value, BadResponse):
        assert caught.value.excerpt and SANDBOX_API_KEY not in caught.value.excerpt
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_at == NOW + timedelta(hours=1)


# --- quotas and concurrency -----------------------------------------------------------------------------------


def test_the_client_refuses_a_call_over_its_daily_budget_before_sending_it(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    ledger = QuotaLedger()
    with make_client(url, ledger=ledger, daily_site_limit=2) as client:
        client.current_power(NOW)
        client.current_power(NOW)
        with pytest.raises(RateLimited) as caught:
            client.current_power(NOW)
    assert served(state) == 2
    assert caught.value.retry_at == utc(2026, 11, 21)


def test_sites_list_counts_against_the_account_budget_only(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    ledger = QuotaLedger()
    with make_client(url, ledger=ledger, daily_account_limit=1, daily_site_limit=5) as client:
        client.list_sites()
        with pytest.raises(RateLimited):
            client.current_power(datetime.now(UTC))  # list_sites counted in today's bucket: the one call is spent
    assert served(state) == 1


def test_the_fake_answers_429_the_vendors_way_when_its_quota_is_spent(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    state.site_daily_limit = 1
    with make_client(url) as client:
        client.current_power(NOW)
        with pytest.raises(RateLimited) as caught:
            client.current_power(NOW)
    assert "429" in str(caught.value) and caught.value.retry_at == NOW + timedelta(hours=1)
    response = httpx.get(f"{url}/site/{SANDBOX_SITE_ID}/overview", params={"api_key": SANDBOX_API_KEY})
    assert (response.status_code, response.content, response.headers.get("retry-after")) == (429, b"", None)


def test_concurrent_callers_never_hold_more_than_three_calls_at_the_vendor(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    state.latency_s = 0.3
    ledger = QuotaLedger()
    with make_client(url, ledger=ledger) as client, ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: client.current_power(NOW), range(8)))
    assert len(results) == 8 and all("pv_w" in r for r in results)
    assert state.max_in_flight <= 3


def test_the_fake_enforces_three_concurrent_calls_with_429(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    state.latency_s = 0.5
    barrier = threading.Barrier(6)

    def call(_: int) -> int:
        barrier.wait()
        return httpx.get(f"{url}/site/{SANDBOX_SITE_ID}/details", params={"api_key": SANDBOX_API_KEY}).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(call, range(6)))
    assert statuses.count(429) >= 3 and statuses.count(200) <= 3


@contextmanager
def raw_http(response: bytes) -> Iterator[str]:
    """A one-answer-fits-all server for status lines uvicorn cannot write (an empty reason phrase)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(response)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.mark.parametrize(
    ("extra_header", "retry_at"),
    [(b"", NOW + timedelta(hours=1)), (b"Retry-After: 120\r\n", NOW + timedelta(minutes=2))],
)
def test_a_429_with_an_empty_reason_phrase_is_rate_limited(extra_header: bytes, retry_at: datetime) -> None:
    answer = b"HTTP/1.1 429 \r\nContent-Length: 0\r\nConnection: close\r\n" + extra_header + b"\r\n"
    with raw_http(answer) as url, make_client(url) as client, pytest.raises(RateLimited) as caught:
        client.current_power(NOW)
    assert caught.value.retry_at == retry_at


# --- secrets ---------------------------------------------------------------------------------------------------


def test_the_api_key_never_reaches_a_log_line_or_a_message(
    fake: tuple[FakeState, str], caplog: pytest.LogCaptureFixture
) -> None:
    state, url = fake
    caplog.set_level(logging.DEBUG)
    messages = []
    with make_client(url) as client:
        client.test_connection(NOW)
        client.history(utc(2026, 11, 1), utc(2026, 11, 2))
        for kind in ("429", "5xx", "malformed", "html", "410"):
            state.failures.fail_next(kind)  # type: ignore[arg-type]
            with pytest.raises(ProviderError) as caught:
                client.current_power(NOW)
            messages.append(f"{caught.value} {getattr(caught.value, 'excerpt', '')}")
    with make_client(url, key=BAD_API_KEY) as client, pytest.raises(AuthError) as caught:
        client.current_power(NOW)
    messages.append(str(caught.value))
    unreachable = SolarEdgeV1Client(SecretStr(SANDBOX_API_KEY), "1", base_url="http://127.0.0.1:9", timeout_s=1.0)
    with closing(unreachable), pytest.raises(ProviderConnectionError) as caught:
        unreachable.current_power(NOW)
    messages.append(str(caught.value))
    assert "api_key=***" in caplog.text  # httpx did log the URLs, redacted
    for secret in (SANDBOX_API_KEY, BAD_API_KEY):
        assert secret not in caplog.text
        assert all(secret not in m for m in messages)


# --- settings and harness -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{"site_id": "12/34"}, {"site_id": "1,2"}, {"timezone": "Mars/Olympus"}])
def test_settings_are_checked_when_the_client_is_built(kwargs: dict[str, str]) -> None:
    settings = {"site_id": "1", **kwargs}
    with pytest.raises(ValueError):
        SolarEdgeV1Client(SecretStr("k"), settings.pop("site_id"), **settings)  # type: ignore[arg-type]


def test_declared_limits_are_the_documented_ones() -> None:
    client = SolarEdgeV1Client(SecretStr("k"), "1")
    with closing(client):
        rules = {(r.scope, r.period): r.limit for r in client.quota_rules}
        assert rules == {("site", "day"): 300, ("account", "day"): 300, ("account", "concurrent"): 3}
        assert client.resolution == QUARTER and client.max_window == DEFAULT_MAX_WINDOW


def test_harness_serves_a_history_longer_than_one_window_and_shrinks_quotas() -> None:
    app, harness = make_harness()
    start, end = harness.history_range()
    assert end - start > DEFAULT_MAX_WINDOW and end < datetime.now(UTC)
    with serve(app) as url, closing(harness.client(url)) as client:
        frame = client.history(start, end)
        assert channel(frame, "load_w").height == (end - start) // QUARTER
        calls = harness.calls_served()
        harness.set_quota(calls)
        with pytest.raises(RateLimited):
            client.current_power(datetime.now(UTC))
        assert harness.calls_served() == calls
        assert harness.state.site_daily_limit == calls
