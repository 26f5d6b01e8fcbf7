"""KPI formulas of a site over any period (the README's "KPI formulas"), as pure functions of energy totals.

The inputs are the site's energy flows, each summed over the sources that play one role (`Flow`; the roles and
which source plays which are in core.roles); the output is one `Kpi` per figure with its value, unit, formula and
the inputs it used, so a page can show the number, how it was obtained and from what. The SQL view `v_kpi_daily`
(migration 7 in core.store.schema) repeats these rules; a test keeps the two equal.

Rules beyond the plain formulas, and why (the README states them for users too):
- A flow whose role has no source at the site is *unknown* for the grid (no CONS "grid" source: import unknown;
  no INJ source: export unknown), because every site has a grid connection and an unmetered one still carries
  energy. It is *zero* for production and the battery, because a site without such a source has none. The rule
  lives in `core.roles.ABSENT_FLOW`, which Live and History follow too.
- A flow whose role has sources that sent no data at all in the period (`Flow.has_data` false: no second
  covered) is *unknown* too, whatever the role: a dead grid meter beside a reporting PV and load would otherwise
  read as E_imp = 0, 100 % self-sufficiency and no import cost. Data for part of the period is used as received
  (the coverage says how much).
  A KPI that needs an unknown flow, intensity or price is undefined (None, shown "-") and says why.
- Self-consumption is clipped to [0, 1] like self-sufficiency: export above production (a battery emptying into
  the grid) would otherwise give a share below zero. Both are undefined when their denominator is <= 0.
- STOR "soc" sources are states of charge, not energies (`Role.SOC.is_energy` is false): they count nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.roles import ABSENT_FLOW, ROLE_LABELS, Role, balance_load

KWH = "kWh"
SHARE = "share"  # a fraction 0..1, shown as a percentage
KG_CO2 = "kg CO2"
G_PER_KWH = "g/kWh"
COST = "cost"  # in the organisation's currency, as the sources' cost per MWh
PER_MWH = "cost/MWh"


@dataclass(frozen=True)
class Quantity:
    """A named input of a formula."""

    name: str
    value: float | None
    unit: str


@dataclass(frozen=True)
class Flow:
    """The energy of one role over a period, summed over its sources, with what intensity and price need.

    `co2_g` = sum(E_i x intensity_i) and `cost` = sum(E_i x cost_per_mwh_i / 1000) over the sources; the
    configured means stand in for the energy-weighted intensity and price when no energy flowed (a day without
    import still has a grid intensity). `parts` names each source's energy, for display.
    """

    energy_kwh: float = 0.0
    co2_g: float = 0.0
    cost: float = 0.0
    configured_intensity: float = 0.0
    configured_price: float = 0.0
    charge_kwh: float = 0.0  # battery only: energy into the battery (a positive number)
    discharge_kwh: float = 0.0  # battery only: energy out of the battery
    parts: tuple[Quantity, ...] = ()
    has_data: bool = True  # false when no source of the role covered a single second of the period

    @property
    def intensity(self) -> float:
        """Energy-weighted carbon intensity (g/kWh) of the role's sources."""
        return self.co2_g / self.energy_kwh if self.energy_kwh > 0 else self.configured_intensity

    @property
    def price(self) -> float:
        """Energy-weighted cost per MWh of the role's sources."""
        return self.cost * 1000.0 / self.energy_kwh if self.energy_kwh > 0 else self.configured_price


@dataclass(frozen=True)
class SiteFlows:
    """A site's flows over a period; None where the site has no source of that role."""

    production: Flow | None = None
    load: Flow | None = None
    grid_import: Flow | None = None
    grid_export: Flow | None = None
    battery: Flow | None = None


@dataclass(frozen=True)
class Kpi:
    key: str
    name: str
    value: float | None
    unit: str
    formula: str
    inputs: tuple[Quantity, ...] = ()
    note: str = ""  # why the value is undefined, or how it was obtained

    @property
    def text(self) -> str:
        return format_value(self.value, self.unit)


def format_value(value: float | None, unit: str, currency: str = "") -> str:
    """A value for display: "-" when undefined; shares as percentages; costs and prices in `currency`
    (`Settings.currency`)."""
    if value is None:
        return "-"
    if unit == SHARE:
        return f"{value * 100:.1f} %"
    if unit == COST:
        return f"{value:,.2f} {currency}".rstrip()
    if unit == PER_MWH:
        return f"{value:,.2f} {currency}/MWh" if currency else f"{value:,.2f} per MWh"
    return f"{value:,.1f} {unit}"


def unit_label(unit: str, currency: str = "") -> str:
    """The unit as a tile label or a column header says it: " (kWh)", " (EUR)"; "" for shares."""
    if unit == COST:
        return f" ({currency})" if currency else ""
    return {KWH: " (kWh)", KG_CO2: " (kg CO2)"}.get(unit, "")


def format_number(value: float | None, unit: str) -> str:
    """A value for a table whose header names the unit: "-" when undefined; shares as percentages."""
    if value is None:
        return "-"
    if unit == SHARE:
        return f"{value * 100:.1f} %"
    if unit == "%":
        return f"{value:.1f} %"
    return f"{value:,.2f}" if unit == COST else f"{value:,.1f}"


# The order the page shows them in and the daily table's columns.
KPI_KEYS = (
    "e_prod_kwh",
    "e_load_kwh",
    "e_imp_kwh",
    "e_exp_kwh",
    "e_self_kwh",
    "battery_discharge_kwh",
    "battery_charge_kwh",
    "battery_net_kwh",
    "self_consumption",
    "self_sufficiency",
    "emissions_kg",
    "co2_avoided_kg",
    "import_cost",
    "export_revenue",
    "savings",
)


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def no_data_note(role: str) -> str:
    return f"No data from the {ROLE_LABELS[Role(role)].lower()} sources in this period."


def _energy(flow: Flow | None, without_source: float | None) -> float | None:
    """A role's energy: `without_source` when it has no source, None when its sources sent no data."""
    if flow is None:
        return without_source
    return flow.energy_kwh if flow.has_data else None


@dataclass
class _Calc:
    """The intermediate quantities several KPIs share, computed once."""

    flows: SiteFlows
    e_prod: float | None = field(init=False)
    e_imp: float | None = field(init=False)
    e_exp: float | None = field(init=False)
    e_bat: float | None = field(init=False)
    e_load: float | None = field(init=False)
    e_self: float | None = field(init=False)

    def __post_init__(self) -> None:
        f = self.flows
        self.e_prod = _energy(f.production, ABSENT_FLOW[Role.PRODUCTION])
        self.e_imp = _energy(f.grid_import, ABSENT_FLOW[Role.GRID_IMPORT])
        self.e_exp = _energy(f.grid_export, ABSENT_FLOW[Role.GRID_EXPORT])
        self.e_bat = _energy(f.battery, ABSENT_FLOW[Role.BATTERY])
        if f.load:
            self.e_load = _energy(f.load, None)
        else:
            terms = {Role.PRODUCTION: self.e_prod, Role.GRID_IMPORT: self.e_imp, Role.GRID_EXPORT: self.e_exp}
            self.e_load = balance_load(terms | {Role.BATTERY: self.e_bat})
        if f.production is None:
            self.e_self = 0.0  # nothing produced, so nothing self-consumed, whatever was exported
        elif self.e_prod is None or self.e_exp is None:
            self.e_self = None
        else:
            self.e_self = max(self.e_prod - self.e_exp, 0.0)

    def silent(self, *roles: str) -> str:
        """The notes of the roles among these whose sources sent no data (empty when none)."""
        silent = [r for r in roles if (flow := getattr(self.flows, r)) is not None and not flow.has_data]
        return " ".join(no_data_note(r) for r in silent)

    def load_roles(self) -> tuple[str, ...]:
        """The roles E_load comes from: the load sources, or the balance."""
        if self.flows.load:
            return ("load",)
        return ("production", "grid_import", "grid_export", "battery")


def _q(name: str, value: float | None, unit: str = KWH) -> Quantity:
    return Quantity(name, value, unit)


def _sum_kpi(key: str, name: str, flow: Flow | None, symbol: str, what: str, missing: str, silent: str = "") -> Kpi:
    formula = f"{symbol} = sum of the energy of {what}"
    if flow is None:
        return Kpi(key, name, None, KWH, formula, note=missing)
    if not flow.has_data:
        return Kpi(key, name, None, KWH, formula, flow.parts, silent)
    return Kpi(key, name, flow.energy_kwh, KWH, formula, flow.parts)


def _energy_kpis(c: _Calc) -> list[Kpi]:
    f = c.flows
    prod = _sum_kpi("e_prod_kwh", "Production", f.production, "E_prod", "the PROD sources", "", c.silent("production"))
    if f.production is None:
        prod = Kpi("e_prod_kwh", "Production", 0.0, KWH, prod.formula, note="The site has no production source.")
    load_formula = "E_load = sum of the energy of the CONS sources of type load"
    if f.load:
        load = Kpi("e_load_kwh", "Consumption", c.e_load, KWH, load_formula, f.load.parts, c.silent("load"))
    else:
        load_note = ""
        if c.e_load is None:
            load_note = c.silent(*c.load_roles()) or (
                "No load source, and the balance needs grid import and export sources."
            )
        load = Kpi(
            "e_load_kwh",
            "Consumption",
            c.e_load,
            KWH,
            "E_load = E_prod + E_imp - E_exp + (E_discharge - E_charge)  (no load source: derived from the balance)",
            (_q("E_prod", c.e_prod), _q("E_imp", c.e_imp), _q("E_exp", c.e_exp), _q("E_discharge - E_charge", c.e_bat)),
            load_note,
        )
    battery = f.battery
    bat_note = c.silent("battery") if battery else "The site has no battery source."
    bat_inputs = battery.parts if battery else ()
    bat_known = battery is None or battery.has_data
    self_note = ""
    if c.e_self is None:
        self_note = c.silent("production", "grid_export") or "Needs a grid export source (INJ)."
    return [
        prod,
        load,
        _sum_kpi(
            "e_imp_kwh", "Grid import", f.grid_import, "E_imp", "the CONS sources of type grid",
            "The site has no grid import source (CONS, type grid): import is unknown.", c.silent("grid_import"),
        ),
        _sum_kpi(
            "e_exp_kwh", "Grid export", f.grid_export, "E_exp", "the INJ sources",
            "The site has no grid export source (INJ): export is unknown.", c.silent("grid_export"),
        ),
        Kpi(
            "e_self_kwh", "Self-consumed energy", c.e_self, KWH, "E_self = max(E_prod - E_exp, 0)",
            (_q("E_prod", c.e_prod), _q("E_exp", c.e_exp)),
            self_note,
        ),
        Kpi(
            "battery_discharge_kwh", "Battery discharge",
            (battery.discharge_kwh if battery else 0.0) if bat_known else None, KWH,
            "E_discharge = sum of the positive hourly energies of the STOR battery sources "
            "(power > 0 = discharging; today so far: quarter-hourly)",
            bat_inputs, bat_note,
        ),
        Kpi(
            "battery_charge_kwh", "Battery charge", (battery.charge_kwh if battery else 0.0) if bat_known else None,
            KWH, "E_charge = sum of the negative hourly energies of the STOR battery sources, as a positive number",
            bat_inputs, bat_note,
        ),
        Kpi(
            "battery_net_kwh", "Battery net", c.e_bat, KWH,
            "E_discharge - E_charge = sum of the energy of the STOR battery sources", bat_inputs, bat_note,
        ),
    ]  # fmt: skip


def _share_kpis(c: _Calc) -> list[Kpi]:
    self_consumption = None
    if c.e_self is not None and c.e_prod is not None and c.e_prod > 0:
        self_consumption = _clip(c.e_self / c.e_prod)
    sc_note = ""
    if self_consumption is None:
        sc_note = c.silent("production", "grid_export")
        if not sc_note:
            sc_note = (
                "Undefined: no production (E_prod = 0)."
                if c.e_prod is not None and c.e_prod <= 0
                else "Needs a grid export source (INJ)."
            )
    self_sufficiency = None
    if c.e_load is not None and c.e_imp is not None and c.e_load > 0:
        self_sufficiency = _clip((c.e_load - c.e_imp) / c.e_load)
    ss_note = ""
    if self_sufficiency is None:
        if c.e_load is None or c.e_imp is None:
            ss_note = c.silent(*c.load_roles(), "grid_import") or (
                "Needs the consumption and a grid import source (CONS, type grid)."
            )
        else:
            ss_note = "Undefined: no consumption (E_load = 0)."
    return [
        Kpi(
            "self_consumption", "Self-consumption", self_consumption, SHARE,
            "(E_prod - E_exp) / E_prod, clipped to [0, 1]; undefined when E_prod <= 0",
            (_q("E_prod", c.e_prod), _q("E_exp", c.e_exp)), sc_note,
        ),
        Kpi(
            "self_sufficiency", "Self-sufficiency", self_sufficiency, SHARE,
            "(E_load - E_imp) / E_load, clipped to [0, 1]; undefined when E_load <= 0",
            (_q("E_load", c.e_load), _q("E_imp", c.e_imp)), ss_note,
        ),
    ]  # fmt: skip


def _carbon_kpis(c: _Calc) -> list[Kpi]:
    f = c.flows
    grid, prod = f.grid_import, f.production
    # Without import data the configured intensity stands in for I_grid, as on a day without import.
    i_grid = grid.intensity if grid else None
    i_prod = prod.intensity if prod else 0.0
    grid_co2 = grid.co2_g if grid and grid.has_data else None
    prod_co2 = prod.co2_g if prod else 0.0
    emissions = None
    if grid_co2 is not None and c.e_self is not None:
        emissions = (grid_co2 + c.e_self * i_prod) / 1000.0
    avoided = None if i_grid is None or c.e_prod is None else (c.e_prod * i_grid - prod_co2) / 1000.0
    no_grid = "Needs a grid import source (CONS, type grid) for the grid's carbon intensity."
    emissions_note = ""
    if emissions is None:
        emissions_note = c.silent("grid_import", "production", "grid_export") or (
            no_grid if grid is None else "Needs a grid export source (INJ) for the self-consumed energy."
        )
    return [
        Kpi(
            "emissions_kg", "Emissions", emissions, KG_CO2,
            "(E_imp x I_grid + E_self x I_prod) / 1000, with I_grid = sum(E_i x I_i) / E_imp over the grid import "
            "sources and I_prod = sum(E_i x I_i) / E_prod over the PROD sources",
            (_q("E_imp", c.e_imp), _q("I_grid", i_grid, G_PER_KWH), _q("E_self", c.e_self),
             _q("I_prod", i_prod, G_PER_KWH)),
            emissions_note,
        ),
        Kpi(
            "co2_avoided_kg", "CO2 avoided", avoided, KG_CO2,
            "sum over the PROD sources of E_i x (I_grid - I_i) / 1000 = (E_prod x I_grid - sum(E_i x I_i)) / 1000",
            (_q("E_prod", c.e_prod), _q("I_grid", i_grid, G_PER_KWH), _q("sum(E_i x I_i) of PROD", prod_co2, "g"),
             *(prod.parts if prod else ())),
            "" if avoided is not None else (no_grid if i_grid is None else c.silent("production")),
        ),
    ]  # fmt: skip


def _money_kpis(c: _Calc) -> list[Kpi]:
    f = c.flows
    grid, export = f.grid_import, f.grid_export
    # Without import data the configured price stands in for P_imp, as on a day without import.
    price = grid.price if grid else None
    savings = None if price is None or c.e_self is None else c.e_self * price / 1000.0
    savings_note = ""
    if savings is None:
        savings_note = (
            "Needs a grid import source for its price."
            if grid is None
            else (c.silent("production", "grid_export") or "Needs a grid export source.")
        )
    import_note = "The site has no grid import source (CONS, type grid)." if grid is None else c.silent("grid_import")
    export_note = "The site has no grid export source (INJ)." if export is None else c.silent("grid_export")
    return [
        Kpi(
            "import_cost", "Import cost", grid.cost if grid and grid.has_data else None, COST,
            "sum over the grid import sources of E_i x cost_per_mwh_i / 1000",
            (*(grid.parts if grid else ()), _q("P_imp (energy-weighted)", price, PER_MWH)),
            import_note,
        ),
        Kpi(
            "export_revenue", "Export revenue", export.cost if export and export.has_data else None, COST,
            "sum over the INJ sources of E_i x cost_per_mwh_i / 1000",
            (*(export.parts if export else ()), _q("P_exp (energy-weighted)", export.price if export else None,
                                                   PER_MWH)),
            export_note,
        ),
        Kpi(
            "savings", "Savings (self-consumption)", savings, COST,
            "E_self x P_imp / 1000, with P_imp = import cost x 1000 / E_imp (the configured price when E_imp = 0 "
            "or unknown); export revenue is a separate figure",
            (_q("E_self", c.e_self), _q("P_imp", price, PER_MWH)),
            savings_note,
        ),
    ]  # fmt: skip


def compute_kpis(flows: SiteFlows) -> dict[str, Kpi]:
    """Every KPI of the site for the period the flows cover, keyed and ordered as KPI_KEYS."""
    calc = _Calc(flows)
    kpis = [*_energy_kpis(calc), *_share_kpis(calc), *_carbon_kpis(calc), *_money_kpis(calc)]
    return {kpi.key: kpi for kpi in kpis}
