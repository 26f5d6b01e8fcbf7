"""Enphase's live status stream: frames from the documented shape, and the stream client against the fake on loopback
(auth, the duration header, error frames, the Watt plan, quota, malformed events, secrets), then frames to minute rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import polars as pl
import pytest
from pydantic import SecretStr

from core.providers.base import (
    AuthError,
    BadResponse,
    NeedsReauthorization,
    ProviderConnectionError,
    ProviderError,
    RateLimited,
)
from core.providers.enphase.client import EnphaseClient
from core.providers.enphase.live_frames import (
    LIVE_ROWS_SCHEMA,
    LiveError,
    LiveFrame,
    MalformedFrame,
    StreamMinutes,
    StreamNotAvailable,
    minute_rows,
    parse_event,
)
from core.providers.enphase.live_stream import LiveStream
from core.providers.enphase.spec import VENDOR
from core.providers.http_pool import HttpPool
from core.providers.quota import QuotaLedger, account_scope
from tests.fakes.enphase import (
    SANDBOX_API_KEY,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_SYSTEM_ID,
    WRONG_API_KEY,
    FakeState,
    create_app,
    seeded_tokens,
)
from tests.fakes.server import serve
from tests.providers.token_stores import InMemoryTokenStore

# The vendor's documented example frame (docs/enphase-v4.md, "Live status stream").
EXAMPLE = (
    '{"data": {"battery_mode": "Savings Mode", "battery_power": 5, "battery_soc": 40, "consumption_power": 15, '
    '"envoy_serial_number": ["1234"], "generator_power": 0, "grid_power": -10, "grid_status": "On Grid", '
    '"pv_power": 30, "system_id": 123}, "timestamp_epoch": 1679041508556, '
    '"timestamp_utc": "2023-03-17 08:25:08.556", "type": "response"}'
)


# --- frames -------------------------------------------------------------------------------------------------------


def test_the_documented_frame_reads_milliseconds_watts_and_signs() -> None:
    frame = parse_event(EXAMPLE)
    assert isinstance(frame, LiveFrame)
    assert frame.at == datetime(2023, 3, 17, 8, 25, 8, 556_000, tzinfo=UTC)  # milliseconds, not seconds
    assert (frame.pv_w, frame.load_w, frame.grid_w, frame.battery_w, frame.soc_pct) == (30, 15, -10, 5, 40)
    assert (frame.grid_status, frame.battery_mode, frame.gateways) == ("On Grid", "Savings Mode", ("1234",))


def test_the_schemas_extra_nesting_and_a_missing_epoch_read_the_same() -> None:
    nested = parse_event('{"data": ' + EXAMPLE + "}")
    assert nested == parse_event(EXAMPLE)
    by_text = parse_event('{"data": {"pv_power": 7}, "timestamp_utc": "2023-03-17 08:25:08.556"}')
    assert isinstance(by_text, LiveFrame) and by_text.at == datetime(2023, 3, 17, 8, 25, 8, 556_000, tzinfo=UTC)
    assert by_text.grid_w is None and by_text.load_w is None  # not sent: no value, never 0


def test_an_error_frame_and_junk() -> None:
    error = parse_event('{"error": {"code": 472, "message": "The system doesn\'t support live stream"}, "type": "x"}')
    assert error == LiveError(472, "The system doesn't support live stream", "")
    for junk in ('{"data": 12', "[1, 2]", '{"data": {"pv_power": 1}}', '{"type": "response"}'):
        with pytest.raises(MalformedFrame):
            parse_event(junk)


# --- against the fake -----------------------------------------------------------------------------------------------


@pytest.fixture
def state() -> FakeState:
    fake = FakeState()
    fake.set_plan("Kilowatt")
    fake.stream_cadence_s = 0.02  # 50 frames a second
    fake.stream_time_scale = 0.01  # a 30 s stream lasts 0.3 s
    return fake


@pytest.fixture
def url(state: FakeState) -> Iterator[str]:
    with serve(create_app(state)) as base:
        yield base


def make_client(url: str, state: FakeState, **kwargs: Any) -> EnphaseClient:
    options: dict[str, Any] = {"plan": "kilowatt", "timeout_s": 5.0, **kwargs}
    return EnphaseClient(
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SecretStr(SANDBOX_CLIENT_SECRET),
        api_key=SecretStr(options.pop("api_key", SANDBOX_API_KEY)),
        system_id=str(options.pop("system_id", SANDBOX_SYSTEM_ID)),
        token_store=options.pop("store", None) or InMemoryTokenStore(seeded_tokens(url, state)),
        base_url=f"{url}/api/v4",
        auth_url=f"{url}/oauth",
        **options,
    )


def test_frames_are_what_the_fake_sent_in_watts_and_utc(url: str, state: FakeState) -> None:
    stream = LiveStream(make_client(url, state))
    frames = list(stream.frames())
    assert len(frames) == len(state.stream_sent) >= 5 and stream.received == len(frames) and stream.skipped == 0
    for frame, sent in zip(frames, state.stream_sent, strict=True):
        data = sent["data"]
        assert frame.at == datetime.fromtimestamp(sent["timestamp_epoch"] / 1000, UTC)
        assert frame.at.microsecond % 1000 == 0 and abs(frame.at - datetime.now(UTC)) < timedelta(minutes=1)
        assert (frame.pv_w, frame.load_w, frame.battery_w, frame.soc_pct) == (
            data["pv_power"],
            data["consumption_power"],
            data["battery_power"],
            data["battery_soc"],
        )
        assert frame.grid_w == frame.load_w - frame.pv_w - frame.battery_w  # type: ignore[operator]
        assert frame.gateways == tuple(data["envoy_serial_number"]) and frame.grid_status == "On Grid"
    assert stream.closed_at is not None and stream.closed_at >= frames[-1].at


def test_the_duration_header_is_sent_and_honoured(url: str, state: FakeState) -> None:
    state.stream_time_scale = 0.005  # 30 s last 0.15 s
    lasted, counted = [], []
    for duration in (30, 90):
        stream = LiveStream(make_client(url, state), duration_s=duration)
        started = datetime.now(UTC)
        counted.append(len(list(stream.frames())))
        assert stream.closed_at is not None
        lasted.append((stream.closed_at - started).total_seconds())
    assert state.stream_durations == [30, 90]
    assert lasted[0] >= 30 * 0.005 and lasted[1] >= 90 * 0.005 and counted[1] > counted[0]
    for bad in (29, 301, 30.5, True):
        with pytest.raises(ValueError, match=r"30 to 300|whole number"):
            LiveStream(make_client(url, state), duration_s=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("header", "code"), [("29", 461), ("301", 462), ("1.5", 463)])
def test_the_fake_refuses_durations_out_of_range_with_the_documented_frame(
    url: str, state: FakeState, header: str, code: int
) -> None:
    tokens = seeded_tokens(url, state)
    answer = httpx.get(
        f"{url}/api/v4/systems/{SANDBOX_SYSTEM_ID}/live_data",
        params={"key": SANDBOX_API_KEY},
        headers={"Authorization": f"Bearer {tokens.access_token.get_secret_value()}", "duration": header},
    )
    assert answer.status_code == code and answer.headers["content-type"].startswith("text/event-stream")
    event = parse_event(answer.text.removeprefix("data: ").strip())
    assert isinstance(event, LiveError) and event.code == code


@pytest.mark.parametrize(
    ("code", "error", "words"),
    [
        (401, AuthError, "Application API Key"),
        (403, AuthError, "cannot see it"),
        (429, RateLimited, "calls resume at"),
        (461, BadResponse, "30 to 300"),
        (466, StreamNotAvailable, "6.0.0"),
        (468, AuthError, "System ID"),
        (472, StreamNotAvailable, "production meter"),
        (473, ProviderConnectionError, "not reporting"),
        (550, ProviderConnectionError, "will retry later"),
        (551, ProviderConnectionError, "will retry later"),
        (552, ProviderConnectionError, "Unable to connect"),
    ],
)
def test_each_error_frame_maps_onto_the_error_tree(
    url: str, state: FakeState, code: int, error: type[ProviderError], words: str
) -> None:
    state.stream_errors[SANDBOX_SYSTEM_ID] = code
    with pytest.raises(error, match=words) as info:
        list(LiveStream(make_client(url, state)).frames())
    assert type(info.value) is error  # StreamNotAvailable only where streaming itself is impossible
    assert not isinstance(info.value, NeedsReauthorization)
    if isinstance(info.value, RateLimited):
        assert info.value.retry_at is not None and info.value.retry_at > datetime.now(UTC)


def test_an_error_inside_a_running_stream_ends_it_after_the_frames_before(url: str, state: FakeState) -> None:
    state.stream_errors[SANDBOX_SYSTEM_ID], state.stream_error_after = 473, 3
    stream, seen = LiveStream(make_client(url, state)), []
    with pytest.raises(ProviderConnectionError, match="473"):
        seen.extend(stream.frames())
    assert len(seen) == 3


def test_a_watt_plan_is_refused_with_the_plan_message(url: str, state: FakeState) -> None:
    with pytest.raises(StreamNotAvailable, match=r"not included in this application's plan \(Watt\)"):
        list(LiveStream(make_client(url, state, plan="watt")).frames())
    assert sum(state.calls.values()) == 0  # the setting says Watt: nothing is asked
    state.set_plan("Watt")  # the setting says Kilowatt, Enphase knows better
    vendor_said = r"plan \(Enphase answered: 401 Application is not authorized.*plan setting says Kilowatt\)"
    with pytest.raises(StreamNotAvailable, match=vendor_said):
        list(LiveStream(make_client(url, state)).frames())
    assert sum(state.calls.values()) >= 1


def test_an_expired_access_token_is_renewed_once_and_the_stream_opens(url: str, state: FakeState) -> None:
    store = InMemoryTokenStore(seeded_tokens(url, state))
    state.access_tokens.clear()  # the vendor forgot the token the client believes valid: a 401 frame
    frames = list(LiveStream(make_client(url, state, store=store)).frames())
    assert frames and len(store.saved) == 1 and state.token_calls == 2  # the seeding exchange, then one renewal


def test_a_wrong_key_is_an_auth_error_not_the_plan(url: str, state: FakeState) -> None:
    with pytest.raises(AuthError, match="Application API Key") as info:
        list(LiveStream(make_client(url, state, api_key=WRONG_API_KEY)).frames())
    assert not isinstance(info.value, StreamNotAvailable)


def test_each_stream_counts_one_call_in_a_real_ledger(url: str, state: FakeState) -> None:
    ledger = QuotaLedger()
    stream = LiveStream(make_client(url, state, ledger=ledger))
    now = datetime.now(UTC)
    list(stream.frames(now))
    scope = account_scope(SANDBOX_API_KEY)
    assert ledger.used(VENDOR, scope, "month", now) == 1 and sum(state.calls.values()) == 1
    list(stream.frames(now))
    assert ledger.used(VENDOR, scope, "month", now) == 2 and sum(state.calls.values()) == 2
    limited = LiveStream(make_client(url, state, ledger=ledger, calls_per_month=2))
    with pytest.raises(RateLimited, match="per month"):
        list(limited.frames(now))
    assert sum(state.calls.values()) == 2  # refused before it was sent


def test_a_pooled_client_streams_through_the_pool(url: str, state: FakeState) -> None:
    pool = HttpPool(timeout_s=5.0)
    try:
        frames = list(LiveStream(make_client(url, state, http_pool=pool)).frames())
        assert frames and len(pool.hosts()) == 1
    finally:
        pool.close()


def test_a_malformed_event_is_skipped_and_counted(url: str, state: FakeState) -> None:
    state.stream_inject = ['{"data": {"pv_power": 12', "not json at all", '{"data": {"pv_power": 1}}']
    stream = LiveStream(make_client(url, state))
    frames = list(stream.frames())
    assert stream.skipped == 3 and len(frames) == len(state.stream_sent) >= 3


def test_stop_closes_the_stream_at_the_next_frame_and_later_opens(url: str, state: FakeState) -> None:
    state.stream_time_scale = 1.0  # 30 s unless stopped
    stream = LiveStream(make_client(url, state))
    seen = []
    for frame in stream.frames():
        seen.append(frame)
        if len(seen) == 3:
            stream.stop()
    assert len(seen) == 3 and stream.stopped
    assert list(stream.frames()) == [] and sum(state.calls.values()) == 1


def test_html_and_server_failures_are_bad_responses_or_retries(url: str, state: FakeState) -> None:
    client = make_client(url, state)
    state.failures.fail_next("html")
    with pytest.raises(BadResponse, match="HTML") as info:
        list(LiveStream(client).frames())
    assert info.value.excerpt and SANDBOX_API_KEY not in info.value.excerpt
    state.failures.fail_next("5xx")
    with pytest.raises(ProviderConnectionError, match="temporarily unavailable"):
        list(LiveStream(client).frames())


def test_a_stream_silent_past_the_timeout_is_a_connection_error(url: str, state: FakeState) -> None:
    state.stream_time_scale, state.stream_cadence_s = 1.0, 2.0  # a frame, then two seconds of silence
    with pytest.raises(ProviderConnectionError, match="did not answer in time"):
        list(LiveStream(make_client(url, state, timeout_s=0.5)).frames())


def test_no_secret_reaches_a_log_a_message_or_the_recorded_exchange(
    url: str, state: FakeState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = InMemoryTokenStore(seeded_tokens(url, state))
    state.access_tokens.clear()  # a renewal too (refresh token in the query string)
    client = make_client(url, state, store=store)
    state.stream_inject = [f'{{"echo": "{SANDBOX_API_KEY}" {SANDBOX_CLIENT_SECRET}']  # a junk event quoting secrets
    stream = LiveStream(client)
    texts = [str(len(list(stream.frames())))]
    assert stream.skipped == 1 and "skipped an unreadable live frame" in caplog.text
    for code in (401, 403, 429, 466, 472, 473, 550):
        state.stream_errors[SANDBOX_SYSTEM_ID] = code
        with pytest.raises(ProviderError) as info:
            list(LiveStream(client).frames())
        texts.append(f"{info.value} {getattr(info.value, 'excerpt', '')}")
    state.stream_errors.clear()
    state.failures.fail_next("html")
    with pytest.raises(BadResponse) as html:
        list(LiveStream(client).frames())
    texts.append(f"{html.value} {html.value.excerpt}")
    texts.extend(f"{e.endpoint} {e.body}" for e in client.exchanges())
    secrets = [*state.issued, SANDBOX_CLIENT_SECRET, SANDBOX_API_KEY]
    assert len(state.issued) >= 4
    assert [s for s in secrets if s in caplog.text] == []
    assert [s for s in secrets if any(s in t for t in texts)] == []


# --- minute rows -----------------------------------------------------------------------------------------------------

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def frame(second: float, *, pv: float, load: float, grid: float, battery: float, soc: float) -> LiveFrame:
    at = T0 + timedelta(seconds=second)
    return LiveFrame(at, pv, load, grid, battery, soc, 0.0, "On Grid", "Self-consumption", ("1",))


def values(rows: pl.DataFrame, minute: int, column: str = "value") -> dict[str, float | None]:
    chosen = rows.filter(pl.col("ts") == T0 + timedelta(minutes=minute))
    return dict(zip(chosen["channel"], chosen[column], strict=True))


def coverage(rows: pl.DataFrame, minute: int) -> float:
    """The minute's coverage, the same for every channel (a frame samples them all)."""
    (shared,) = set(values(rows, minute, "coverage").values())
    assert shared is not None
    return shared


def test_minute_rows_average_with_coverage_and_split_the_grid_by_sign() -> None:
    # Minute 0: importing 1000 W for 30 s, then exporting 500 W for 30 s; minute 1: the stream ends at 1:15.
    frames = [frame(s, pv=0, load=1000, grid=1000, battery=0, soc=50) for s in range(0, 30)]
    frames += [frame(s, pv=1500, load=1000, grid=-500, battery=0, soc=51) for s in range(30, 75)]
    rows = minute_rows(frames, ended_at=T0 + timedelta(seconds=75))
    assert rows.schema == LIVE_ROWS_SCHEMA and set(rows["interval_s"]) == {60}
    first = values(rows, 0)
    assert first["grid_import_w"] == pytest.approx(500.0) and first["grid_export_w"] == pytest.approx(250.0)
    assert first["pv_w"] == pytest.approx(750.0) and first["load_w"] == pytest.approx(1000.0)
    assert first["soc_pct"] == pytest.approx(50.5) and first["battery_w"] == 0.0
    assert coverage(rows, 0) == pytest.approx(1.0)
    second = values(rows, 1)
    assert second["grid_export_w"] == pytest.approx(500.0) and second["grid_import_w"] == 0.0
    assert coverage(rows, 1) == pytest.approx(0.25)  # 15 s of the minute
    assert rows.height == 12


def test_frames_far_apart_cover_only_their_hold() -> None:
    frames = [frame(s, pv=600, load=0, grid=-600, battery=0, soc=80) for s in (0, 30)]
    rows = minute_rows(frames, ended_at=T0 + timedelta(seconds=31), hold_s=10.0)
    assert coverage(rows, 0) == pytest.approx(11 / 60)  # 10 s held, then 1 s to the end
    assert values(rows, 0)["grid_export_w"] == pytest.approx(600.0)


def test_stream_minutes_span_consecutive_streams_and_hand_out_each_minute_once() -> None:
    minutes = StreamMinutes()
    first = [minutes.add(frame(s, pv=100, load=100, grid=0, battery=0, soc=10)) for s in range(0, 40)]
    assert all(part.height == 0 for part in first)  # nothing complete inside the minute
    minutes.ended(T0 + timedelta(seconds=40))
    assert minutes.add(frame(45, pv=300, load=100, grid=-200, battery=0, soc=10)).height == 0  # the next stream
    done = minutes.add(frame(61, pv=300, load=100, grid=-200, battery=0, soc=10))
    assert values(done, 0)["pv_w"] == pytest.approx((40 * 100 + 15 * 300) / 55)  # 40 s + 15 s covered, 5 s gap
    assert coverage(done, 0) == pytest.approx(55 / 60)
    assert minutes.due(T0 + timedelta(seconds=200)).height == 6  # minute 1, then nothing twice
    assert minutes.due(T0 + timedelta(seconds=300)).height == 0
