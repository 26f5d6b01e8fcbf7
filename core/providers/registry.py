"""The providers this program knows, by the id stored in a source's settings, and what follows from their specs.

Adding a provider: write its package under `core/providers/` (a client and a `spec.py`), give it an id in
`core.models.Provider`, and add its `SPEC` to `SPECS` below; the pages, the config file, the quota planner, API
Health and the collector read everything else from the spec (docs/architecture.md, "The provider model").
"""

from __future__ import annotations

from collections.abc import Collection

from core.models import ApiSettings, Provider
from core.providers.base import MonitoringProvider
from core.providers.context import ProviderContext
from core.providers.enphase.spec import SPEC as ENPHASE
from core.providers.mqtt.spec import SPEC as MQTT
from core.providers.push.spec import SPEC as PUSH
from core.providers.simulator.spec import SPEC as SIMULATOR
from core.providers.solaredge_v1.spec import SPEC as SOLAREDGE_V1
from core.providers.solaredge_v2.spec import SPEC as SOLAREDGE_V2
from core.providers.spec import ConnectionRequest, ProviderSpec

# In the order lists show them.
SPECS: dict[Provider, ProviderSpec] = {
    spec.provider: spec for spec in (SOLAREDGE_V2, SOLAREDGE_V1, ENPHASE, SIMULATOR, PUSH, MQTT)
}
OBTAINED_SECRETS: tuple[str, ...] = tuple(dict.fromkeys(n for spec in SPECS.values() for n in spec.obtained_secrets))
# Credentials by their stored names ("api_key" -> "API Key"), as the specs label them.
CREDENTIAL_LABELS: dict[str, str] = {c.name: c.label for spec in SPECS.values() for c in spec.credentials}


def spec_of(provider: Provider | str) -> ProviderSpec:
    """The spec of a provider id; `ValueError` for an id no provider has."""
    return SPECS[Provider(provider)]


class NotPolled(ValueError):
    """A client was asked of a provider whose readings are brought to us (a caller's bug: check `spec.polled`)."""


def build_client(request: ConnectionRequest, context: ProviderContext) -> MonitoringProvider:
    factory = spec_of(request.provider).build_client
    if factory is None:
        raise NotPolled(f"{request.provider.value} sources are not polled: their readings are sent to us")
    return factory(request, context)


def credential_names(provider: Provider | str) -> list[str]:
    """The stored names of the credentials a provider's sources give, in the order its fields show."""
    return [c.name for c in spec_of(provider).credentials]


def kept_secrets(provider: Provider | str) -> set[str]:
    """What a source of this provider keeps in `source_secrets`: its credentials and what the provider obtained."""
    spec = spec_of(provider)
    return {c.name for c in spec.credentials} | set(spec.obtained_secrets)


def credentials_still_apply(provider: Provider, client_id: str, stored: ApiSettings) -> bool:
    """Whether credentials stored for `stored` still serve a source changed to `provider` (and Client ID): the same
    provider and, where credentials belong to an application (Enphase), the same Client ID."""
    if provider is not stored.api_provider:
        return False
    return not spec_of(provider).shares_by_application or client_id == stored.client_id


def missing_credentials(api: ApiSettings, secret_names: Collection[str]) -> dict[str, str]:
    """Fields a provider needs but that are empty, as {field: "is required for <provider>"}, and what its own
    settings check finds wrong (`ProviderSpec.check_settings`). Only checked when the API is enabled."""
    if not api.use_api:
        return {}
    spec = spec_of(api.api_provider)
    errors: dict[str, str] = dict(spec.check_settings(api))
    required = f"is required for {spec.label}"
    if spec.needs_system_id and not api.system_id:
        errors["system_id"] = required
    if spec.shares_by_application and not api.client_id:
        errors["client_id"] = required
    for credential in spec.credentials:
        if credential.required and credential.name not in secret_names:
            errors[credential.name] = required
    return errors
