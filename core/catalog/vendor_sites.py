"""Which sources read the same vendor site: one provider site can feed several meters of a site, and one call to it
serves all of them (the collector polls per vendor site; the quota planner and API Health count per vendor site)."""

from __future__ import annotations

from core.catalog.catalog import Catalog
from core.models import Source
from core.providers.registry import spec_of


def provider_site_key(source: Source, site_id: int) -> tuple[str, str]:
    """Sources with the same key read the same vendor site, so one call serves all of them.

    A vendor site is named by provider and system id; a provider without vendor site ids (the simulator) models a
    whole site, so its key is ours.
    """
    provider = source.api.api_provider
    system = source.api.system_id if spec_of(provider).needs_system_id else f"site:{site_id}"
    return provider.value, system


def group_by_provider_site(catalog: Catalog) -> dict[tuple[str, str], list[Source]]:
    """Enabled polled sources grouped by the vendor site they read, in catalog order. Sources whose readings are
    brought to us (Push) are in no group: nobody polls them."""
    groups: dict[tuple[str, str], list[Source]] = {}
    for source in catalog.sources:
        if not source.api.use_api or not spec_of(source.api.api_provider).polled:
            continue
        meter = catalog.meter(source.meter_id)
        groups.setdefault(provider_site_key(source, meter.site_id), []).append(source)
    return groups
