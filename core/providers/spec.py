"""What the rest of the program knows about a provider, declared once per provider beside its client.

Each provider package has a `spec.py` whose `SPEC` says everything the pages, the config file, the quota planner,
API Health and the collector need: its label, the ids and credentials a source gives, how its vendor account is
named (the one fingerprint the quota ledger, the planner and API Health share), its budgets and what a poll costs,
its base-URL settings, how late its data arrives and how to build its client. `core.providers.registry` lists the
specs; outside the provider packages, only features one vendor alone has (Enphase's authorisation flow, Import
Sites' account listings) name a provider. docs/architecture.md ("The provider model") says how to add one.

Specs are light on purpose: they import no HTTP client, parser or pvlib, so the planner and the pages that only
read them start fast; `build_client` imports its client when called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Literal

from pydantic import SecretStr

from core.models import ApiSettings, Provider, Site
from core.providers.base import AuthError, MonitoringProvider, QuotaRule
from core.providers.context import ProviderContext
from core.providers.quota import account_scope


@dataclass(frozen=True)
class ConnectionRequest:
    """Everything a client needs to reach one provider site."""

    provider: Provider
    site: Site
    pv_capacity_kw: float
    system_id: str = ""
    client_id: str = ""
    secrets: dict[str, SecretStr] = field(default_factory=dict)
    source_id: int | None = None
    # The channels the caller's sources read (core.roles.channel_for); None reads everything. Clients whose cost
    # depends on it (SolarEdge V2 telemetry, Enphase endpoints) skip calls nobody reads.
    channels: frozenset[str] | None = None
    # Local dates the simulator shows as an inverter trip (PV 0 all day): the demo's recorded fault (core.catalog.demo).
    # Real vendors report their own faults; only the simulator reads this.
    outage_days: frozenset[date] = frozenset()


@dataclass(frozen=True)
class Credential:
    """A secret a source gives: its stored name (`source_secrets.name`) and the label of its field."""

    name: str
    label: str
    required: bool = True  # False: a source may leave it empty (an MQTT broker that takes anonymous clients)


def _no_budget(plan: str) -> tuple[QuotaRule, ...]:
    return ()


def _no_calls(channels: frozenset[str]) -> int:
    return 0


def _no_problems(api: ApiSettings) -> dict[str, str]:
    return {}


# How a provider's readings arrive (docs/real-time.md): the collector polls the vendor's interval history, the
# sender pushes them to the ingest service, or the collector subscribes to a broker the device publishes on. Only
# polled providers have a client and take part in collection passes.
Delivery = Literal["poll", "push", "subscribe"]


@dataclass(frozen=True)
class ProviderSpec:
    """One provider as the program sees it. Fields without a default are what every provider must say."""

    provider: Provider
    label: str  # in lists and messages: "SolarEdge", "Enphase"
    # The client of a polled provider; None for one whose readings are brought to us (`delivery`).
    build_client: Callable[[ConnectionRequest, ProviderContext], MonitoringProvider] | None
    delivery: Delivery = "poll"
    # The vendor's id of a site ("Site ID", "System ID"); None: the provider models our own site (the simulator),
    # so sources of one of our sites share one vendor site.
    system_id_label: str | None = None
    client_id_label: str | None = None  # an OAuth application's public id, when the provider has one
    credentials: tuple[Credential, ...] = ()
    # Secrets the provider obtains itself (OAuth tokens): never typed, kept encrypted and shared like the others.
    obtained_secrets: tuple[str, ...] = ()
    # The credential that names the vendor account whose budgets a call spends (None: no account, no budget).
    account_credential: str | None = None
    account_noun: str = "API key"  # "this API key" / "this application" in the planner's messages
    budget_remedy: str = "another API key"  # what gives more budget, in the planner's messages
    budget_unit: str = "calls"  # what the vendor calls a unit of its monthly budget ("credits" for SolarEdge V2)
    vendor: str | None = None  # the name its client counts calls under (`quota_usage.provider`)
    base_url_settings: tuple[str, ...] = ()  # `core.config.Settings` fields that point its client elsewhere
    data_delay: timedelta = timedelta(0)  # how long after an interval ends the vendor serves it
    # The day and month budgets for the configured plan (minute and concurrency limits are paced, not planned).
    budgets: Callable[[str], tuple[QuotaRule, ...]] = _no_budget
    # Vendor calls of one request window of a poll, for the channels its sources read.
    calls_per_window: Callable[[frozenset[str]], int] = _no_calls
    # The longest window one request asks for (None: one request covers any poll), and how far the client's grid
    # can lengthen a window.
    max_window: timedelta | None = None
    window_alignment: timedelta = timedelta(0)
    plan_label: Callable[[str], str] | None = None  # its name with the configured plan, in quota figures
    setup_note: str | None = None  # shown where a provider's fields would be, for one that needs none
    # Its own settings in `ApiSettings` (MQTT's broker and topic) checked in a user's terms: {field: message}.
    check_settings: Callable[[ApiSettings], dict[str, str]] = _no_problems

    @property
    def polled(self) -> bool:
        """Whether the collector polls it (it has a client)."""
        return self.delivery == "poll"

    @property
    def metered(self) -> bool:
        """Whether its calls count against vendor budgets (the simulator's do not)."""
        return self.vendor is not None

    @property
    def needs_system_id(self) -> bool:
        return self.system_id_label is not None

    @property
    def shares_by_application(self) -> bool:
        """Whether its credentials belong to an application named by a Client ID, so stored credentials serve only
        sources of the same Client ID."""
        return self.client_id_label is not None

    def budget_label(self, plan: str) -> str:
        """Its name in quota figures: "SolarEdge (V2)", "Enphase (Watt plan)"."""
        return self.plan_label(plan) if self.plan_label is not None else self.label

    def account_of(self, secrets: Mapping[str, SecretStr | str]) -> str | None:
        """The fingerprint of the vendor account these credentials belong to (`account_scope` of the account
        credential); None without one. The quota ledger, the planner and API Health all name accounts by it."""
        if self.account_credential is None:
            return None
        value = secrets.get(self.account_credential)
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return account_scope(text) if text and text.strip() else None


def required_secret(request: ConnectionRequest, name: str, label: str) -> SecretStr:
    """A credential a client cannot work without, or the message that says where to enter it."""
    value = request.secrets.get(name)
    if value is None or not value.get_secret_value():
        raise AuthError(f"{label} is missing: enter it in Data Connections.")
    return value
