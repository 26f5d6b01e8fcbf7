"""Enphase v4: parsing from fixtures written from the documented shapes, and the client against the fake over loopback.

OAuth is exercised end to end through the fake's real endpoints: consent page, single-use codes, rotating refresh
tokens, expiry via the fake's clock offset.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from pydantic import SecretStr

from core.providers.base import (
    READINGS_SCHEMA,
    ApiRetired,
    AuthError,
    BadResponse,
    NeedsReauthorization,
    ProviderConnectionError,
    ProviderError,
    RateLimited,
)
from core.providers.enphase.client import EnphaseClient
from core.providers.enphase.oauth import (
    Tokens,
    authorize_url,
    exchange_code,
    parse_token_response,
    token_error,
)
from core.providers.enphase.parse import (
    RangeRejected,
    error_for,
    parse_battery,
    parse_consumption_meter,
    parse_production_meter,
    parse_production_micro,
    parse_summary,
    parse_system,
    parse_systems_page,
)
from core.providers.simulator.client import simulate
from tests.fakes.enphase import (
    HARNESS_REDIRECT_URI,
    SANDBOX_API_KEY,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_SYSTEM_ID,
    WRONG_API_KEY,
    FakeState,
    FakeSystem,
    consent,
    create_app,
    seeded_tokens,
)
from tests.fakes.server import serve
from tests.providers.token_stores import InMemoryTokenStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "enphase"
T0 = datetime(2024, 6, 1, tzinfo=UTC)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def values(frame: pl.DataFrame, channel: str) -> list[float | None]:
    return frame.filter(pl.col("channel") == channel)["value"].to_list()


# --- parsing --------------------------------------------------------------------------------------------------


def test_production_micro_is_labelled_by_interval_start_in_average_watts() -> None:
    frame = parse_production_micro(fixture("production_micro_day.json"))
    assert frame.schema == READINGS_SCHEMA
    assert frame["ts"].to_list() == [at(e - 300) for e in (1384122600, 1384122900, 1384123200, 1384123800)]
    assert set(frame["interval_s"]) == {300}
    # powr as given; powr null -> enwh * 12; nothing reported -> null (not 0); numeric string accepted
    assert values(frame, "pv_w") == [30.0, 480.0, None, 25.0]


def test_empty_intervals_are_no_rows_not_an_error() -> None:
    frame = parse_production_micro(fixture("production_micro_empty.json"))
    assert frame.height == 0 and frame.schema == READINGS_SCHEMA


def test_start_date_echo_parses_like_start_at() -> None:
    frame = parse_production_micro(fixture("production_micro_start_date.json"))
    assert frame["ts"].to_list() == [at(1384122700 - 300)]


def test_meters_turn_wh_per_quarter_hour_into_watts() -> None:
    production = parse_production_meter(fixture("production_meter.json"))
    assert production["ts"].to_list() == [at(1384122700 - 900), at(1384123600 - 900)]
    assert set(production["interval_s"]) == {900} and values(production, "pv_w") == [160.0, 160.0]
    consumption = parse_consumption_meter(fixture("consumption_meter.json"))
    assert values(consumption, "load_w") == [160.0, None, 50.0]


def test_battery_is_positive_when_discharging_and_keeps_gaps_null() -> None:
    frame = parse_battery(fixture("battery.json"))
    assert values(frame, "battery_w") == [-160.0, 600.0, None]  # charge 40 Wh; discharge 150 Wh; charge null
    assert values(frame, "soc_pct") == [25.0, None, 24.0]  # soc missing -> null; "24" accepted
    assert frame["ts"].min() == at(1384122700 - 900)


def test_system_summary_and_list() -> None:
    system = parse_system(fixture("system.json"))
    assert (system.system_id, system.name, system.timezone) == ("72", "Enphase System", "America/Los_Angeles")
    summary = parse_summary(fixture("summary.json"))
    assert summary.current_power_w == 3450 and summary.size_w == 8400
    assert summary.last_report_at == at(1748185800)
    stale = parse_summary(fixture("summary_stale.json"))
    assert stale.last_interval_end_at is None and stale.status == "comm"
    sites, total = parse_systems_page(fixture("systems.json"))
    assert total == 28
    assert [(s.id, s.timezone) for s in sites] == [("698910067", None), ("698906018", "US/Pacific")]


def test_unexpected_shapes_are_bad_responses() -> None:
    with pytest.raises(BadResponse):
        parse_production_micro([1, 2])
    with pytest.raises(BadResponse):
        parse_production_micro({"intervals": "none"})
    with pytest.raises(BadResponse):
        parse_battery({"intervals": [{"charge": {"enwh": 1}}]})  # no end_at


@pytest.mark.parametrize(
    ("name", "status", "error", "fragment"),
    [
        ("error_401.json", 401, AuthError, "Application API Key"),
        ("error_403.json", 403, AuthError, "System ID"),
        ("error_404.json", 404, AuthError, "System ID"),
        ("error_405.json", 405, BadResponse, "405"),
        ("error_422_range.json", 422, RangeRejected, "date range is invalid"),
        ("error_422_future.json", 422, RangeRejected, "in the future"),
        ("error_500.json", 500, ProviderConnectionError, "server error"),
        ("error_500_unavailable.json", 500, ProviderConnectionError, "temporarily unavailable"),
        ("error_501.json", 501, ProviderConnectionError, "server error"),
    ],
)
def test_error_bodies_map_to_the_error_tree(name: str, status: int, error: type, fragment: str) -> None:
    exc = error_for(status, (FIXTURES / name).read_text(), system_id="42", now=T0)
    assert type(exc) is error and fragment in str(exc)


def test_422_future_is_marked_so_history_stops() -> None:
    future = error_for(422, (FIXTURES / "error_422_future.json").read_text(), system_id="42", now=T0)
    invalid = error_for(422, (FIXTURES / "error_422_range.json").read_text(), system_id="42", now=T0)
    assert isinstance(future, RangeRejected) and future.future
    assert isinstance(invalid, RangeRejected) and not invalid.future


def test_429_period_end_is_the_retry_time() -> None:
    minute = error_for(429, (FIXTURES / "error_429_minute.json").read_text(), system_id="42", now=T0)
    month = error_for(429, (FIXTURES / "error_429_month.json").read_text(), system_id="42", now=T0)
    assert isinstance(minute, RateLimited) and minute.retry_at == at(1623825720)
    assert isinstance(month, RateLimited) and month.retry_at == at(1625097600) and "next month" in str(month)
    assert "5 calls per minute" in str(minute)
    fallback = error_for(429, "Too Many Requests", system_id="42", now=T0 + timedelta(seconds=30))
    assert isinstance(fallback, RateLimited) and fallback.retry_at == T0 + timedelta(minutes=1)


def test_token_response_and_errors() -> None:
    tokens = parse_token_response(fixture("token.json"), T0)
    assert tokens.access_token.get_secret_value().endswith("sample-access")
    assert tokens.access_expires_at == T0 + timedelta(seconds=86393)
    assert tokens.refresh_expires_at == T0 + timedelta(days=7)
    assert "sample" not in repr(tokens)
    error = token_error(400, (FIXTURES / "token_invalid_grant.json").read_text(), "refresh_token")
    assert isinstance(error, NeedsReauthorization)
    assert "Data Connections" in str(error) and "invalid_grant" in str(error) and "sample-refresh" not in str(error)
    assert isinstance(token_error(401, "", "authorization_code"), NeedsReauthorization)
    assert isinstance(token_error(503, "", "refresh_token"), ProviderConnectionError)
    with pytest.raises(BadResponse):
        parse_token_response({"access_token": "a", "refresh_token": "b"}, T0)


def test_authorize_url_takes_the_oauth_base_or_the_full_url() -> None:
    expected = "https://api.enphaseenergy.com/oauth/authorize?response_type=code&client_id=cid&redirect_uri=http"
    assert authorize_url("cid", "http://x/cb", "s1").startswith(expected)
    assert authorize_url("cid", "http://x/cb", "s1", auth_url="https://api.enphaseenergy.com/oauth/") == (
        authorize_url("cid", "http://x/cb", "s1", auth_url="https://api.enphaseenergy.com/oauth/authorize")
    )
    assert "state=s1" in authorize_url("cid", "http://x/cb", "s1")


def test_tokens_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError):
        Tokens(SecretStr("a"), SecretStr("b"), datetime(2024, 1, 1))


# --- against the fake -----------------------------------------------------------------------------------------


@pytest.fixture
def state() -> FakeState:
    return FakeState()


@pytest.fixture
def url(state: FakeState) -> Iterator[str]:
    with serve(create_app(state)) as base:
        yield base


@dataclass
class RecordingStore(InMemoryTokenStore):
    """Checks the save-before-use order: a saved access token must not have reached the vendor yet."""

    state: FakeState | None = None
    fail_saves: int = 0

    def save(self, tokens: Tokens) -> None:
        if self.fail_saves:
            self.fail_saves -= 1
            raise OSError("database is locked")
        assert self.state is not None
        assert tokens.access_token.get_secret_value() not in self.state.bearer_log
        super().save(tokens)


def make_client(url: str, state: FakeState, store: InMemoryTokenStore | None = None, **kwargs: Any) -> EnphaseClient:
    if store is None:
        store = InMemoryTokenStore(seeded_tokens(url, state))
    options: dict[str, Any] = {"plan": "kilowatt", "timeout_s": 5.0, **kwargs}
    return EnphaseClient(
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SecretStr(options.pop("client_secret", SANDBOX_CLIENT_SECRET)),
        api_key=SecretStr(options.pop("api_key", SANDBOX_API_KEY)),
        system_id=str(options.pop("system_id", SANDBOX_SYSTEM_ID)),
        token_store=store,
        base_url=f"{url}/api/v4",
        auth_url=f"{url}/oauth",
        **options,
    )


def near_expiry(url: str, state: FakeState) -> Tokens:
    """Valid tokens the client believes expire in 2 minutes (inside its 5-minute margin)."""
    tokens = seeded_tokens(url, state)
    soon = datetime.now(UTC) + timedelta(minutes=2)
    return Tokens(tokens.access_token, tokens.refresh_token, soon, tokens.refresh_expires_at)


def test_consent_page_code_exchange_and_single_use(url: str, state: FakeState) -> None:
    with httpx.Client(timeout=5.0) as http:
        code = consent(url, state, http)
        page = http.get(authorize_url(SANDBOX_CLIENT_ID, HARNESS_REDIRECT_URI, "xyz", auth_url=f"{url}/oauth"))
    assert "error=access_denied" in page.text and "state=xyz" in page.text
    common: dict[str, Any] = {
        "client_id": SANDBOX_CLIENT_ID,
        "client_secret": SecretStr(SANDBOX_CLIENT_SECRET),
        "redirect_uri": HARNESS_REDIRECT_URI,
        "now": datetime.now(UTC),
        "auth_url": f"{url}/oauth",
    }
    tokens = exchange_code(code, **common)
    assert tokens.access_token.get_secret_value() in state.access_tokens
    with pytest.raises(NeedsReauthorization) as info:
        exchange_code(code, **common)  # a code works once
    assert code not in str(info.value) and "Data Connections" in str(info.value)


def test_code_exchange_with_a_wrong_secret_needs_reauthorization(url: str, state: FakeState) -> None:
    code = state.issue_code(HARNESS_REDIRECT_URI)
    with pytest.raises(NeedsReauthorization) as info:
        exchange_code(
            code,
            client_id=SANDBOX_CLIENT_ID,
            client_secret=SecretStr("not-the-secret"),
            redirect_uri=HARNESS_REDIRECT_URI,
            now=datetime.now(UTC),
            auth_url=f"{url}/oauth",
        )
    assert "401" in str(info.value) and "not-the-secret" not in str(info.value)


def test_connection_caches_the_system_and_sends_key_and_bearer(url: str, state: FakeState) -> None:
    client = make_client(url, state)
    now = datetime.now(UTC)
    info = client.test_connection(now)
    assert (info.site_name, info.capacity_kw, info.timezone) == (
        "Sandbox Residential System",
        6.4,
        "America/Los_Angeles",
    )
    assert info.last_update.tzinfo is not None and info.last_update <= now
    assert state.calls[(SANDBOX_API_KEY, str(SANDBOX_SYSTEM_ID))] == 2
    client.test_connection(now)
    assert state.calls[(SANDBOX_API_KEY, str(SANDBOX_SYSTEM_ID))] == 3  # name and zone are cached
    assert set(client.current_power(now)) == {"pv_w"}
    assert len(state.bearer_log) == 4


def test_list_sites_follows_pages(url: str, state: FakeState) -> None:
    state.systems = {i: FakeSystem(i, f"System {i}", "Europe/Brussels", 3.0, 50.8, 4.3) for i in range(1, 151)}
    sites = make_client(url, state, system_id=1).list_sites()
    assert len({s.id for s in sites}) == 150
    assert state.calls[(SANDBOX_API_KEY, "")] == 2


def test_history_matches_the_simulator_at_interval_starts(url: str, state: FakeState) -> None:
    client = make_client(url, state)
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    start = end - timedelta(hours=30, minutes=7)  # not on the grid
    frame = client.history(start, end)
    assert frame.schema == READINGS_SCHEMA
    assert frame["ts"].min() >= start and frame["ts"].max() < end  # type: ignore[operator]
    assert state.largest_window <= client.max_window == timedelta(days=1)
    assert sum(state.calls.values()) == 2 * 5  # two one-day windows, five endpoints each (PV, load, battery, grid x2)
    site = state.systems[SANDBOX_SYSTEM_ID].site
    for channel, minutes, tolerance in (("pv_w", 5, 0.5), ("load_w", 15, 2.0), ("battery_w", 15, 4.0)):
        expected = simulate(site, start, end, minutes).select("ts", pl.col(channel).alias("expected"))
        got = frame.filter(pl.col("channel") == channel).join(expected, on="ts", how="inner")
        assert got.height == expected.height > 0
        assert (got["value"] - got["expected"]).abs().max() <= tolerance  # type: ignore[operator]
    soc = frame.filter(pl.col("channel") == "soc_pct")
    assert soc["value"].min() >= 0 and soc["value"].max() <= 100  # type: ignore[operator]


def test_history_leaves_outages_as_gaps(url: str, state: FakeState) -> None:
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    start = end - timedelta(hours=6)
    outage = (start + timedelta(hours=1), start + timedelta(hours=2))
    state.systems[SANDBOX_SYSTEM_ID].outages.append(outage)
    pv = make_client(url, state).history(start, end).filter(pl.col("channel") == "pv_w")
    assert pv.height == 72 - 12
    assert pv.filter((pl.col("ts") >= outage[0]) & (pl.col("ts") < outage[1])).height == 0


def test_history_into_the_future_stops_at_the_first_future_window(url: str, state: FakeState) -> None:
    now = datetime.now(UTC)
    frame = make_client(url, state).history(now - timedelta(hours=3), now + timedelta(days=3))
    assert sum(state.calls.values()) == 5 + 1  # first window's five endpoints, then one 422 "in the future"
    pv = frame.filter(pl.col("channel") == "pv_w")
    assert pv.height > 0 and pv["ts"].max() < now - state.upload_lag  # type: ignore[operator]


def test_history_older_than_two_years_is_no_data(url: str, state: FakeState) -> None:
    start = datetime.now(UTC) - timedelta(days=800)
    frame = make_client(url, state).history(start, start + timedelta(hours=2))
    assert frame.height == 0 and sum(state.calls.values()) == 5


def test_meter_only_selection_uses_week_windows(url: str, state: FakeState) -> None:
    client = make_client(url, state, system_id=698905956, endpoints=("production_meter",))
    assert client.max_window == timedelta(days=7) and client.resolution == timedelta(minutes=15)
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    frame = client.history(end - timedelta(days=3), end)
    assert frame.height == 3 * 96 and set(frame["interval_s"]) == {900}
    assert sum(state.calls.values()) == 1


def test_refresh_before_expiry_saves_the_rotated_pair_before_using_it(url: str, state: FakeState) -> None:
    old = near_expiry(url, state)
    store = RecordingStore(old, state=state)
    make_client(url, state, store=store).current_power(datetime.now(UTC))
    assert len(store.saved) == 1 and store.tokens is store.saved[0]
    new = store.saved[0]
    assert new.refresh_token != old.refresh_token
    assert old.refresh_token.get_secret_value() not in state.refresh_tokens  # rotated: the old one is dead
    assert state.bearer_log == [new.access_token.get_secret_value()]  # the old access token was never used


def test_a_401_renews_once_and_retries(url: str, state: FakeState) -> None:
    store = RecordingStore(seeded_tokens(url, state), state=state)
    client = make_client(url, state, store=store)
    state.clock_offset = timedelta(days=2)  # the access token (1 day) expired, the refresh token (7 days) did not
    assert "pv_w" in client.current_power(datetime.now(UTC))
    assert len(store.saved) == 1
    assert sum(state.calls.values()) == 2  # the rejected call and the retry


def test_a_dead_refresh_token_needs_reauthorization(url: str, state: FakeState) -> None:
    client = make_client(url, state)
    state.clock_offset = timedelta(days=8)
    with pytest.raises(NeedsReauthorization) as info:
        client.current_power(datetime.now(UTC))
    assert "Data Connections" in str(info.value)
    assert not any(secret in str(info.value) for secret in state.issued)


def test_a_revoked_refresh_token_needs_reauthorization(url: str, state: FakeState) -> None:
    tokens = near_expiry(url, state)
    state.refresh_tokens.clear()  # e.g. the owner revoked the app: 400 invalid_grant
    with pytest.raises(NeedsReauthorization, match="invalid_grant"):
        make_client(url, state, store=InMemoryTokenStore(tokens)).current_power(datetime.now(UTC))


def test_no_tokens_yet_needs_authorization_without_calling(url: str, state: FakeState) -> None:
    with pytest.raises(NeedsReauthorization, match="not been authorised"):
        make_client(url, state, store=InMemoryTokenStore()).test_connection(datetime.now(UTC))
    assert sum(state.calls.values()) == 0


def test_a_failed_save_keeps_the_new_tokens_unused_until_saved(url: str, state: FakeState) -> None:
    store = RecordingStore(near_expiry(url, state), state=state, fail_saves=1)
    client = make_client(url, state, store=store)
    token_calls = state.token_calls
    with pytest.raises(ProviderConnectionError, match="could not be saved"):
        client.current_power(datetime.now(UTC))
    assert state.bearer_log == [] and store.saved == []
    client.current_power(datetime.now(UTC))  # the save is retried first, then the new token is used
    assert len(store.saved) == 1 and state.token_calls == token_calls + 1
    assert state.bearer_log == [store.saved[0].access_token.get_secret_value()]


def test_tokens_renewed_by_another_process_are_adopted(url: str, state: FakeState) -> None:
    store = InMemoryTokenStore(near_expiry(url, state))
    first, second = make_client(url, state, store=store), make_client(url, state, store=store)
    second.current_power(datetime.now(UTC) - timedelta(hours=1))  # loads the soon-expiring pair, still usable
    first.current_power(datetime.now(UTC))  # renews and saves
    calls = state.token_calls
    second.current_power(datetime.now(UTC))  # its pair is due: the store has a newer one, no second rotation
    assert state.token_calls == calls and len(store.saved) == 1


def test_watt_plan_is_enforced_before_sending(url: str, state: FakeState) -> None:
    client = make_client(url, state, plan="watt")
    now = datetime.now(UTC)
    for _ in range(10):
        client.current_power(now)
    with pytest.raises(RateLimited) as info:
        client.current_power(now)
    assert info.value.retry_at == now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    assert sum(state.calls.values()) == 10


def test_the_vendors_monthly_429_is_honoured(url: str, state: FakeState) -> None:
    state.per_month_limit = 1
    client = make_client(url, state)
    client.current_power(datetime.now(UTC))
    with pytest.raises(RateLimited) as info:
        client.current_power(datetime.now(UTC))
    month_start = state.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert info.value.retry_at == (month_start + timedelta(days=32)).replace(day=1)
    assert "next month" in str(info.value)


@pytest.mark.parametrize(
    ("failure", "error", "fragment"),
    [
        ("5xx", ProviderConnectionError, "temporarily unavailable"),
        ("html", BadResponse, "HTML"),
        ("malformed", BadResponse, "not valid JSON"),
        ("410", ApiRetired, "410"),
        ("429", RateLimited, "calls per minute"),
    ],
)
def test_failure_switches(url: str, state: FakeState, failure: Any, error: type[ProviderError], fragment: str) -> None:
    client = make_client(url, state)
    state.failures.fail_next(failure)
    with pytest.raises(error, match=fragment) as info:
        client.current_power(datetime.now(UTC))
    if isinstance(info.value, BadResponse):
        assert info.value.excerpt and SANDBOX_API_KEY not in info.value.excerpt
    assert "pv_w" in client.current_power(datetime.now(UTC))  # the next call works again


def test_a_slow_answer_is_a_connection_error(url: str, state: FakeState) -> None:
    client = make_client(url, state, timeout_s=0.3)
    state.failures.timeout_s = 1.0
    state.failures.fail_next("timeout")
    with pytest.raises(ProviderConnectionError, match="did not answer in time"):
        client.current_power(datetime.now(UTC))


def test_wrong_key_and_unknown_system_are_auth_errors(url: str, state: FakeState) -> None:
    with pytest.raises(AuthError, match="Application API Key") as info:
        make_client(url, state, api_key=WRONG_API_KEY).current_power(datetime.now(UTC))
    assert not isinstance(info.value, NeedsReauthorization)
    with pytest.raises(AuthError, match="System ID"):
        make_client(url, state, system_id=12345).current_power(datetime.now(UTC))


def test_no_credential_reaches_a_log_or_a_message(url: str, state: FakeState, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    messages = []
    store = InMemoryTokenStore(near_expiry(url, state))
    client = make_client(url, state, store=store)
    client.test_connection(datetime.now(UTC))  # includes a refresh (refresh_token in the query string)
    client.history(datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC))
    for failure in ("malformed", "html", "5xx"):
        state.failures.fail_next(failure)  # type: ignore[arg-type]
        with pytest.raises(ProviderError) as info:
            client.current_power(datetime.now(UTC))
        messages.append(f"{info.value} {getattr(info.value, 'excerpt', '')}")
    state.clock_offset = timedelta(days=8)
    with pytest.raises(NeedsReauthorization) as dead:
        client.current_power(datetime.now(UTC))
    messages.append(str(dead.value))
    secrets = [*state.issued, SANDBOX_CLIENT_SECRET, SANDBOX_API_KEY]
    assert len(state.issued) >= 5
    assert [s for s in secrets if s in caplog.text] == []
    assert [s for s in secrets if any(s in m for m in messages)] == []


def test_constructor_rejects_unknown_plans_and_endpoints(state: FakeState) -> None:
    store = InMemoryTokenStore()
    for bad in ({"plan": "gigawatt"}, {"endpoints": ("live_data",)}, {"system_id": "1/../2"}):
        with pytest.raises(ValueError):
            make_client("http://127.0.0.1:9", state, store=store, **bad)
