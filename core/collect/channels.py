"""Which provider channel feeds which meter: one provider site can feed several meters of a site."""

from __future__ import annotations

import polars as pl

from core.catalog.catalog import Catalog
from core.models import Category, Provider, Source

# (category, source type) -> channel name in provider series. Battery power is positive when discharging.
SOURCE_CHANNELS: dict[tuple[Category, str], str] = {
    (Category.PROD, "solar"): "pv_w",
    (Category.CONS, "load"): "load_w",
    (Category.CONS, "grid"): "grid_import_w",
    (Category.STOR, "battery"): "battery_w",
    (Category.STOR, "soc"): "soc_pct",
    (Category.INJ, "grid"): "grid_export_w",
}


def channel_for(category: Category, source_type: str) -> str:
    """The channel a source reads; production of other kinds (wind, hydro) maps to the PV channel of simulators."""
    return SOURCE_CHANNELS.get((category, source_type), "pv_w" if category is Category.PROD else "load_w")


def provider_site_key(source: Source, site_id: int) -> tuple[str, str]:
    """Sources with the same key read the same vendor site, so one call serves all of them.

    A vendor site is named by provider and system id; the simulator models a whole site, so its key is ours.
    """
    provider = source.api.api_provider
    system = f"site:{site_id}" if provider is Provider.SIMULATOR else source.api.system_id
    return provider.value, system


def group_by_provider_site(catalog: Catalog) -> dict[tuple[str, str], list[Source]]:
    """Enabled sources grouped by the vendor site they read, in catalog order."""
    groups: dict[tuple[str, str], list[Source]] = {}
    for source in catalog.sources:
        if not source.api.use_api:
            continue
        meter = catalog.meter(source.meter_id)
        groups.setdefault(provider_site_key(source, meter.site_id), []).append(source)
    return groups


def readings_for(readings: pl.DataFrame, category: Category, source_type: str) -> pl.DataFrame:
    """The rows of one provider-site answer that belong to a source of this category and type."""
    return readings.filter(pl.col("channel") == channel_for(category, source_type))
