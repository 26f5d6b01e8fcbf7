"""What a source means is one mapping (`core.roles`): its role, the channel it reads and the load the energy balance
gives, in Python (values and Polars frames) and in the SQL view `v_kpi_daily`, for every valid (category, type) and
for types no role covers. The view runs on a real DuckDB file, over readings written with their real rollups.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import polars as pl

from core.models import SOURCE_TYPES, Category
from core.roles import ABSENT_FLOW, BALANCE, Role, balance_load, balance_load_expr, channel_for, role_expr, role_of
from core.store.store import Store
from tests.crafting import SourceSpec, craft_site, write_readings

VALID = [(category, source_type) for category, types in SOURCE_TYPES.items() for source_type in types]
# Types a hand-edited database could hold: the category alone decides for PROD and INJ, as `v_kpi_daily` does.
UNKNOWN = [
    (Category.PROD, "geothermal"),
    (Category.CONS, "heat"),
    (Category.CONS, ""),
    (Category.STOR, "thermal"),
    (Category.INJ, "heat"),
]
# What the collector read for each valid type before the channel became a property of the role.
CHANNEL_OF_VALID = {
    **{(Category.PROD, source_type): "pv_w" for source_type in SOURCE_TYPES[Category.PROD]},
    (Category.CONS, "load"): "load_w",
    (Category.CONS, "grid"): "grid_import_w",
    (Category.STOR, "battery"): "battery_w",
    (Category.STOR, "soc"): "soc_pct",
    (Category.INJ, "grid"): "grid_export_w",
}

TZ = "Europe/Brussels"
DAY = date(2026, 6, 10)
START = datetime.combine(DAY, time(), tzinfo=ZoneInfo(TZ)).astimezone(UTC)
HOURS = 24  # 10 June in Brussels: no clock change
# The balance's terms on a site that has them, in W; the battery charges (negative).
WATTS = {Role.PRODUCTION: 3000.0, Role.GRID_IMPORT: 1000.0, Role.GRID_EXPORT: 1500.0, Role.BATTERY: -400.0}
VIEW_COLUMNS = {
    Role.PRODUCTION: "e_prod_kwh",
    Role.GRID_IMPORT: "e_imp_kwh",
    Role.GRID_EXPORT: "e_exp_kwh",
    Role.BATTERY: "battery_net_kwh",
}


def test_every_valid_type_reads_its_roles_channel_as_before() -> None:
    assert {pair: channel_for(*pair) for pair in VALID} == CHANNEL_OF_VALID
    for category, source_type in VALID:
        role = role_of(category, source_type)
        assert role is not None, (category, source_type)
        assert channel_for(category, source_type) == role.channel
    assert {role_of(*pair) for pair in VALID} == set(Role)  # every role is some valid type's
    assert len({role.channel for role in Role}) == len(Role)  # and reads a channel of its own


def test_a_type_no_role_covers_has_no_channel_either() -> None:
    roles = {pair: role_of(*pair) for pair in UNKNOWN}
    assert roles == {
        (Category.PROD, "geothermal"): Role.PRODUCTION,
        (Category.CONS, "heat"): None,
        (Category.CONS, ""): None,
        (Category.STOR, "thermal"): None,
        (Category.INJ, "heat"): Role.GRID_EXPORT,
    }
    assert {pair: channel_for(*pair) for pair in UNKNOWN} == {
        pair: None if role is None else role.channel for pair, role in roles.items()
    }


def test_the_polars_role_is_role_of() -> None:
    pairs = VALID + UNKNOWN
    frame = pl.DataFrame({"category": [c.value for c, _ in pairs], "source_type": [t for _, t in pairs]})
    in_polars = frame.select(role_expr().alias("role"))["role"].to_list()
    assert in_polars == [None if (role := role_of(*pair)) is None else role.value for pair in pairs]


def test_the_polars_balance_is_balance_load_row_by_row() -> None:
    values = [None, 2.0, -1.5]
    for size in range(len(BALANCE) + 1):
        for present in itertools.combinations([role for role, _ in BALANCE], size):
            rows = list(itertools.product(values, repeat=size))
            frame = pl.DataFrame(
                {role.value: [row[i] for row in rows] for i, role in enumerate(present)},
                schema={role.value: pl.Float64 for role in present},
            )
            if not present:
                frame = pl.DataFrame({"row": [0]})
                rows = [()]
            computed = frame.select(balance_load_expr({role: role.value for role in present}).alias("load"))
            expected = [balance_load(dict(zip(present, row, strict=True))) for row in rows]
            assert computed["load"].to_list() == expected, present


def _kwh(watts: float) -> float:
    return watts * HOURS / 1000


def _python_row(flows: dict[Role, float | None], metered_load: float | None = None) -> dict[str, float | None]:
    """The day the view should show for a site with these flows (kWh; None: its sources sent nothing), from the
    Python rule: absent terms from ABSENT_FLOW, the load metered or else `balance_load`."""
    row = {column: flows[role] if role in flows else ABSENT_FLOW[role] for role, column in VIEW_COLUMNS.items()}
    row["e_load_kwh"] = metered_load if metered_load is not None else balance_load(flows)
    return row


def _view_rows(store: Store) -> dict[str, dict[str, float | None]]:
    columns = [*VIEW_COLUMNS.values(), "e_load_kwh"]
    with store.connect(read_only=True) as con:
        found = con.execute(
            f"SELECT site, {', '.join(columns)} FROM v_kpi_daily WHERE day = ? ORDER BY site", [DAY]
        ).fetchall()
    return {site: dict(zip(columns, _rounded(values), strict=True)) for site, *values in found}


def _rounded(values: list[float | None]) -> list[float | None]:
    return [None if v is None else round(v, 6) for v in values]


def _as_expected(rows: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    return {site: dict(zip(row, _rounded(list(row.values())), strict=True)) for site, row in rows.items()}


def test_the_view_gives_each_source_the_role_python_gives_it(store: Store) -> None:
    """One site per (category, type), with one source reading 1.2 kW all day: the view's per-role columns and load
    are what Python's role, absent-flow rule and balance make of it; a source with no energy role (state of charge,
    a type no role covers) gives its site no row."""
    expected: dict[str, dict[str, float | None]] = {}
    for category, source_type in VALID + UNKNOWN:
        name = f"{category.value} {source_type or '(empty)'}"
        spec = SourceSpec(category, source_type, name=f"{name} source")
        _, ids = craft_site(store, [spec], name=name, timezone=TZ)
        write_readings(store, ids[spec.label], START, [1200.0] * HOURS * 4)
        role = role_of(category, source_type)
        if role is not None and role.is_energy:
            energy = _kwh(1200.0)
            if role is Role.LOAD:
                expected[name] = _python_row({}, metered_load=energy)
            else:
                expected[name] = _python_row({role: energy})

    assert _view_rows(store) == _as_expected(expected)


def test_the_views_load_is_balance_load(store: Store) -> None:
    """One site per combination of the balance's terms (and one whose import meter sent nothing): the view's flows
    and computed load are Python's `balance_load` of the same energies."""
    terms = [role for role, _ in BALANCE]
    expected: dict[str, dict[str, float | None]] = {}
    cases: dict[str, dict[Role, float | None]] = {}
    for size in range(1, len(terms) + 1):
        for present in itertools.combinations(terms, size):
            cases[" + ".join(role.value for role in present)] = {role: WATTS[role] for role in present}
    cases["silent import"] = {Role.PRODUCTION: 3000.0, Role.GRID_IMPORT: None, Role.GRID_EXPORT: 1500.0}
    for name, watts in cases.items():
        specs = [SourceSpec(*_valid_pair(role), name=f"{name}: {role.value}") for role in watts]
        _, ids = craft_site(store, specs, name=name, timezone=TZ)
        for role, power in watts.items():
            write_readings(store, ids[f"{name}: {role.value}"], START, [power] * HOURS * 4, skip_none=True)
        expected[name] = _python_row({role: None if w is None else _kwh(w) for role, w in watts.items()})

    found = _view_rows(store)
    assert found == _as_expected(expected)
    assert found["production + grid_import + grid_export + battery"]["e_load_kwh"] == _kwh(3000 + 1000 - 1500 - 400)


def _valid_pair(role: Role) -> tuple[Category, str]:
    """The first valid (category, type) of a role."""
    return next(pair for pair in VALID if role_of(*pair) is role)
