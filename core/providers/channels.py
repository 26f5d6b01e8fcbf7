"""Which provider channel feeds which meter: one provider site can feed several meters of a site."""

from __future__ import annotations

from core.models import Category

# (category, source type) -> channel name in provider series. Battery power is positive when discharging.
CHANNELS: dict[tuple[Category, str], str] = {
    (Category.PROD, "solar"): "pv_w",
    (Category.CONS, "load"): "load_w",
    (Category.CONS, "grid"): "grid_import_w",
    (Category.STOR, "battery"): "battery_w",
    (Category.INJ, "grid"): "grid_export_w",
}


def channel_for(category: Category, source_type: str) -> str:
    """The channel a source reads; production of other kinds (wind, hydro) maps to the PV channel of simulators."""
    return CHANNELS.get((category, source_type), "pv_w" if category is Category.PROD else "load_w")
