"""SolarEdge Monitoring API V1 (retired by SolarEdge on 2026-11-03) as the rest of the program sees it
(`core.providers.spec`). The limits are as SolarEdge documented V1 ("[doc]") and as users observed it."""

from __future__ import annotations

from datetime import timedelta

from core.models import Provider
from core.providers.base import MonitoringProvider, QuotaRule
from core.providers.context import ProviderContext
from core.providers.spec import ConnectionRequest, Credential, ProviderSpec, required_secret

VENDOR = "SolarEdge V1"  # the name its calls are counted under (`quota_usage.provider`) and messages use
# [doc] "300 requests for a specific account token and ... 300 requests for each specific site ID"; calls without
# a site ID count against the account. We count every site call against both, which can only be safer.
DEFAULT_DAILY_SITE_LIMIT = 300
DEFAULT_DAILY_ACCOUNT_LIMIT = 300
# [doc] "up to 3 concurrent API calls from the same source IP" (we can only count per key: see quota_rules).
DEFAULT_MAX_CONCURRENT = 3
# Sources conflict on the history window: the doc says "1 month" for powerDetails/energyDetails at 15 minutes,
# EVWorth/solaredge checks 31 days, and Energy-Sparks/energy-sparks PR #4112 saw 28-day windows rejected since
# Dec 2024 and moved to 25 days. 25 days plus the client's DST padding stays under every reading of "1 month".
DEFAULT_MAX_WINDOW = timedelta(days=25)


def build_client(request: ConnectionRequest, context: ProviderContext) -> MonitoringProvider:
    from core.providers.solaredge_v1.client import SolarEdgeV1Client  # heavy: only when a client is needed

    return SolarEdgeV1Client(
        required_secret(request, "api_key", "The SolarEdge API key"),
        request.system_id,
        base_url=context.settings.solaredge_v1_base_url,
        timeout_s=context.settings.http_timeout_s,
        http_pool=context.http_pool,  # the process's shared clients, one per host
        ledger=context.ledger,
        timezone=request.site.timezone,
    )


SPEC = ProviderSpec(
    provider=Provider.SOLAREDGE_V1,
    label="SolarEdge V1 (legacy)",
    plan_label=lambda plan: "SolarEdge V1",
    build_client=build_client,
    system_id_label="Site ID",
    credentials=(Credential("api_key", "API Key"),),
    account_credential="api_key",
    vendor=VENDOR,
    base_url_settings=("solaredge_v1_base_url",),
    data_delay=timedelta(minutes=20),  # as V2: the same monitoring platform behind both
    budgets=lambda plan: (
        QuotaRule("site", "day", DEFAULT_DAILY_SITE_LIMIT),
        QuotaRule("account", "day", DEFAULT_DAILY_ACCOUNT_LIMIT),
    ),
    # One energyDetails call carries every meter, whatever the channels (`SolarEdgeV1Client.history`); the site's
    # time zone comes from the site, so no `details` call.
    calls_per_window=lambda channels: 1,
    max_window=DEFAULT_MAX_WINDOW,
)
