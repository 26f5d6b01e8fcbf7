"""SolarEdge Monitoring API V2 as the rest of the program sees it (`core.providers.spec`); the vendor facts behind
the numbers are in docs/solaredge-v2.md."""

from __future__ import annotations

from datetime import timedelta

from core.models import Provider
from core.providers.base import MonitoringProvider, QuotaRule
from core.providers.context import ProviderContext
from core.providers.spec import ConnectionRequest, Credential, ProviderSpec, required_secret

VENDOR = "SolarEdge"  # the name its calls are counted under (`quota_usage.provider`) and messages use
# Free tier limits: 10 calls a minute (live `x-ratelimit-limit-minute` headers) and 2,000 credits a month (the
# vendor's documentation). Paid tiers are unknown, hence client parameters.
CALLS_PER_MINUTE = 10
CREDITS_PER_MONTH = 2_000
# QUARTER_HOUR spans: the documentation says 12 h; one live client quotes an API message saying 7 days. The
# documented, smaller value is the default.
MAX_WINDOW = timedelta(hours=12)
# The channels each telemetry endpoint serves: a client given `channels` skips an endpoint that serves none of them
# (every call costs a credit). `power` (pv_w) is always called: it sets the buckets and `test_connection` needs it.
TELEMETRY_CHANNELS: dict[str, frozenset[str]] = {
    "meters": frozenset({"grid_import_w", "grid_export_w", "load_w"}),
    "storage": frozenset({"battery_w", "soc_pct"}),
}


def calls_per_window(channels: frozenset[str]) -> int:
    """`power` always, then each telemetry endpoint a read channel needs (`SolarEdgeV2Client._series`)."""
    return 1 + sum(1 for served in TELEMETRY_CHANNELS.values() if served & channels)


def build_client(request: ConnectionRequest, context: ProviderContext) -> MonitoringProvider:
    from core.providers.solaredge_v2.client import SolarEdgeV2Client  # heavy: only when a client is needed

    return SolarEdgeV2Client(
        required_secret(request, "api_key", "The SolarEdge API key"),
        request.system_id,
        base_url=context.settings.solaredge_base_url,
        timeout_s=context.settings.http_timeout_s,
        http_pool=context.http_pool,  # the process's shared clients, one per host
        ledger=context.ledger,
        site_timezone=request.site.timezone,
        channels=request.channels,
    )


SPEC = ProviderSpec(
    provider=Provider.SOLAREDGE,
    label="SolarEdge",
    plan_label=lambda plan: "SolarEdge (V2)",
    build_client=build_client,
    system_id_label="Site ID",
    credentials=(Credential("api_key", "API Key"),),
    account_credential="api_key",
    budget_unit="credits",
    vendor=VENDOR,
    base_url_settings=("solaredge_base_url",),
    # SolarEdge publishes a quarter hour about 15 minutes after it closes (clients are advised to ask 15 min 10 s
    # later): 20 minutes leaves a margin.
    data_delay=timedelta(minutes=20),
    budgets=lambda plan: (QuotaRule("account", "month", CREDITS_PER_MONTH),),
    calls_per_window=calls_per_window,
    max_window=MAX_WINDOW,
)
