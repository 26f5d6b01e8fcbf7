"""The quota planner: hand-computed figures, then proof that its calls per poll are what the real clients make.

Figures: a day holds 1,440 / minutes polls (288, 96, 48, 24) and a month 31 days, so SolarEdge V2 PV-only
hourly is 24 x 31 = 744 calls of 2,000 credits, every 15 minutes 96 x 31 = 2,976.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from core.catalog.quota_plan import (
    PlannedSource,
    ScopeCheck,
    budget_rules,
    by_member,
    calls_per_poll,
    check,
    refusals,
)
from core.config import Settings
from core.models import Provider, Site, UpdateFrequency
from core.providers.base import CHANNELS
from core.providers.context import ProviderContext
from core.providers.enphase.oauth import Tokens
from core.providers.quota import QuotaLedger, account_scope
from core.providers.registry import build_client
from core.providers.spec import ConnectionRequest
from tests.fakes import enphase, solaredge_v1, solaredge_v2
from tests.fakes.server import serve
from tests.providers.token_stores import InMemoryTokenStore

SE, V1, ENPHASE = Provider.SOLAREDGE, Provider.SOLAREDGE_V1, Provider.ENPHASE
MIN5, MIN15, MIN30, HOUR = UpdateFrequency.MIN5, UpdateFrequency.MIN15, UpdateFrequency.MIN30, UpdateFrequency.HOUR1
KEY_A, KEY_B = account_scope("key-a"), account_scope("key-b")


def source(
    key: str,
    provider: Provider = SE,
    site: str = "100",
    frequency: UpdateFrequency = HOUR,
    channel: str = "pv_w",
    account: str = KEY_A,
    editable: bool = True,
) -> PlannedSource:
    return PlannedSource(key, provider, site, account, channel, frequency, editable)


def only(checks: list[ScopeCheck], scope: str = "account") -> ScopeCheck:
    (found,) = [c for c in checks if c.scope == scope]
    return found


# --- counting --------------------------------------------------------------------------------------------------


def test_calls_per_poll_follow_the_channels_read() -> None:
    assert calls_per_poll(SE, {"pv_w"}) == 1  # power
    assert calls_per_poll(SE, {"pv_w", "load_w"}) == 2  # + meters
    assert calls_per_poll(SE, {"grid_import_w", "grid_export_w", "load_w"}) == 2  # power + meters, once
    assert calls_per_poll(SE, {"battery_w"}) == 2  # power + storage
    assert calls_per_poll(SE, CHANNELS) == 3
    assert calls_per_poll(V1, {"pv_w"}) == calls_per_poll(V1, CHANNELS) == 1  # energyDetails carries every meter
    assert calls_per_poll(ENPHASE, {"pv_w"}) == 1  # production_micro
    assert calls_per_poll(ENPHASE, {"pv_w", "load_w"}) == 2  # + consumption_meter
    assert calls_per_poll(ENPHASE, {"battery_w", "soc_pct"}) == 1  # battery, once
    assert calls_per_poll(ENPHASE, {"grid_import_w"}) == 1  # energy_import_telemetry
    assert calls_per_poll(ENPHASE, {"grid_import_w", "grid_export_w"}) == 2  # + energy_export_telemetry
    assert calls_per_poll(Provider.SIMULATOR, CHANNELS) == 0


def test_fingerprints_name_equal_credentials_alike_and_hide_them() -> None:
    assert account_scope(" key-a ") == KEY_A != KEY_B
    assert "key-a" not in KEY_A and len(KEY_A) == 16


# --- SolarEdge V2: 2,000 credits a month per API key -----------------------------------------------------------


def test_v2_pv_only_hourly_fits_with_744_a_month() -> None:
    scope = only(check([source("a")]))
    assert (scope.calls_per_day, scope.calls_per_month, scope.budget_per_month) == (24, 744, 2_000)
    assert scope.fits and scope.percent == 37
    assert scope.summary() == "SolarEdge (V2) account: 24 calls/day, 744/month of 2,000 (37%)"
    assert scope.fastest_fit is MIN30  # 48 x 31 = 1,488


def test_v2_every_15_minutes_is_refused_and_30_minutes_suggested() -> None:
    checks = check([source("a", frequency=MIN15)])
    scope = only(checks)
    assert (scope.calls_per_day, scope.calls_per_month) == (96, 2_976)
    assert not scope.fits and scope.fastest_fit is MIN30
    message = (
        "SolarEdge (V2) allows 2,000 calls a month for this API key; every 15 min needs 2,976; "
        "every 30 min fits: 1,488 calls/month of 2,000."
    )
    assert scope.message() == message
    assert refusals(checks) == {"a": message}


def test_v2_meter_and_battery_cost_three_calls_a_poll() -> None:
    sources = [source("pv"), source("load", channel="load_w"), source("bat", channel="battery_w")]
    scope = only(check(sources))
    assert (scope.calls_per_day, scope.calls_per_month, scope.vendor_sites) == (72, 2_232, 1)
    assert not scope.fits and scope.fastest_fit is UpdateFrequency.HOUR2  # 12 polls x 3 calls x 31 days
    assert "every 1 hour needs 2,232; every 2 h fits: 1,116 calls/month of 2,000." in scope.message()


def test_two_v2_sites_on_one_key_add_up() -> None:
    hourly = [source("a", site="100"), source("b", site="200")]
    scope = only(check(hourly))
    assert (scope.calls_per_month, scope.vendor_sites, scope.fits) == (1_488, 2, True)
    assert scope.summary() == "SolarEdge (V2) account (2 sites): 48 calls/day, 1,488/month of 2,000 (74%)"
    faster = only(check([source("a", site="100", frequency=MIN30), source("b", site="200", frequency=MIN30)]))
    assert (faster.calls_per_month, faster.fits, faster.fastest_fit) == (2_976, False, HOUR)
    assert "shared by 2 sites; every 30 min needs 2,976; every 1 hour fits: 1,488 calls/month of 2,000." in (
        faster.message()
    )
    apart = check([source("a", site="100", frequency=MIN30), source("b", site="200", frequency=MIN30, account=KEY_B)])
    assert [(c.calls_per_month, c.fits) for c in apart] == [(1_488, True), (1_488, True)]


def test_sources_sharing_a_vendor_site_are_polled_once_at_the_fastest_frequency() -> None:
    sources = [source("pv", frequency=HOUR), source("pv-copy", frequency=MIN30), source("bat", channel="soc_pct")]
    scope = only(check(sources))
    assert scope.vendor_sites == 1 and scope.frequencies == (MIN30,)
    assert (scope.calls_per_day, scope.calls_per_month) == (2 * 48, 2_976)  # power + storage, 48 polls
    assert by_member(check(sources)).keys() == {"pv", "pv-copy", "bat"}


def test_other_sites_sources_are_fixed_and_named_when_nothing_fits() -> None:
    sources = [
        source("s1", site="100", frequency=MIN30, editable=False),  # 1,488 a month already
        source("new", site="200", frequency=MIN15),
    ]
    checks = check(sources)
    scope = only(checks)
    assert (scope.calls_per_month, scope.fastest_fit) == (1_488 + 2_976, UpdateFrequency.HOUR2)  # 1,488 + 372
    assert scope.message() == (
        "SolarEdge (V2) allows 2,000 calls a month for this API key, shared by 2 sites; this schedule needs 4,464; "
        "every 2 h fits: 1,860 calls/month of 2,000."
    )
    busier = [source("s1", site="100", frequency=MIN15, editable=False), source("new", site="200", frequency=MIN15)]
    scope = only(check(busier))  # 2,976 a month already: nothing the new source does can fit
    assert (scope.at_slowest, scope.fastest_fit) == ((96 + 3, 3_069), None)  # daily: 3 windows of 12 h
    assert scope.message() == (
        "SolarEdge (V2) allows 2,000 calls a month for this API key, shared by 2 sites; every 15 min needs 5,952. "
        "Even 24 h (daily) needs 3,069 calls a month against 2,000 credits, 2,976 of them for sources of other "
        "sites: read fewer channels, use another API key, or disable a source."
    )
    assert list(refusals(checks)) == ["new"]  # only what the user is editing is refused


# --- SolarEdge V1: 300 a day per site and per API key ----------------------------------------------------------


def test_v1_every_5_minutes_fits_300_a_day_per_site_and_key() -> None:
    checks = check([source("a", V1, frequency=MIN5, channel="battery_w")])
    site, account = only(checks, "site"), only(checks, "account")
    assert (site.calls_per_day, site.budget_per_day, site.fits) == (288, 300, True)
    assert site.summary() == "SolarEdge V1 site 100: 288 calls/day of 300 (96%)"
    assert (account.calls_per_day, account.fits) == (288, True)


def test_two_v1_sites_on_one_key_break_the_account_budget_not_the_sites() -> None:
    checks = check([source("a", V1, site="1", frequency=MIN5), source("b", V1, site="2", frequency=MIN5)])
    assert all(c.fits for c in checks if c.scope == "site")
    account = only(checks)
    assert (account.calls_per_day, account.fits, account.fastest_fit) == (576, False, MIN15)  # 2 x 96 = 192
    assert account.message() == (
        "SolarEdge V1 allows 300 calls a day for this API key, shared by 2 sites; every 5 min needs 576; "
        "every 15 min fits: 192 calls/day of 300."
    )
    assert set(refusals(checks)) == {"a", "b"}


# --- Enphase: per application and month, by plan ---------------------------------------------------------------


def test_enphase_watt_hourly_fits_with_one_endpoint_not_two() -> None:
    one = only(check([source("pv", ENPHASE)]))
    assert (one.calls_per_month, one.budget_per_month, one.fits) == (744, 1_000, True)
    assert one.summary() == "Enphase (Watt plan) account: 24 calls/day, 744/month of 1,000 (74%)"
    two = only(check([source("pv", ENPHASE), source("load", ENPHASE, channel="load_w")]))
    assert (two.calls_per_month, two.fits, two.fastest_fit) == (1_488, False, UpdateFrequency.HOUR2)
    assert two.message() == (
        "Enphase (Watt plan) allows 1,000 calls a month for this application; every 1 hour needs 1,488; "
        "every 2 h fits: 744 calls/month of 1,000."
    )
    kilowatt = only(check([source("pv", ENPHASE), source("load", ENPHASE, channel="load_w")], enphase_plan="kilowatt"))
    assert (kilowatt.budget_per_month, kilowatt.fits, kilowatt.fastest_fit) == (50_000, True, MIN5)


def test_simulator_sources_have_no_budget() -> None:
    assert check([source("sim", Provider.SIMULATOR, frequency=MIN5)]) == []


def test_budgets_are_the_clients_own_day_and_month_rules() -> None:
    site = Site(id=1, name="Plant", latitude=50.85, longitude=4.35, timezone="Europe/Brussels")
    for plan in ("watt", "kilowatt", "megawatt"):
        context = ProviderContext(Settings(enphase_plan=plan), QuotaLedger(), lambda _: InMemoryTokenStore(TOKENS))
        for provider, secrets in (
            (SE, {"api_key": SecretStr("k")}),
            (V1, {"api_key": SecretStr("k")}),
            (ENPHASE, {"client_secret": SecretStr("s"), "app_api_key": SecretStr("k")}),
        ):
            request = ConnectionRequest(provider, site, 5.0, "123", "cid", secrets, source_id=1)
            client = build_client(request, context)
            declared = tuple(r for r in client.quota_rules if r.period in ("day", "month"))
            client.close()
            assert declared == budget_rules(provider, plan), (provider, plan)


# --- the model against reality: the real clients, through the registry, against the fake vendors ---------------

TOKENS = Tokens(SecretStr("a"), SecretStr("r"), datetime(2100, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
YESTERDAY_NOON = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
WINDOW = (YESTERDAY_NOON - timedelta(hours=2), YESTERDAY_NOON)  # one steady-state poll: the last two hours


@dataclass(frozen=True)
class Vendors:
    """The three fakes while they run: settings pointing at them, Enphase tokens they issued, and per provider the
    fake's call count, a sandbox vendor site and its place."""

    settings: Settings
    tokens: Tokens
    sites: dict[Provider, tuple[Callable[[], int], str, Site]]

    def context(self) -> ProviderContext:
        """A fresh ledger each time: each case is one poll of its own."""
        return ProviderContext(self.settings, QuotaLedger(), lambda _: InMemoryTokenStore(self.tokens))


@pytest.fixture(scope="module")
def vendors() -> Iterator[Vendors]:
    se_state = solaredge_v2.FakeState(per_minute_limit=10_000, monthly_credits=1_000_000)
    v1_state = solaredge_v1.sandbox_state()
    en_state = enphase.FakeState()
    en_state.set_plan("Megawatt")
    with (
        serve(solaredge_v2.create_app(se_state)) as se_url,
        serve(solaredge_v1.create_app(v1_state)) as v1_url,
        serve(enphase.create_app(en_state)) as en_url,
    ):
        settings = Settings(
            solaredge_base_url=f"{se_url}/v2",
            solaredge_v1_base_url=v1_url,
            enphase_base_url=f"{en_url}/api/v4",
            enphase_auth_url=f"{en_url}/oauth",
            enphase_plan="megawatt",
        )
        chicago = Site(id=1, name="Office", latitude=41.88, longitude=-87.63, timezone="America/Chicago")
        brussels = Site(id=2, name="Brussels", latitude=50.85, longitude=4.35, timezone="Europe/Brussels")
        los_angeles = Site(id=3, name="LA", latitude=34.05, longitude=-118.24, timezone="America/Los_Angeles")
        yield Vendors(
            settings,
            enphase.seeded_tokens(en_url, en_state),
            {
                SE: (lambda: se_state.calls_total, "1234567", chicago),  # meter and battery
                V1: (lambda: sum(v1_state.calls_served.values()), solaredge_v1.SANDBOX_SITE_ID, brussels),
                ENPHASE: (lambda: sum(en_state.calls.values()), str(enphase.SANDBOX_SYSTEM_ID), los_angeles),
            },
        )


SECRETS: dict[Provider, dict[str, str]] = {
    SE: {"api_key": solaredge_v2.SANDBOX_API_KEY},
    V1: {"api_key": solaredge_v1.SANDBOX_API_KEY},
    ENPHASE: {"client_secret": enphase.SANDBOX_CLIENT_SECRET, "app_api_key": enphase.SANDBOX_API_KEY},
}
CASES = [
    (SE, {"pv_w"}),
    (SE, {"pv_w", "load_w"}),
    (SE, {"grid_import_w", "soc_pct"}),
    (SE, {"battery_w"}),
    (SE, None),
    (V1, {"pv_w"}),
    (V1, {"pv_w", "load_w", "battery_w"}),
    (ENPHASE, {"pv_w"}),
    (ENPHASE, {"load_w"}),
    (ENPHASE, {"pv_w", "battery_w", "soc_pct"}),
    (ENPHASE, {"grid_export_w"}),
    (ENPHASE, None),
]


@pytest.mark.parametrize(("provider", "channels"), CASES, ids=lambda v: getattr(v, "value", None) or str(v))
def test_one_poll_costs_what_the_planner_counts(
    vendors: Vendors, provider: Provider, channels: set[str] | None
) -> None:
    served, system_id, site = vendors.sites[provider]
    context = vendors.context()
    wanted = frozenset(channels) if channels is not None else None
    secrets = {name: SecretStr(value) for name, value in SECRETS[provider].items()}
    client_id = enphase.SANDBOX_CLIENT_ID
    request = ConnectionRequest(provider, site, 8.0, system_id, client_id, secrets, source_id=1, channels=wanted)
    client: Any = build_client(request, context)
    assert WINDOW[1] - WINDOW[0] < client.max_window  # one window, as in the collector's steady state
    before = served()
    try:
        frame = client.history(*WINDOW)
    finally:
        client.close()
    assert served() - before == calls_per_poll(provider, wanted if wanted is not None else CHANNELS)
    # Nothing the sources read was skipped: every wanted channel an endpoint serves came back.
    available = {  # what each vendor's history carries at all
        SE: set(CHANNELS),
        V1: {"pv_w", "load_w", "grid_import_w", "grid_export_w"},  # energyDetails has no storage meter
        ENPHASE: set(CHANNELS),  # grid import/export from their own telemetry endpoints
    }[provider]
    assert (wanted or set(CHANNELS)) & available <= set(frame["channel"].unique())
