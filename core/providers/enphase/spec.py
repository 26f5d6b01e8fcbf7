"""Enphase Monitoring API v4 as the rest of the program sees it (`core.providers.spec`); the vendor facts behind
the numbers are in docs/enphase-v4.md."""

from __future__ import annotations

from datetime import timedelta

from core.models import Provider
from core.providers.base import MonitoringProvider, NeedsReauthorization, QuotaRule
from core.providers.context import ProviderContext
from core.providers.enphase.endpoints import DEFAULT_ENDPOINTS, ENDPOINT_CHANNELS, ENDPOINTS
from core.providers.enphase.stream_schedule import schedule_problems
from core.providers.spec import ConnectionRequest, Credential, ProviderSpec, required_secret

VENDOR = "Enphase"  # the name its calls are counted under (`quota_usage.provider`) and messages use
# Plan limits per application (calls per minute, calls per month), developer-v4.enphase.com/developer-plans via
# api-evangelist/enphase:plans/enphase-plans.yml (docs/enphase-v4.md); Watt's 1,000/month confirmed by
# DiedB/Homey-SolarPanels #235. Overridable per client because plans change and partner plans differ.
TOKENS_SECRET = "oauth_tokens"  # where a source keeps the grant its owner gave (access and refresh tokens)
PLANS: dict[str, tuple[int, int]] = {"watt": (10, 1_000), "kilowatt": (50, 50_000), "megawatt": (100, 300_000)}


def plan_key(plan: str) -> str:
    """The plan's key as `PLANS` names it; `ValueError` for a plan Enphase does not sell."""
    key = plan.strip().lower()
    if key not in PLANS:
        raise ValueError(f"unknown Enphase plan {plan!r}: use one of {', '.join(PLANS)}")
    return key


def calls_per_window(channels: frozenset[str]) -> int:
    """One call per default endpoint that serves a read channel (`EnphaseClient.history`); token renewals are not
    API hits for Enphase's plans."""
    return sum(1 for name in DEFAULT_ENDPOINTS if ENDPOINT_CHANNELS[name] & channels)


def build_client(request: ConnectionRequest, context: ProviderContext) -> MonitoringProvider:
    from core.providers.enphase.client import EnphaseClient  # heavy: only when a client is needed

    if request.source_id is None or context.token_store_for is None:
        raise NeedsReauthorization(
            "Save this source, then use Authorize with Enphase: the system owner must grant access first."
        )
    token_store = context.token_store_for(request.source_id)
    if token_store.load() is None:
        raise NeedsReauthorization(
            "Not authorised yet: use Authorize with Enphase (or paste the code) so the owner grants access."
        )
    settings = context.settings
    return EnphaseClient(
        client_id=request.client_id,
        client_secret=required_secret(request, "client_secret", "The Enphase client secret"),
        api_key=required_secret(request, "app_api_key", "The Enphase application API key"),
        system_id=request.system_id,
        token_store=token_store,
        base_url=settings.enphase_base_url,
        auth_url=settings.enphase_auth_url,
        timeout_s=settings.http_timeout_s,
        http_pool=context.http_pool,  # the process's shared clients, one per host
        ledger=context.ledger,
        plan=settings.enphase_plan,
        channels=request.channels,
    )


SPEC = ProviderSpec(
    provider=Provider.ENPHASE,
    label="Enphase",
    plan_label=lambda plan: f"Enphase ({plan_key(plan).title()} plan)",
    build_client=build_client,
    system_id_label="System ID",
    client_id_label="Client ID",
    credentials=(Credential("client_secret", "Client Secret"), Credential("app_api_key", "Application API Key")),
    obtained_secrets=(TOKENS_SECRET,),
    # Plan limits count per application, and its API key names it (the Client ID names the same application).
    account_credential="app_api_key",
    account_noun="application",
    budget_remedy="a larger Enphase plan",
    vendor=VENDOR,
    base_url_settings=("enphase_base_url", "enphase_auth_url"),
    # An Enphase gateway uploads about every 15 minutes: 20 minutes leaves a margin.
    data_delay=timedelta(minutes=20),
    budgets=lambda plan: (QuotaRule("account", "month", PLANS[plan_key(plan)][1]),),
    calls_per_window=calls_per_window,
    # The client cuts its windows as if every default endpoint were read, so the shortest of theirs; and it starts
    # them on its 15-minute grid, which can lengthen a window by up to one interval.
    max_window=min(ENDPOINTS[name].max_window for name in DEFAULT_ENDPOINTS),
    window_alignment=max(ENDPOINTS[name].interval for name in DEFAULT_ENDPOINTS),
    check_settings=schedule_problems,  # the live stream's schedule (docs/real-time.md)
)
