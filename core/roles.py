"""What a source means to its site: its role, from the meter category and source type (README "KPI formulas"), and
the channel of a vendor's answer that feeds it.

One mapping (`role_of`) for every module that sums, shows or collects a site's flows (History, KPIs, Live, Alerts,
the collector, connection tests, the quota planner), so they cannot disagree about which source is production,
load, grid import or export, battery or state of charge: the channel is a property of the role (`Role.channel`),
and a type no role covers has neither. The energy balance that computes a load is written once too, for values
(`balance_load`) and for frames (`balance_load_expr`). The SQL view `v_kpi_daily` (migrations 7 and 9 in
core.store.schema) spells the same mapping and balance in SQL; tests/test_source_meaning.py keeps them equal.

`ROLE_LABELS` names the roles for people; a page that words one differently (Live says "PV production") says so
with an override next to its code, so the differences stay visible.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum

import polars as pl

from core.models import Category


class Role(StrEnum):
    """What a source's readings mean to the site's balance. The values name columns and SQL roles: keep them."""

    PRODUCTION = "production"  # PROD, any type
    LOAD = "load"  # CONS "load": the building's consumption
    GRID_IMPORT = "grid_import"  # CONS "grid"
    GRID_EXPORT = "grid_export"  # INJ "grid"
    BATTERY = "battery"  # STOR "battery": power in W, positive while discharging into the site
    SOC = "soc"  # STOR "soc": state of charge in %

    @property
    def is_energy(self) -> bool:
        """Whether its readings are a power whose integral is energy; a state of charge (%) is not."""
        return self is not Role.SOC

    @property
    def unit(self) -> str:
        """The unit of its readings' values."""
        return "W" if self.is_energy else "%"

    @property
    def channel(self) -> str:
        """The channel of a vendor's answer (core.providers.base) whose readings this role's sources store."""
        return _CHANNELS[self]


# Vendors' answers name production "pv_w" whatever its kind: the simulator models a PV array, and a wind or hydro
# source polled from a vendor reads that vendor's production. Battery power is positive while discharging.
_CHANNELS: dict[Role, str] = {
    Role.PRODUCTION: "pv_w",
    Role.LOAD: "load_w",
    Role.GRID_IMPORT: "grid_import_w",
    Role.GRID_EXPORT: "grid_export_w",
    Role.BATTERY: "battery_w",
    Role.SOC: "soc_pct",
}


# What a flow counts as in the site's energy balance when the site has no source for it, the one rule Live, History,
# KPIs and `v_kpi_daily` follow: production and the battery are 0 (a site without a PV array or a battery has none),
# grid import and export are unknown (every site has a grid connection, and an unmetered one still carries energy),
# so a load computed from the balance is unknown too. A flow whose sources reported nothing is unknown as well.
ABSENT_FLOW: dict[Role, float | None] = {
    Role.PRODUCTION: 0.0,
    Role.GRID_IMPORT: None,
    Role.GRID_EXPORT: None,
    Role.BATTERY: 0.0,
}
# load = production + grid import - grid export + battery (battery > 0 while discharging into the site)
BALANCE: tuple[tuple[Role, int], ...] = (
    (Role.PRODUCTION, 1),
    (Role.GRID_IMPORT, 1),
    (Role.GRID_EXPORT, -1),
    (Role.BATTERY, 1),
)


def unmetered_terms(present: Collection[Role]) -> list[Role]:
    """The balance's terms a site without a source for them leaves unknown (`ABSENT_FLOW`): while any is missing
    from `present`, the load cannot be computed."""
    return [role for role, _ in BALANCE if role not in present and ABSENT_FLOW[role] is None]


def balance_load(flows: Mapping[Role, float | None]) -> float | None:
    """The load the balance gives from each term's value (absent roles taken from `ABSENT_FLOW`); None when any term
    is unknown."""
    total = 0.0
    for role, sign in BALANCE:
        value = flows[role] if role in flows else ABSENT_FLOW[role]
        if value is None:
            return None
        total += sign * value
    return total


def balance_load_expr(columns: Mapping[Role, str]) -> pl.Expr:
    """`balance_load` row by row as a Polars expression: each term from its column in `columns` (absent roles taken
    from `ABSENT_FLOW`); null where any term is null."""
    terms = [
        (pl.col(columns[role]) if role in columns else pl.lit(ABSENT_FLOW[role], dtype=pl.Float64)) * sign
        for role, sign in BALANCE
    ]
    return pl.sum_horizontal(terms, ignore_nulls=False)


ROLE_LABELS = {
    Role.PRODUCTION: "Production",
    Role.LOAD: "Load",
    Role.GRID_IMPORT: "Grid import",
    Role.GRID_EXPORT: "Grid export",
    Role.BATTERY: "Battery",
    Role.SOC: "State of charge",
}

# The one mapping. A category that injects or produces means one role whatever the type (every PROD type of
# core.models.SOURCE_TYPES is production; INJ has only "grid"), as `v_kpi_daily` has it; consumption and storage go
# by their type.
_BY_CATEGORY: dict[Category, Role] = {
    Category.PROD: Role.PRODUCTION,
    Category.INJ: Role.GRID_EXPORT,
}
_BY_TYPE: dict[tuple[Category, str], Role] = {
    (Category.CONS, "load"): Role.LOAD,
    (Category.CONS, "grid"): Role.GRID_IMPORT,
    (Category.STOR, "battery"): Role.BATTERY,
    (Category.STOR, "soc"): Role.SOC,
}


def role_of(category: Category | str, source_type: str) -> Role | None:
    """The role of a source; None for a type no role covers."""
    category = Category(category)
    if category in _BY_CATEGORY:
        return _BY_CATEGORY[category]
    return _BY_TYPE.get((category, source_type))


def channel_for(category: Category | str, source_type: str) -> str | None:
    """The channel a source reads (its role's); None for a type no role covers, which reads nothing. Saved sources
    and validated drafts never have such a type (core.models.check_source_type)."""
    role = role_of(category, source_type)
    return None if role is None else role.channel


def role_expr(category: str = "category", source_type: str = "source_type") -> pl.Expr:
    """`role_of` as a Polars expression over the two columns: the role's value, null where no role applies."""
    categories, types = pl.col(category), pl.col(source_type)
    expr = pl.lit(None, dtype=pl.String)
    # The conditions exclude each other, so nesting them in any order gives the same answer.
    for of_category, role in _BY_CATEGORY.items():
        expr = pl.when(categories == of_category.value).then(pl.lit(role.value)).otherwise(expr)
    for (of_category, of_type), role in _BY_TYPE.items():
        expr = pl.when((categories == of_category.value) & (types == of_type)).then(pl.lit(role.value)).otherwise(expr)
    return expr
