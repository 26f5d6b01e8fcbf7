"""Configuration as code, outwards: sites, meters and sources as plain data for a YAML or JSON file.

Operators keep a fleet's configuration under version control and review changes as diffs, so an export is
deterministic (sorted by name as people read them, like the pages) and holds neither secrets (not even ciphertext)
nor runtime state such as a connection's test result. Its shape is the import's (`core.catalog.config_file`), so an
export can be imported back unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from core.catalog import catalog as cat
from core.catalog.config_file import FORMAT_VERSION
from core.models import MQTT_CONNECTION_FIELDS, STREAM_FIELDS, Provider, name_key
from core.store.store import Store

_SITE_FIELDS = ("name", "latitude", "longitude", "timezone")
_SOURCE_FIELDS = ("name", "source_type", "capacity_kw", "carbon_intensity_g_per_kwh", "cost_per_mwh")


def _by_name(items: list[Any]) -> list[Any]:
    return sorted(items, key=lambda item: (name_key(item.name), item.name))


def export_config(store: Store) -> dict[str, Any]:
    """The configuration as plain data, sorted by name so that two exports of the same state are identical."""
    catalog = cat.load_catalog(store)
    # Children grouped once: asking the catalog for each parent's children scans them all each time, which made
    # an export of 20,000 sites quadratic.
    meters_of: dict[int, list[Any]] = defaultdict(list)
    sources_of: dict[int, list[Any]] = defaultdict(list)
    for meter in catalog.meters:
        meters_of[meter.site_id].append(meter)
    for source in catalog.sources:
        sources_of[source.meter_id].append(source)
    # the sources whose credentials others share, by their names
    shared = {s.api.credentials_source_id for s in catalog.sources if s.api.credentials_source_id is not None}
    paths = {s.id: catalog.names_of(s.id) for s in catalog.sources if s.id in shared}
    sites = []
    for site in _by_name(catalog.sites):
        meters = []
        for meter in _by_name(meters_of[site.id]):
            sources = []
            for s in _by_name(sources_of[meter.id]):
                api: dict[str, Any] = {"enabled": s.api.use_api, "provider": s.api.api_provider.value}
                api |= {"system_id": s.api.system_id, "client_id": s.api.client_id}
                api |= {"update_frequency": s.api.update_frequency.value}
                if s.api.api_provider is Provider.MQTT:  # other providers' files stay as they were
                    api |= {name: getattr(s.api, name) for name in MQTT_CONNECTION_FIELDS}
                if s.api.api_provider is Provider.ENPHASE:
                    api |= {name: getattr(s.api, name) for name in STREAM_FIELDS}
                if s.api.credentials_source_id in paths:  # shared credentials, by their holder's names
                    api["credentials_from"] = paths[s.api.credentials_source_id]
                sources.append({k: getattr(s, k) for k in _SOURCE_FIELDS} | {"api": api})
            meters.append({"name": meter.name, "category": meter.category.value, "sources": sources})
        sites.append({k: getattr(site, k) for k in _SITE_FIELDS} | {"meters": meters})
    return {"version": FORMAT_VERSION, "sites": sites}
