"""SolarEdge Monitoring API V2: parsing from documented-shape fixtures, then the client against the fake over loopback.

The fake (tests/fakes/solaredge_v2.py) is exercised directly too, where its behaviour is what other tests and the
sandbox rely on (null rules, range limits, the two kinds of 429, OAuth grants).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
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
    RateLimited,
)
from core.providers.quota import QuotaLedger
from core.providers.simulator.client import simulate
from core.providers.solaredge_v2.client import SolarEdgeV2Client
from core.providers.solaredge_v2.parse import (
    combine_channels,
    next_cycle_start,
    parse_meters,
    parse_power,
    parse_problem,
    parse_retry_after,
    parse_site_details,
    parse_site_list,
    parse_storage,
    parse_time,
)
from tests.fakes.server import serve
from tests.fakes.solaredge_v2 import (
    SANDBOX_API_KEY,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    FakeSite,
    FakeState,
    create_app,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "solaredge_v2"
OFFICE, HOME = "1234567", "3066774"  # sandbox sites: meter + battery in Chicago; PV only in London
BAD_KEY = "definitely-not-the-key-0123456789"


def load(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def worst(diff: pl.Series) -> float:
    """The largest absolute difference (typed, unlike `Series.max`)."""
    return max(abs(v) for v in diff.to_list())


# --- parsing ---------------------------------------------------------------------------------------------------


def test_times_with_z_offsets_nanoseconds_or_no_offset() -> None:
    assert parse_time("2026-08-24T17:05:51.160789237+01:00") == utc(2026, 8, 24, 16, 5, 51, 160789)
    assert parse_time("2026-08-24T12:00:00Z") == utc(2026, 8, 24, 12)
    assert parse_time("2026-01-15T10:30:00", ZoneInfo("Europe/Amsterdam")) == utc(2026, 1, 15, 9, 30)
    with pytest.raises(BadResponse, match="without a UTC offset"):
        parse_time("2026-01-15T10:30:00")
    with pytest.raises(BadResponse):
        parse_time("yesterday")


def test_site_list_reads_the_singular_site_key_and_the_2022_bare_array() -> None:
    sites = parse_site_list(load("sites"))
    assert [(s.id, s.name, s.timezone, s.capacity_kw) for s in sites] == [
        ("3066774", "Home", "Europe/Dublin", 5.68),
        ("1234567", "Example Home", "America/Chicago", 7.6),
    ]
    legacy = parse_site_list(load("sites_2022_bare_array"))
    assert legacy[0].id == "42" and legacy[0].timezone is None
    assert parse_site_list({"sites": {"count": 0}}) == []
    with pytest.raises(BadResponse):
        parse_site_list({"unexpected": True})


def test_site_details_unwrapped_wrapped_and_v1_spelling() -> None:
    details = parse_site_details(load("site_details"))
    assert (details.site_id, details.name, details.capacity_kw, details.timezone) == (
        "1234567",
        "Example Home",
        7.6,
        "America/Chicago",
    )
    assert details.last_update == utc(2026, 9, 29, 17, 45)
    wrapped = parse_site_details(load("site_details_wrapped_v1_spelling"))
    assert (wrapped.site_id, wrapped.timezone, wrapped.capacity_kw) == ("555", "Europe/Amsterdam", 4.0)
    assert wrapped.last_update == utc(2026, 1, 15, 9, 30)  # no offset: site-local wall time


def test_power_keeps_nulls_and_labels_bucket_starts_in_utc() -> None:
    interval, series = parse_power(load("power"))
    assert interval == 900
    assert series[utc(2026, 8, 24, 4, 30)] is None  # before the first sample of the day
    assert series[utc(2026, 8, 24, 5, 0)] == 0.0  # dawn
    assert series[utc(2026, 8, 24, 15, 45)] == 1620.0
    assert series[utc(2026, 8, 24, 16, 0)] is None  # the in-progress bucket


def test_units_are_applied_case_insensitively() -> None:
    _, kw = parse_power(load("power_kw_mixed_case"))
    assert kw == {utc(2026, 8, 24, 12): 1500.0, utc(2026, 8, 24, 12, 15): None}
    with pytest.raises(BadResponse) as info:
        parse_power({"unit": "HP", "values": []})
    assert "HP" in str(info.value) and info.value.excerpt


def test_the_repeated_autumn_hour_stays_two_distinct_hours() -> None:
    _, series = parse_power(load("power_dst_autumn"))
    values = [series[utc(2026, 10, 25, 0, 0) + timedelta(minutes=15 * i)] for i in range(8)]
    assert values == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert len(series) == 11


def test_meters_prefer_energy_sum_meters_and_ignore_the_top_level_unit() -> None:
    interval, meters = parse_meters(load("meters_telemetry"))
    noon = utc(2026, 9, 29, 17)
    assert interval == 900
    assert meters["import"][noon] == pytest.approx(1257.08)  # 314.27 Wh per quarter hour
    assert meters["export"][noon] == 0.0  # exportEnergy wins over the (sampled) exportPower of 9999 W
    assert meters["export"][noon + timedelta(minutes=15)] == 502.0
    assert meters["consumption"][noon] == 1800.0  # KW power when no energy metric exists
    assert meters["import"][noon + timedelta(minutes=30)] is None
    assert "production" not in meters
    assert parse_meters(load("meters_empty"))[1] == {}


def test_storage_gives_discharge_positive_battery_power_and_soc() -> None:
    _, storage = parse_storage(load("storage_telemetry"))
    noon = utc(2026, 9, 29, 17)
    assert storage["battery"][noon] == -3000.0  # charging: 750 Wh in 15 min
    assert storage["battery"][noon + timedelta(minutes=15)] == 1500.0
    assert storage["battery"][noon + timedelta(minutes=30)] is None
    assert storage["soc"][noon] == 67.8


def test_load_is_derived_from_the_energy_balance_without_a_consumption_meter() -> None:
    _, meters = parse_meters(load("meters_grid_only"))
    night, noon = utc(2026, 6, 1, 1, 45), utc(2026, 6, 1, 10)
    pv = {night: None, noon: 3000.0, noon + timedelta(minutes=15): None}
    channels = combine_channels(pv, meters, {})
    assert channels["load_w"][night] == 400.0  # the inverter sleeps (null PV), the grid meter still measures
    assert channels["load_w"][noon] == 3000.0 - 2000.0
    assert channels["load_w"][noon + timedelta(minutes=15)] is None
    assert set(channels) == {"pv_w", "grid_import_w", "grid_export_w", "load_w"}


@pytest.mark.parametrize(
    ("fixture", "text"),
    [
        ("problem_401", "Invalid API key"),
        ("problem_401_v1_host", "Invalid API key"),
        ("oauth_missing_token", "The access token is missing"),
        ("not_found", "Unknown endpoint"),
        ("kong_429", "API rate limit exceeded"),
    ],
)
def test_error_bodies_yield_their_human_text(fixture: str, text: str) -> None:
    assert parse_problem(load(fixture)) == text


def test_retry_after_and_billing_cycles() -> None:
    now = utc(2026, 8, 24, 16, 5, 45)
    assert parse_retry_after("15", now) == utc(2026, 8, 24, 16, 6)
    assert parse_retry_after("Mon, 24 Aug 2026 16:07:00 GMT", now) == utc(2026, 8, 24, 16, 7)
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None
    assert next_cycle_start(utc(2026, 1, 31, 12), 31) == utc(2026, 2, 28)
    assert next_cycle_start(utc(2026, 12, 20), 15) == utc(2027, 1, 15)
    assert next_cycle_start(utc(2026, 8, 14, 23), 15) == utc(2026, 8, 15)


# --- the client against the fake -------------------------------------------------------------------------------


@pytest.fixture
def fake(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[FakeState, str]]:
    """A fresh fake per test, with generous limits unless the test sets its own; no credential may reach a log."""
    caplog.set_level(logging.DEBUG)
    state = FakeState(per_minute_limit=1000, monthly_credits=100_000)
    with serve(create_app(state)) as url:
        yield state, url
    assert SANDBOX_API_KEY not in caplog.text and BAD_KEY not in caplog.text


def client(url: str, site: str = OFFICE, key: str = SANDBOX_API_KEY, **kwargs: Any) -> SolarEdgeV2Client:
    kwargs.setdefault("calls_per_minute", 1000)
    return SolarEdgeV2Client(SecretStr(key), site, base_url=f"{url}/v2", timeout_s=5.0, **kwargs)


def test_connection_reports_name_capacity_zone_power_and_last_upload(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    now = datetime.now(UTC)
    info = client(url).test_connection(now)
    assert (info.site_name, info.capacity_kw, info.timezone) == ("Sandbox Office", 7.6, "America/Chicago")
    assert info.last_update.tzinfo is not None and now - timedelta(minutes=20) < info.last_update <= now
    assert info.current_power_w is None or info.current_power_w >= 0
    assert state.calls_total == 2


def test_history_matches_the_simulator_in_utc_interval_starts(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    start, end = utc(2026, 6, 1, 0, 7), utc(2026, 6, 2, 6)  # an unaligned start: first bucket is 00:15
    frame = client(url).history(start, end)
    assert frame.schema == READINGS_SCHEMA
    assert frame["ts"].min() == utc(2026, 6, 1, 0, 15) and frame["ts"].max() == utc(2026, 6, 2, 5, 45)
    assert set(frame["channel"].unique()) == {
        "pv_w",
        "load_w",
        "grid_import_w",
        "grid_export_w",
        "battery_w",
        "soc_pct",
    }
    assert frame["interval_s"].unique().to_list() == [900]
    assert state.largest_window <= timedelta(hours=12) and state.calls_total == 3 * 3  # 3 windows, 3 calls each
    site = state.site(int(OFFICE))
    assert site is not None
    truth = simulate(site.simulated(), start, end, 15).unpivot(index="ts", variable_name="channel", value_name="sim")
    joined = frame.join(truth, on=["ts", "channel"], how="inner").drop_nulls("value")
    assert joined.height > 500
    # Equal up to rounding, except the dawn bucket the API reports as 0.0 while the simulator has under 1 W.
    diff = joined["value"] - joined["sim"]
    assert worst(diff) < 1.0 and sorted(abs(v) for v in diff.to_list())[diff.len() // 2] < 0.001
    pv = frame.filter(pl.col("channel") == "pv_w")
    night = pv.filter(pl.col("ts") == utc(2026, 6, 1, 8))["value"]  # 03:00 in Chicago
    assert night.to_list() == [None]  # before the first sample of the day


def test_pv_only_site_stops_asking_for_telemetry_after_one_empty_answer(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    frame = client(url, HOME).history(utc(2026, 6, 1), utc(2026, 6, 2, 12))
    assert set(frame["channel"].unique()) == {"pv_w"}
    assert state.calls_total == 3 + 2  # first window probes meters and storage, the other two ask for power only
    before = state.calls_total
    client(url, HOME, has_meter=False, has_battery=False).history(utc(2026, 6, 1), utc(2026, 6, 1, 12))
    assert state.calls_total - before == 1


def test_grid_meter_only_site_gets_its_load_from_the_energy_balance(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    site = FakeSite(777, "Grid Meter Only", "Europe/Brussels", 6.0, 50.85, 4.35, has_meter=True,
                    consumption_meter=False, battery_kwh=5.0, seed=7)  # fmt: skip
    state.sites.append(site)
    start, end = utc(2026, 5, 10), utc(2026, 5, 10, 12)
    frame = client(url, "777").history(start, end)
    load_w = frame.filter(pl.col("channel") == "load_w").drop_nulls("value")
    truth = simulate(site.simulated(), start, end, 15).select("ts", "load_w")
    joined = load_w.join(truth, on="ts")
    assert joined.height == 48
    assert worst(joined["value"] - joined["load_w"]) < 1.0  # the dawn bucket: 0.0 W reported vs < 1 W


def test_history_across_the_autumn_change_has_25_distinct_hours(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    state.sites.append(FakeSite(888, "London", "Europe/London", 4.0, 51.5, -0.12, seed=3))
    start, end = utc(2026, 10, 24, 23), utc(2026, 10, 26)  # the local day of 25 October: 25 hours
    frame = client(url, "888", has_meter=False, has_battery=False).history(start, end)
    assert frame.height == 100 and frame["ts"].is_unique().all()


def test_current_power_takes_the_newest_non_null_bucket_per_channel(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    now = datetime.now(UTC)
    power = client(url).current_power(now)
    assert {"grid_import_w", "grid_export_w", "battery_w", "soc_pct", "load_w"} <= set(power)
    assert all(isinstance(v, float) for v in power.values())
    assert state.calls_total == 3


def test_list_sites_pages_until_a_short_page(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    state.sites += [FakeSite(9000 + i, f"Fleet {i}", "Europe/Paris", 3.0, 48.8, 2.3) for i in range(3)]
    sites = client(url, sites_page_size=2).list_sites()
    assert [s.id for s in sites][:3] == ["3066774", "1234567", "2345678"] and len(sites) == 6
    assert sites[1].timezone == "America/Chicago" and sites[1].capacity_kw == 7.6
    assert state.calls_total == 4  # three full pages, then an empty one


def test_a_wrong_key_is_an_auth_error_that_names_the_fix(fake: tuple[FakeState, str]) -> None:
    _, url = fake
    with pytest.raises(AuthError) as info:
        client(url, key=BAD_KEY).test_connection(datetime.now(UTC))
    message = str(info.value)
    assert "401" in message and "Data Connections" in message and BAD_KEY not in message


def test_an_oauth_style_401_body_is_still_an_auth_error(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    state.unauthorized_body = "oauth"
    with pytest.raises(AuthError, match="access token is missing"):
        client(url, key=BAD_KEY).list_sites()


@pytest.mark.parametrize("status", [403, 404])
def test_an_unknown_site_tells_the_user_to_check_the_site_id(fake: tuple[FakeState, str], status: int) -> None:
    state, url = fake
    state.unknown_site_status = status
    with pytest.raises(AuthError, match="Site ID") as info:
        client(url, "999999").test_connection(datetime.now(UTC))
    assert str(status) in str(info.value)


def test_a_site_outside_the_keys_fleet_is_refused(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    state.key_sites[SANDBOX_API_KEY] = {int(HOME)}
    with pytest.raises(AuthError, match="403"):
        client(url).history(utc(2026, 6, 1), utc(2026, 6, 1, 6))


@pytest.mark.parametrize(
    ("kind", "error", "text"),
    [
        ("5xx", ProviderConnectionError, r"server problem \(502\)"),
        ("html", BadResponse, "web page"),
        ("malformed", BadResponse, "malformed JSON"),
        ("410", ApiRetired, "base URL"),
    ],
)
def test_failures_are_sorted_by_what_the_caller_must_do(
    fake: tuple[FakeState, str], kind: str, error: type[Exception], text: str
) -> None:
    state, url = fake
    state.failures.fail_next(kind)  # type: ignore[arg-type]
    with pytest.raises(error, match=text) as info:
        client(url).history(utc(2026, 6, 1), utc(2026, 6, 1, 6))
    if isinstance(info.value, BadResponse):
        assert info.value.excerpt and len(info.value.excerpt) <= 200


def test_a_wrong_base_url_is_explained(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    no_v2 = SolarEdgeV2Client(SecretStr(SANDBOX_API_KEY), OFFICE, base_url=url, calls_per_minute=1000)
    with pytest.raises(AuthError, match="base URL"):
        no_v2.test_connection(datetime.now(UTC))
    state.retire_v1 = True
    with pytest.raises(ApiRetired, match="/v2"):
        no_v2.test_connection(datetime.now(UTC))


def test_the_per_minute_429_retries_at_the_next_minute(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    state.per_minute_limit = 1
    state.rate_limit_body = "kong"
    subject = client(url)
    subject.list_sites()
    now = datetime.now(UTC)
    with pytest.raises(RateLimited, match="per-minute") as info:
        subject.list_sites()
    assert info.value.retry_at is not None and now < info.value.retry_at <= now + timedelta(seconds=61)


def test_spent_monthly_credits_retry_at_the_billing_anniversary(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    state.monthly_credits, state.billing_cycle_day = 1, 15
    subject = client(url, billing_cycle_day=15)
    subject.list_sites()
    now = datetime.now(UTC)
    with pytest.raises(RateLimited, match="monthly credits") as info:
        subject.list_sites()
    assert info.value.retry_at == next_cycle_start(now, 15)


def test_the_client_refuses_before_the_vendor_has_to(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    subject = client(url, calls_per_minute=1, ledger=QuotaLedger())
    now = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)  # both calls in one minute, wherever the wall clock is
    subject.device_types(now)
    with pytest.raises(RateLimited) as info:
        subject.device_types(now + timedelta(seconds=20))
    assert info.value.retry_at is not None and state.calls_total == 1


def test_a_window_longer_than_the_vendor_allows_is_a_bad_response(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    with pytest.raises(BadResponse, match="12 hours"):
        client(url, max_window=timedelta(hours=13)).history(utc(2026, 6, 1), utc(2026, 6, 1, 13))
    state.quarter_hour_max = timedelta(days=7)  # the variant one live client reports
    frame = client(url, max_window=timedelta(days=2), has_meter=False, has_battery=False).history(
        utc(2026, 6, 1), utc(2026, 6, 3)
    )
    assert frame.height == 192


def test_the_account_key_header_is_accepted(fake: tuple[FakeState, str]) -> None:
    _, url = fake
    subject = client(url, account_key=SecretStr("an-account-key"))
    assert len(subject.list_sites()) == 3


# --- the fake itself -------------------------------------------------------------------------------------------


def test_fake_default_call_reproduces_the_live_capture(fake: tuple[FakeState, str]) -> None:
    """S1's capture: at 17:05:51 (+01:00) the parameterless call returned 00:00..17:00, 17:00 null, 16:45 valued."""
    state, url = fake
    state.clock = lambda: datetime(2026, 8, 24, 16, 5, 51, 160789, tzinfo=UTC)
    body = httpx.get(f"{url}/v2/sites/{HOME}/power", headers={"X-API-Key": SANDBOX_API_KEY}).json()
    assert body["period"]["from"] == "2026-08-24T00:00:00+01:00"
    assert body["period"]["to"].startswith("2026-08-24T17:05:51.160789") and body["period"]["to"].endswith("+01:00")
    values = body["values"]
    assert len(values) == 69 and values[-1] == {"timestamp": "2026-08-24T17:00:00+01:00", "value": None}
    assert values[-2]["value"] is not None and values[0]["value"] is None
    first = next(i for i, v in enumerate(values) if v["value"] is not None)
    assert values[first]["value"] == 0.0  # dawn


def test_fake_errors_and_headers_look_like_production(fake: tuple[FakeState, str]) -> None:
    _, url = fake
    headers = {"X-API-Key": SANDBOX_API_KEY}
    missing = httpx.get(f"{url}/v2/sites/{HOME}/powerFlow", headers=headers)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    body = missing.json()
    assert set(body) == {"type", "title", "status", "detail", "traceId"} and len(body["traceId"]) == 32
    assert missing.headers["x-ratelimit-remaining-minute"] == "999" and missing.headers["via"] == "kong/3.7.1"
    unauthenticated = httpx.get(f"{url}/v2/sites", params={"api_key": SANDBOX_API_KEY})
    assert unauthenticated.status_code == 401 and "x-ratelimit-limit-minute" not in unauthenticated.headers
    too_long = httpx.get(
        f"{url}/v2/sites/{HOME}/energy",
        headers=headers,
        params={"from": "2026-06-01T00:00:00+02:00", "to": "2026-06-04T00:00:00+02:00", "resolution": "HOUR"},
    )
    assert too_long.status_code == 400 and "24 hours" in too_long.json()["detail"]
    raw_plus = httpx.get(f"{url}/v2/sites/{HOME}/power?from=2026-06-01T00:00:00+02:00", headers=headers)
    assert raw_plus.status_code == 400  # an unencoded `+` arrives as a space
    devices = httpx.get(f"{url}/v2/sites/{OFFICE}/devices", headers=headers).json()
    assert [d["type"] for d in devices] == ["INVERTER"]
    meters = httpx.get(f"{url}/v2/sites/{OFFICE}/devices?types=METER&types=BATTERY", headers=headers).json()
    assert {d["type"] for d in meters} == {"METER", "BATTERY"} and any(d["serialNumber"] is None for d in meters)
    fleet_alerts = httpx.get(f"{url}/v2/alerts", headers=headers, params={"only-open": "true"}).json()
    assert [a["type"] for a in fleet_alerts] == ["SITE_COMMUNICATION_FAULT"]
    assert httpx.get(f"{url}/v2/sites/{HOME}/alerts", headers=headers).content == b"[]"
    overview = httpx.get(f"{url}/v2/sites/{HOME}/overview", headers=headers).json()
    assert overview["consumption"]["total"] is None and overview["production"]["toGrid"] is None


def test_fake_sums_agree_across_resolutions(fake: tuple[FakeState, str]) -> None:
    _, url = fake
    headers = {"X-API-Key": SANDBOX_API_KEY}

    def energy(start: str, end: str, resolution: str) -> list[float]:
        params = {"from": start, "to": end, "resolution": resolution}
        body = httpx.get(f"{url}/v2/sites/{HOME}/energy", headers=headers, params=params).json()
        return [v["value"] or 0.0 for v in body["values"]]

    quarters = energy("2026-06-01T00:00:00", "2026-06-01T11:59:59", "QUARTER_HOUR")
    quarters += energy("2026-06-01T12:00:00", "2026-06-01T23:59:59", "QUARTER_HOUR")
    day = energy("2026-06-01T00:00:00", "2026-06-01T23:59:59", "DAY")
    assert len(quarters) == 96 and day == [pytest.approx(sum(quarters), abs=0.01)]


def test_fake_monthly_credits_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "credits.json"
    state = FakeState(state_file=path)
    state.charge_credit("abc", utc(2026, 8, 24))
    assert FakeState(state_file=path).credits_spent("abc", utc(2026, 8, 30)) == 1
    assert FakeState(state_file=path).credits_spent("abc", utc(2026, 9, 1)) == 0  # a new cycle


def test_fake_site_access_grants(fake: tuple[FakeState, str]) -> None:
    state, url = fake
    secret = {"client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET}
    callback = state.authorize(int(HOME), scopes=["SITE_DATA"])
    assert set(callback) == {"code", "site_id", "external_id"}
    form = httpx.post(f"{url}/v2/oauth2/token", data={"grant_type": "authorization_code", **callback, **secret})
    assert form.status_code == 400 and form.json()["error"] == "invalid_request"
    exchange = {"grant_type": "authorization_code", "code": callback["code"], **secret}
    tokens = httpx.post(f"{url}/v2/oauth2/token", json=exchange).json()
    assert tokens["expires_in"] == 7200 and tokens["token_type"] == "Bearer"
    assert httpx.post(f"{url}/v2/oauth2/token", json=exchange).status_code == 400  # codes are single-use
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert httpx.get(f"{url}/v2/sites/{HOME}", headers=bearer).status_code == 200
    assert httpx.get(f"{url}/v2/sites/{OFFICE}", headers=bearer).status_code == 403
    assert httpx.get(f"{url}/v2/sites", headers=bearer).status_code == 403
    assert httpx.get(f"{url}/v2/sites/{HOME}/meters/telemetry", headers=bearer).status_code == 403  # no DEVICE_DATA
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], **secret}
    rotated = httpx.post(f"{url}/v2/oauth2/token", json=refresh).json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    reused = httpx.post(f"{url}/v2/oauth2/token", json=refresh)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    httpx.post(f"{url}/v2/oauth2/revoke-token", json={"token": rotated["refresh_token"]})
    dead = {"Authorization": f"Bearer {rotated['access_token']}"}
    assert httpx.get(f"{url}/v2/sites/{HOME}", headers=dead).status_code == 401
