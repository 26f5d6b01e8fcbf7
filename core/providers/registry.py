"""Builds the client for a source's configured provider.

SolarEdge and Enphase clients are not part of this version: asking for them raises `ProviderUnavailable`
with a plain message, never a pretend success.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pydantic import SecretStr

from core.models import Provider, Site
from core.providers.base import ConnectionInfo, ProviderUnavailable
from core.providers.simulator import SimulatedSite, SimulatorProvider


class ProviderClient(Protocol):
    def test_connection(self, now: datetime) -> ConnectionInfo: ...

    def current_power(self, now: datetime) -> dict[str, float]: ...


@dataclass(frozen=True)
class ConnectionRequest:
    """Everything a client needs to reach one provider site."""

    provider: Provider
    site: Site
    pv_capacity_kw: float
    system_id: str = ""
    client_id: str = ""
    secrets: dict[str, SecretStr] = field(default_factory=dict)


def simulator_seed(site_name: str, system_id: str) -> int:
    """Stable across restarts (unlike `hash`), so re-polls of the simulator give the same readings."""
    return zlib.crc32(f"{site_name}/{system_id}".encode())


def build_client(request: ConnectionRequest) -> ProviderClient:
    if request.provider is Provider.SIMULATOR:
        site = SimulatedSite(
            latitude=request.site.latitude,
            longitude=request.site.longitude,
            timezone=request.site.timezone,
            pv_capacity_kw=request.pv_capacity_kw,
            seed=simulator_seed(request.site.name, request.system_id),
        )
        return SimulatorProvider(site, site_name=f"{request.site.name} (simulated)")
    raise ProviderUnavailable(
        f"The {request.provider.label} client is not available in this version yet, so this connection cannot be "
        "tested and no data will be collected from it. The settings are saved and will be used once it arrives."
    )
