"""The built-in simulator as the rest of the program sees it (`core.providers.spec`): what a provider declares when
it has no vendor, no credentials and no budget. It models a whole site of ours, so it has no vendor site id."""

from __future__ import annotations

import zlib

from core.models import Provider
from core.providers.base import MonitoringProvider
from core.providers.context import ProviderContext
from core.providers.spec import ConnectionRequest, ProviderSpec


def simulator_seed(site_name: str, system_id: str) -> int:
    """Stable across restarts (unlike `hash`), so re-polls of the simulator give the same readings."""
    return zlib.crc32(f"{site_name}/{system_id}".encode())


def build_client(request: ConnectionRequest, context: ProviderContext) -> MonitoringProvider:
    from core.providers.simulator.client import SimulatedSite, SimulatorProvider  # pvlib: only when needed

    site = SimulatedSite(
        latitude=request.site.latitude,
        longitude=request.site.longitude,
        timezone=request.site.timezone,
        pv_capacity_kw=request.pv_capacity_kw,
        seed=simulator_seed(request.site.name, request.system_id),
        outage_days=request.outage_days,
    )
    return SimulatorProvider(site, site_name=f"{request.site.name} (simulated)")


SPEC = ProviderSpec(
    provider=Provider.SIMULATOR,
    label="Simulator",
    build_client=build_client,
    setup_note="The simulator models this site from its location and capacity: no credentials needed.",
)
