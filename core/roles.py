"""What a source means to its site: its role, from the meter category and source type (README "KPI formulas").

One mapping for every module that sums or shows a site's flows (History, KPIs, Live, Alerts), so they cannot
disagree about which source is production, load, grid import or export, battery or state of charge. The SQL view
`v_kpi_daily` (migration 7 in core.store.schema) spells the same mapping in SQL; a test keeps it equal to the KPIs.

`ROLE_LABELS` names the roles for people; a page that words one differently (Live says "PV production") says so
with an override next to its code, so the differences stay visible.
"""

from __future__ import annotations

from collections.abc import Collection
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


def balance_load(flows: dict[Role, float | None]) -> float | None:
    """The load the balance gives from each term's value (absent roles taken from `ABSENT_FLOW`); None when any term
    is unknown."""
    total = 0.0
    for role, sign in BALANCE:
        value = flows[role] if role in flows else ABSENT_FLOW[role]
        if value is None:
            return None
        total += sign * value
    return total


ROLE_LABELS = {
    Role.PRODUCTION: "Production",
    Role.LOAD: "Load",
    Role.GRID_IMPORT: "Grid import",
    Role.GRID_EXPORT: "Grid export",
    Role.BATTERY: "Battery",
    Role.SOC: "State of charge",
}

# Every PROD type (core.models.SOURCE_TYPES) is production; the other categories go by their type.
_BY_TYPE: dict[tuple[Category, str], Role] = {
    (Category.CONS, "load"): Role.LOAD,
    (Category.CONS, "grid"): Role.GRID_IMPORT,
    (Category.INJ, "grid"): Role.GRID_EXPORT,
    (Category.STOR, "battery"): Role.BATTERY,
    (Category.STOR, "soc"): Role.SOC,
}


def role_of(category: Category | str, source_type: str) -> Role | None:
    """The role of a source; None for a type no role covers."""
    category = Category(category)
    if category is Category.PROD:
        return Role.PRODUCTION
    return _BY_TYPE.get((category, source_type))


def role_expr(category: str = "category", source_type: str = "source_type") -> pl.Expr:
    """`role_of` as a Polars expression over the two columns: the role's value, null where no role applies."""
    categories, types = pl.col(category), pl.col(source_type)
    production = categories == Category.PROD.value
    expr = pl.when(production).then(pl.lit(Role.PRODUCTION.value)).otherwise(pl.lit(None, dtype=pl.String))
    # The (category, type) pairs exclude each other, so nesting them in any order gives the same answer.
    for (of_category, of_type), role in _BY_TYPE.items():
        expr = pl.when((categories == of_category.value) & (types == of_type)).then(pl.lit(role.value)).otherwise(expr)
    return expr
