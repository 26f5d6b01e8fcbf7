"""Raw vendor exchanges (recorded by the HTTP funnel, stored in `api_data_cache`) and the Test Connection reuse.

Everything runs against the fake vendor servers over loopback; calls are counted at the fakes, not in our code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from core.catalog import catalog as cat
from core.catalog import connections
from core.catalog.connection_test_cache import TEST_ENDPOINT, cached_test, store_test
from core.catalog.connections import draft_from_source, new_draft, save_connections
from core.catalog.source_drafts import TestOutcome as Outcome  # aliased: pytest would try to collect a Test* class
from core.config import Settings
from core.models import Category, ConnectionStatus, MeterIn, SiteIn
from core.providers.base import AuthError, ProviderConnectionError
from core.providers.context import ProviderContext
from core.providers.enphase.client import EnphaseClient
from core.providers.exchange import MAX_BODY_BYTES, MAX_EXCHANGES, Exchange
from core.providers.http import HttpFunnel
from core.providers.quota import QuotaLedger
from core.providers.solaredge_v1.client import SolarEdgeV1Client
from core.providers.solaredge_v2.client import SolarEdgeV2Client
from core.store.crypto import SecretBox, generate_key
from core.store.exchange_archive import write_exchanges
from core.store.oauth_tokens import StoredTokens
from core.store.store import Store
from tests.fakes import enphase as fake_enphase
from tests.fakes import solaredge_v1 as fake_v1
from tests.fakes import solaredge_v2 as fake_v2
from tests.fakes.server import serve
from tests.providers.token_stores import InMemoryTokenStore

OFFICE, HOME = "1234567", "3066774"  # V2 sandbox sites: meter + battery in Chicago; PV only in London
WRONG_KEY = "wrong-solaredge-key-0123456789"
SUFFIX = "; no new API call)"


def all_text(exchanges: list[Exchange]) -> str:
    return "\n".join(f"{e.endpoint} {e.body}" for e in exchanges)


# --- the funnel records exchanges ------------------------------------------------------------------------------


@pytest.fixture
def v2(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[fake_v2.FakeState, str]]:
    caplog.set_level(logging.DEBUG)
    state = fake_v2.FakeState(per_minute_limit=1000, monthly_credits=100_000)
    with serve(fake_v2.create_app(state)) as url:
        yield state, url
    assert fake_v2.SANDBOX_API_KEY not in caplog.text and WRONG_KEY not in caplog.text


def v2_client(url: str, key: str = fake_v2.SANDBOX_API_KEY, **kwargs: object) -> SolarEdgeV2Client:
    kwargs.setdefault("calls_per_minute", 1000)
    return SolarEdgeV2Client(SecretStr(key), OFFICE, base_url=f"{url}/v2", timeout_s=5.0, **kwargs)  # type: ignore[arg-type]


def test_v2_exchanges_carry_endpoint_status_body_and_are_drained(v2: tuple[fake_v2.FakeState, str]) -> None:
    state, url = v2
    client = v2_client(url, account_key=SecretStr(fake_v2.SANDBOX_ACCOUNT_KEY))
    before = datetime.now(UTC)
    client.test_connection(datetime.now(UTC))
    recorded = client.exchanges()
    assert len(recorded) == state.calls_total == 2
    details, power = recorded
    assert details.endpoint == f"sites/{OFFICE}" and details.http_status == 200
    assert json.loads(details.body)["name"] == "Sandbox Office"
    assert power.endpoint.startswith(f"sites/{OFFICE}/power?from=") and "resolution=QUARTER_HOUR" in power.endpoint
    assert power.http_status == 200 and json.loads(power.body)
    for exchange in recorded:
        assert exchange.fetched_at.tzinfo is not None and before <= exchange.fetched_at <= datetime.now(UTC)
        assert exchange.duration_ms >= 0
    text = all_text(recorded)
    assert fake_v2.SANDBOX_API_KEY not in text and fake_v2.SANDBOX_ACCOUNT_KEY not in text
    assert client.exchanges() == []  # drained


def test_v2_rejected_key_is_recorded_with_its_status(v2: tuple[fake_v2.FakeState, str]) -> None:
    _, url = v2
    client = v2_client(url, key=WRONG_KEY)
    with pytest.raises(AuthError):
        client.test_connection(datetime.now(UTC))
    (exchange,) = client.exchanges()
    assert exchange.http_status == 401 and "Invalid API key" in exchange.body
    assert WRONG_KEY not in all_text([exchange])


def test_a_timeout_is_recorded_without_status_or_body(v2: tuple[fake_v2.FakeState, str]) -> None:
    state, url = v2
    state.failures.timeout_s = 1.0
    state.failures.fail_next("timeout")
    client = SolarEdgeV2Client(SecretStr(fake_v2.SANDBOX_API_KEY), OFFICE, base_url=f"{url}/v2", timeout_s=0.2)
    with pytest.raises(ProviderConnectionError):
        client.test_connection(datetime.now(UTC))
    (exchange,) = client.exchanges()
    assert (exchange.endpoint, exchange.http_status, exchange.body) == (f"sites/{OFFICE}", None, "")
    assert exchange.duration_ms >= 150


def test_v1_endpoints_show_the_api_key_redacted() -> None:
    state = fake_v1.sandbox_state()
    with serve(fake_v1.create_app(state)) as url:
        client = SolarEdgeV1Client(SecretStr(fake_v1.SANDBOX_API_KEY), fake_v1.SANDBOX_SITE_ID, base_url=url)
        client.test_connection(datetime.now(UTC))
        ok = client.exchanges()
        bad = SolarEdgeV1Client(SecretStr(fake_v1.BAD_API_KEY), fake_v1.SANDBOX_SITE_ID, base_url=url)
        with pytest.raises(AuthError):
            bad.test_connection(datetime.now(UTC))
        refused = bad.exchanges()
    site = fake_v1.SANDBOX_SITE_ID
    assert [e.endpoint for e in ok] == [f"site/{site}/details?api_key=***", f"site/{site}/overview?api_key=***"]
    assert [e.http_status for e in ok] == [200, 200] and "Brussels office" in ok[0].body
    assert len(refused) == 1 and refused[0].http_status == 401
    text = all_text(ok + refused)
    assert fake_v1.SANDBOX_API_KEY not in text and fake_v1.BAD_API_KEY not in text
    assert sum(state.calls_served.values()) == 3


@pytest.fixture
def enphase() -> Iterator[tuple[fake_enphase.FakeState, str]]:
    state = fake_enphase.FakeState()
    state.set_plan("Kilowatt")
    with serve(fake_enphase.create_app(state)) as url:
        yield state, url


def enphase_client(url: str, state: fake_enphase.FakeState, store: InMemoryTokenStore) -> EnphaseClient:
    return EnphaseClient(
        client_id=state.client_id,
        client_secret=SecretStr(state.client_secret),
        api_key=SecretStr(state.api_key),
        system_id=str(fake_enphase.SANDBOX_SYSTEM_ID),
        token_store=store,
        base_url=f"{url}/api/v4",
        auth_url=f"{url}/oauth",
        timeout_s=5.0,
        plan="kilowatt",
        calls_per_month=30,
    )


def test_enphase_token_calls_are_never_recorded(enphase: tuple[fake_enphase.FakeState, str]) -> None:
    """An expired access token is refreshed before the first call, and a token the fake then forgets is renewed
    after a 401: both token answers carry fresh tokens, and none of them may land in an exchange."""
    state, url = enphase
    now = datetime.now(UTC)
    tokens = fake_enphase.seeded_tokens(url, state)
    store = InMemoryTokenStore(dataclasses.replace(tokens, access_expires_at=now - timedelta(minutes=1)))
    client = enphase_client(url, state, store)
    client.test_connection(now)
    state.access_tokens.clear()  # the next API call is refused with 401, then renewed and repeated
    client.current_power(now)
    recorded = client.exchanges()
    assert state.token_calls == 3  # the seeding code exchange, the refresh before expiry, the renewal after 401
    system = fake_enphase.SANDBOX_SYSTEM_ID
    assert [(e.endpoint, e.http_status) for e in recorded] == [
        (f"systems/{system}?key=***", 200),
        (f"systems/{system}/summary?key=***", 200),
        (f"systems/{system}/summary?key=***", 401),
        (f"systems/{system}/summary?key=***", 200),
    ]
    text = all_text(recorded)
    assert state.issued and not [secret for secret in state.issued if secret in text]  # codes and tokens
    assert state.client_secret not in text and state.api_key not in text
    assert "access_token" not in text and "refresh_token" not in text


def test_quota_snapshot_counts_the_tightest_day_or_month_rule(enphase: tuple[fake_enphase.FakeState, str]) -> None:
    state, url = enphase
    now = datetime.now(UTC)
    client = enphase_client(url, state, InMemoryTokenStore(fake_enphase.seeded_tokens(url, state)))
    assert client.quota_snapshot(now) == (0, 30)
    client.test_connection(now)  # system + summary
    client.current_power(now)  # summary
    assert client.quota_snapshot(now) == (3, 27)  # the token call is not counted: plans count /api/v4 hits

    v1_state = fake_v1.sandbox_state()
    with serve(fake_v1.create_app(v1_state)) as v1_url:
        ledger = QuotaLedger()
        v1 = SolarEdgeV1Client(
            SecretStr(fake_v1.SANDBOX_API_KEY),
            fake_v1.SANDBOX_SITE_ID,
            base_url=v1_url,
            ledger=ledger,
            daily_site_limit=10,
            daily_account_limit=300,
        )
        v1.test_connection(now)
        assert v1.quota_snapshot(now) == (2, 8)  # the site's 10 a day is tighter than the key's 300
        assert v1.quota_snapshot(now + timedelta(days=1)) == (0, 10)  # a new day

    with serve(fake_v2.create_app(fake_v2.FakeState(per_minute_limit=1000))) as v2_url:
        v2c = v2_client(v2_url, credits_per_month=50)
        v2c.test_connection(now)
        assert v2c.quota_snapshot(now) == (2, 48)  # the per-minute rule is not a day/month budget


class _Echo(httpx.BaseTransport):
    """Answers every request with `size` bytes of body that echo the credentials the request carried."""

    def __init__(self, size: int = 10) -> None:
        self.size = size

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        echo = f"{request.headers.get('x-api-key')} {request.headers.get('authorization')} {request.url.query!r}"
        return httpx.Response(200, text=echo + "é" * self.size)


def test_the_funnel_keeps_a_bounded_list_of_bounded_bodies_with_credentials_blanked() -> None:
    funnel = HttpFunnel(
        "https://vendor.example/api/",
        vendor="V",
        client=httpx.Client(transport=_Echo()),
        headers={"X-API-Key": "k1-secret"},
    )
    for n in range(MAX_EXCHANGES + 5):
        funnel.request(
            "GET", f"things/{n}", params={"key": "k2-secret", "page": n}, headers={"Authorization": "Bearer t0k3n-x"}
        )
    recorded = funnel.drain()
    assert len(recorded) == MAX_EXCHANGES and recorded[0].endpoint == "things/5?key=***&page=5"  # the newest kept
    assert not [s for s in ("k1-secret", "k2-secret", "t0k3n-x") if s in all_text(recorded)]
    funnel.request("GET", "token", record=False)
    assert funnel.drain() == []

    big = HttpFunnel("https://vendor.example", vendor="V", client=httpx.Client(transport=_Echo(MAX_BODY_BYTES)))
    big.request("GET", "big")
    (exchange,) = big.drain()
    assert len(exchange.body.encode()) <= MAX_BODY_BYTES and len(exchange.body.encode()) > MAX_BODY_BYTES - 2
    assert exchange.body.endswith("é")  # cut at a character boundary


# --- api_data_cache ----------------------------------------------------------------------------------------------


def test_write_exchanges_joins_the_callers_transaction(store: Store) -> None:
    at = datetime(2026, 6, 1, 12, tzinfo=UTC)
    rows = [Exchange("sites/1/power?from=x", at, 200, '{"a": 1}', 12.5), Exchange("sites/1", at, None, "", 20_000.0)]
    with pytest.raises(RuntimeError), store.transaction() as con:
        assert write_exchanges(con, 7, rows) == 2
        raise RuntimeError("the caller's write failed")
    with store.transaction() as con:
        assert write_exchanges(con, 7, rows) == 2
        assert write_exchanges(con, None, []) == 0
    with store.connect(read_only=True) as con:
        stored = con.sql("SELECT source_id, endpoint, fetched_at, http_status, body FROM api_data_cache").fetchall()
    assert stored == [(7, "sites/1/power?from=x", at, 200, '{"a": 1}'), (7, "sites/1", at, None, "")]


def test_the_fingerprint_is_keyed_and_reveals_nothing() -> None:
    box, other = SecretBox([generate_key()]), SecretBox([generate_key()])
    text = '{"api_key": "sk-live-0123456789"}'
    assert box.fingerprint(text) == box.fingerprint(text) and len(box.fingerprint(text)) == 64
    assert box.fingerprint(text) != box.fingerprint(text.replace("9", "8"))
    assert box.fingerprint(text) != other.fingerprint(text)
    assert "sk-live" not in box.fingerprint(text)


def test_cached_test_round_trip_and_expiry(store: Store, box: SecretBox) -> None:
    at = datetime(2026, 6, 1, 12, tzinfo=UTC)
    outcome = Outcome(ConnectionStatus.FAILED, "SolarEdge rejected the API key (401)", at)
    store_test(store, 3, "fp-1", outcome, [Exchange("sites/9", at, 401, "{}", 5.0)])
    assert cached_test(store, 3, "fp-1", at + timedelta(seconds=59), 60) == outcome
    assert cached_test(store, 3, "fp-2", at + timedelta(seconds=10), 60) is None  # other settings
    assert cached_test(store, 4, "fp-1", at + timedelta(seconds=10), 60) is None  # other source
    assert cached_test(store, 3, "fp-1", at + timedelta(seconds=60), 60) is None  # expired
    assert cached_test(store, 3, "fp-1", at, 0) is None  # disabled


# --- Test Connection reuse ---------------------------------------------------------------------------------------


@pytest.fixture
def site(store: Store) -> cat.Site:
    return cat.create_site(store, SiteIn(name="Plant", latitude=50.85, longitude=4.35, timezone="Europe/Brussels"))


@pytest.fixture
def pv_meter(store: Store, site: cat.Site) -> cat.Meter:
    return cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))


def saved_draft(
    store: Store, box: SecretBox, site: cat.Site, meter: cat.Meter, **values: object
) -> connections.SourceDraft:
    """A saved source as the page shows it again (stored credentials masked); hourly fits every vendor budget."""
    draft = new_draft("new-a", meter.id, meter.category)
    draft.values |= {"name": "Roof", "capacity_kw": "5", "use_api": True, "update_frequency": "1hour"} | values
    draft.secrets = {
        "api_key": fake_v2.SANDBOX_API_KEY,
        "client_secret": "sandbox-enphase-client-secret",
        "app_api_key": fake_enphase.SANDBOX_API_KEY,
    }
    save_connections(store, box, site.id, [draft], set())
    (source,) = cat.load_catalog(store).sources
    return draft_from_source(source)


def cache_rows(store: Store) -> list[tuple[object, ...]]:
    with store.connect(read_only=True) as con:
        return con.sql("SELECT * FROM api_data_cache ORDER BY fetched_at").fetchall()


@pytest.fixture
def v2_context() -> Iterator[tuple[fake_v2.FakeState, ProviderContext]]:
    state = fake_v2.FakeState(per_minute_limit=1000, monthly_credits=100_000)
    with serve(fake_v2.create_app(state)) as url:
        yield state, ProviderContext(Settings(solaredge_base_url=f"{url}/v2"), QuotaLedger())


def test_a_repeat_click_within_the_ttl_calls_nobody(
    store: Store,
    box: SecretBox,
    site: cat.Site,
    pv_meter: cat.Meter,
    v2_context: tuple[fake_v2.FakeState, ProviderContext],
) -> None:
    state, context = v2_context
    draft = saved_draft(store, box, site, pv_meter, api_provider="solaredge", system_id=HOME)
    now = datetime.now(UTC)
    first = connections.test_connection(store, box, site.id, draft, now, context)
    assert first.status is ConnectionStatus.CONNECTED, first.message
    assert state.calls_total == 2

    again = connections.test_connection(store, box, site.id, draft, now + timedelta(seconds=59), context)
    assert state.calls_total == 2  # no call reached the vendor
    local = now.astimezone(ZoneInfo("Europe/Brussels"))
    assert again.message == f"{first.message} (cached result from {local:%H:%M:%S}{SUFFIX}"
    assert (again.status, again.tested_at, again.power_w) == (first.status, first.tested_at, first.power_w)

    later = connections.test_connection(store, box, site.id, draft, now + timedelta(seconds=61), context)
    assert state.calls_total == 4 and not later.message.endswith(SUFFIX)  # the TTL ran out

    rows = cache_rows(store)
    raw = [r for r in rows if r[1] != TEST_ENDPOINT]  # both real tests' exchanges, none for the reuse
    assert [str(r[1]).split("?")[0] for r in raw] == [f"sites/{HOME}", f"sites/{HOME}/power"] * 2
    assert {(r[0], r[3]) for r in raw} == {(draft.source_id, 200)}
    tests = [json.loads(str(r[4])) for r in rows if r[1] == TEST_ENDPOINT]
    assert [t["status"] for t in tests] == ["connected", "connected"] and len(tests[0]["fingerprint"]) == 64


@pytest.mark.parametrize(
    ("category", "source_type", "endpoints"),
    [
        (Category.PROD, "solar", ["details", "power"]),
        (Category.CONS, "load", ["details", "power", "power", "meters/telemetry"]),
        (Category.STOR, "battery", ["details", "power", "power", "storage/telemetry"]),
    ],
)
def test_a_test_asks_only_for_the_endpoints_of_the_sources_channel(
    store: Store,
    box: SecretBox,
    site: cat.Site,
    v2_context: tuple[fake_v2.FakeState, ProviderContext],
    category: Category,
    source_type: str,
    endpoints: list[str],
) -> None:
    """The office site has a meter and a battery: a test reads the site's details and PV power, plus the one
    telemetry endpoint the source's channel needs (what the collector asks for), never the other one."""
    state, context = v2_context
    meter = cat.create_meter(store, site.id, MeterIn(name="Meter", category=category))
    draft = saved_draft(store, box, site, meter, api_provider="solaredge", system_id=OFFICE, source_type=source_type)
    outcome = connections.test_connection(store, box, site.id, draft, datetime.now(UTC), context)
    assert outcome.status is ConnectionStatus.CONNECTED, outcome.message
    assert state.calls_total == len(endpoints)  # counted at the fake
    called = [str(r[1]).split("?")[0] for r in cache_rows(store) if r[1] != TEST_ENDPOINT]
    site_path = f"sites/{OFFICE}"
    assert called == [site_path if e == "details" else f"{site_path}/{e}" for e in endpoints]


def test_another_channel_is_another_test(
    store: Store, box: SecretBox, site: cat.Site, v2_context: tuple[fake_v2.FakeState, ProviderContext]
) -> None:
    """The cached result names the channel it read: switching the source type is a new test, not a reuse."""
    state, context = v2_context
    meter = cat.create_meter(store, site.id, MeterIn(name="Building", category=Category.CONS))
    draft = saved_draft(store, box, site, meter, api_provider="solaredge", system_id=OFFICE, source_type="load")
    now = datetime.now(UTC)
    connections.test_connection(store, box, site.id, draft, now, context)
    assert state.calls_total == 4
    draft.values["source_type"] = "grid"  # grid import: the same endpoints, another reading
    switched = connections.test_connection(store, box, site.id, draft, now + timedelta(seconds=1), context)
    assert not switched.message.endswith(SUFFIX) and state.calls_total == 8
    draft.values["source_type"] = "load"
    back = connections.test_connection(store, box, site.id, draft, now + timedelta(seconds=2), context)
    assert back.message.endswith(SUFFIX) and state.calls_total == 8


def test_changed_credentials_or_site_id_call_again_and_failures_are_reused(
    store: Store,
    box: SecretBox,
    site: cat.Site,
    pv_meter: cat.Meter,
    v2_context: tuple[fake_v2.FakeState, ProviderContext],
) -> None:
    state, context = v2_context
    draft = saved_draft(store, box, site, pv_meter, api_provider="solaredge", system_id=HOME)
    now = datetime.now(UTC)
    connections.test_connection(store, box, site.id, draft, now, context)
    assert state.calls_total == 2

    draft.secrets = {"api_key": WRONG_KEY}  # typed over the stored key: a real call, refused
    rejected = connections.test_connection(store, box, site.id, draft, now + timedelta(seconds=1), context)
    assert rejected.status is ConnectionStatus.FAILED and state.calls_total == 3
    still = connections.test_connection(store, box, site.id, draft, now + timedelta(seconds=2), context)
    assert still.status is ConnectionStatus.FAILED and still.message.endswith(SUFFIX) and state.calls_total == 3

    draft.secrets = {"api_key": connections.MASKED}  # back to the stored key: its earlier result is still fresh
    back = connections.test_connection(store, box, site.id, draft, now + timedelta(seconds=3), context)
    assert back.status is ConnectionStatus.CONNECTED and back.message.endswith(SUFFIX) and state.calls_total == 3

    draft.values["system_id"] = OFFICE  # another site: a real call
    moved = connections.test_connection(store, box, site.id, draft, now + timedelta(seconds=4), context)
    assert moved.status is ConnectionStatus.CONNECTED and not moved.message.endswith(SUFFIX)
    assert state.calls_total == 5

    for row in cache_rows(store):  # nothing secret in any cached row
        assert fake_v2.SANDBOX_API_KEY not in repr(row) and WRONG_KEY not in repr(row)


def test_ttl_zero_disables_reuse_and_unsaved_drafts_are_never_reused(
    store: Store,
    box: SecretBox,
    site: cat.Site,
    pv_meter: cat.Meter,
    v2_context: tuple[fake_v2.FakeState, ProviderContext],
) -> None:
    state, context = v2_context
    off = dataclasses.replace(
        context, settings=Settings(solaredge_base_url=context.settings.solaredge_base_url, test_cache_ttl_s=0)
    )
    draft = saved_draft(store, box, site, pv_meter, api_provider="solaredge", system_id=HOME)
    now = datetime.now(UTC)
    for seconds in (0, 1):
        outcome = connections.test_connection(store, box, site.id, draft, now + timedelta(seconds=seconds), off)
        assert outcome.status is ConnectionStatus.CONNECTED and not outcome.message.endswith(SUFFIX)
    assert state.calls_total == 4

    unsaved = new_draft("new-b", pv_meter.id, pv_meter.category)
    unsaved.values |= {
        "name": "Other",
        "capacity_kw": "5",
        "use_api": True,
        "api_provider": "solaredge",
        "system_id": HOME,
    }
    unsaved.secrets = {"api_key": fake_v2.SANDBOX_API_KEY}
    for seconds in (0, 1):
        connections.test_connection(store, box, site.id, unsaved, now + timedelta(seconds=seconds), context)
    assert state.calls_total == 8
    unsaved_rows = [r for r in cache_rows(store) if r[0] is None]
    assert len(unsaved_rows) == 4 and all(r[1] != TEST_ENDPOINT for r in unsaved_rows)  # raw answers, no reuse


def test_enphase_reauthorize_is_not_reused_and_no_token_is_cached(
    store: Store, box: SecretBox, site: cat.Site, pv_meter: cat.Meter, enphase: tuple[fake_enphase.FakeState, str]
) -> None:
    state, url = enphase
    settings = Settings(enphase_base_url=f"{url}/api/v4", enphase_auth_url=f"{url}/oauth", enphase_plan="kilowatt")
    context = ProviderContext(settings, QuotaLedger(), lambda source_id: StoredTokens(store, box, source_id))
    draft = saved_draft(
        store,
        box,
        site,
        pv_meter,
        api_provider="enphase",
        system_id=str(fake_enphase.SANDBOX_SYSTEM_ID),
        client_id=state.client_id,
    )
    assert draft.source_id is not None
    now = datetime.now(UTC)
    for seconds in (0, 1):  # not authorised yet: "re-authorise", every time, never from the cache
        outcome = connections.test_connection(store, box, site.id, draft, now + timedelta(seconds=seconds), context)
        assert outcome.status is ConnectionStatus.REAUTHORIZE and not outcome.message.endswith(SUFFIX)
    assert cache_rows(store) == []

    tokens = fake_enphase.seeded_tokens(url, state)  # the owner approves; the access token is already stale
    StoredTokens(store, box, draft.source_id).save(dataclasses.replace(tokens, access_expires_at=now))
    first = connections.test_connection(store, box, site.id, draft, now + timedelta(seconds=2), context)
    assert first.status is ConnectionStatus.CONNECTED, first.message
    assert state.token_calls == 2 and sum(state.calls.values()) == 2  # refreshed, then system + summary
    rows = cache_rows(store)
    assert [r[1] for r in rows if r[1] != TEST_ENDPOINT] == [
        f"systems/{fake_enphase.SANDBOX_SYSTEM_ID}?key=***",
        f"systems/{fake_enphase.SANDBOX_SYSTEM_ID}/summary?key=***",
    ]
    text = repr(rows)
    assert not [secret for secret in state.issued if secret in text]  # codes, tokens
    assert state.client_secret not in text and state.api_key not in text
