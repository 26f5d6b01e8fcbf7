"""Builds the client for a source's configured provider, from its settings and decrypted credentials."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import date

from pydantic import SecretStr

from core.models import Provider, Site
from core.providers.base import AuthError, MonitoringProvider, NeedsReauthorization
from core.providers.context import ProviderContext
from core.providers.enphase.client import EnphaseClient
from core.providers.simulator.client import SimulatedSite, SimulatorProvider
from core.providers.solaredge_v1.client import SolarEdgeV1Client
from core.providers.solaredge_v2.client import SolarEdgeV2Client


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
    # The channels the caller's sources read (core.collect.channels.channel_for); None reads everything. Clients
    # whose cost depends on it (SolarEdge V2 telemetry, Enphase endpoints) skip calls nobody reads.
    channels: frozenset[str] | None = None
    # Local dates the simulator shows as an inverter trip (PV 0 all day): the demo's recorded fault (core.catalog.demo).
    # Real vendors report their own faults; only the simulator reads this.
    outage_days: frozenset[date] = frozenset()


def simulator_seed(site_name: str, system_id: str) -> int:
    """Stable across restarts (unlike `hash`), so re-polls of the simulator give the same readings."""
    return zlib.crc32(f"{site_name}/{system_id}".encode())


def _secret(request: ConnectionRequest, name: str, label: str) -> SecretStr:
    value = request.secrets.get(name)
    if value is None or not value.get_secret_value():
        raise AuthError(f"{label} is missing: enter it in Data Connections.")
    return value


def build_client(request: ConnectionRequest, context: ProviderContext) -> MonitoringProvider:
    settings = context.settings
    if request.provider is Provider.SIMULATOR:
        site = SimulatedSite(
            latitude=request.site.latitude,
            longitude=request.site.longitude,
            timezone=request.site.timezone,
            pv_capacity_kw=request.pv_capacity_kw,
            seed=simulator_seed(request.site.name, request.system_id),
            outage_days=request.outage_days,
        )
        return SimulatorProvider(site, site_name=f"{request.site.name} (simulated)")
    if request.provider is Provider.SOLAREDGE_V1:
        return SolarEdgeV1Client(
            _secret(request, "api_key", "The SolarEdge API key"),
            request.system_id,
            base_url=settings.solaredge_v1_base_url,
            timeout_s=settings.http_timeout_s,
            ledger=context.ledger,
            timezone=request.site.timezone,
        )
    if request.provider is Provider.SOLAREDGE:
        return SolarEdgeV2Client(
            _secret(request, "api_key", "The SolarEdge API key"),
            request.system_id,
            base_url=settings.solaredge_base_url,
            timeout_s=settings.http_timeout_s,
            ledger=context.ledger,
            site_timezone=request.site.timezone,
            channels=request.channels,
        )
    if request.provider is Provider.ENPHASE:
        if request.source_id is None or context.token_store_for is None:
            raise NeedsReauthorization(
                "Save this source, then use Authorize with Enphase: the system owner must grant access first."
            )
        token_store = context.token_store_for(request.source_id)
        if token_store.load() is None:
            raise NeedsReauthorization(
                "Not authorised yet: use Authorize with Enphase (or paste the code) so the owner grants access."
            )
        return EnphaseClient(
            client_id=request.client_id,
            client_secret=_secret(request, "client_secret", "The Enphase client secret"),
            api_key=_secret(request, "app_api_key", "The Enphase application API key"),
            system_id=request.system_id,
            token_store=token_store,
            base_url=settings.enphase_base_url,
            auth_url=settings.enphase_auth_url,
            timeout_s=settings.http_timeout_s,
            ledger=context.ledger,
            plan=settings.enphase_plan,
            channels=request.channels,
        )
    raise ValueError(f"unknown provider {request.provider!r}")
