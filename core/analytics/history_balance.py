"""The energy balance of a site per bucket, with the README's "KPI formulas" (as core.analytics.kpi_formulas applies
them).

E_prod is PROD energy, E_exp INJ energy, E_imp CONS "grid" energy, and the battery's net energy is the energy of
its STOR "battery" sources (power is positive when discharging, so net > 0 means the battery gave energy).
Self-consumed = max(E_prod - E_exp, 0), as the KPI E_self: a battery exporting at night makes E_exp exceed
E_prod, and production used on site cannot be negative. Load is the metered CONS "load" energy where the site has
such a source, else E_prod + E_imp - E_exp + battery net.

A role the site has no source for: production and battery count as 0 (a site without a battery neither charges
nor discharges one), while grid import and export are unknown (null), since every site has a grid connection and
an unmetered one still carries energy. A role the site has but that has no data in a bucket is null, and so is
everything derived from it: a gap never turns into a number. `has_gap` flags such a bucket (a role the site has
is null there), so the page can mark it even when some of its flows have data.
"""

from __future__ import annotations

from collections.abc import Collection

import polars as pl

from core.roles import ABSENT_FLOW, BALANCE, Role, balance_load_expr

BALANCE_ROLES = tuple(role.value for role in Role if role.is_energy)

METERED = "metered"
COMPUTED = "computed: production + imported - exported + battery net"

BALANCE_COLUMNS = (
    "production_kwh",
    "self_consumed_kwh",
    "exported_kwh",
    "imported_kwh",
    "battery_discharge_kwh",
    "battery_charge_kwh",
    "battery_net_kwh",
    "load_kwh",
)


def energy_balance(buckets: pl.DataFrame, role_rows: pl.DataFrame, present_roles: Collection[str]) -> pl.DataFrame:
    """One row per bucket of `buckets` with the balance columns, the load's basis, the worst role coverage and
    `has_gap` (some role the site has is null in the bucket).

    `buckets` has `key` and the bucket's time columns; `role_rows` has `role` (a core.roles.Role value), `key`,
    `energy_kwh` and `coverage_pct` for every bucket of every role in `present_roles`.
    """
    frame = buckets
    for role in BALANCE_ROLES:
        if role in present_roles:
            rows = role_rows.filter(pl.col("role") == role).select(
                "key", pl.col("energy_kwh").alias(role), pl.col("coverage_pct").alias(f"_cov_{role}")
            )
            frame = frame.join(rows, on="key", how="left")
        else:
            absent = ABSENT_FLOW.get(Role(role))  # the one rule (core.roles); load: computed below
            frame = frame.with_columns(pl.lit(absent, dtype=pl.Float64).alias(role))
    coverages = [f"_cov_{role}" for role in BALANCE_ROLES if role in present_roles]
    production, exported = pl.col(Role.PRODUCTION.value), pl.col(Role.GRID_EXPORT.value)
    imported, net = pl.col(Role.GRID_IMPORT.value), pl.col(Role.BATTERY.value)
    metered_load = Role.LOAD.value in present_roles
    balance = balance_load_expr({role: role.value for role, _ in BALANCE})
    load = pl.col(Role.LOAD.value) if metered_load else balance
    # Null arithmetic propagates: a gap in any input leaves the derived value null instead of inventing it.
    frame = frame.with_columns(
        production.alias("production_kwh"),
        (production - exported).clip(lower_bound=0.0).alias("self_consumed_kwh"),
        exported.alias("exported_kwh"),
        imported.alias("imported_kwh"),
        # The rollups hold the net energy per bucket: within one bucket a charge and a discharge cancel out.
        net.clip(lower_bound=0.0).alias("battery_discharge_kwh"),
        (-net).clip(lower_bound=0.0).alias("battery_charge_kwh"),
        net.alias("battery_net_kwh"),
        load.alias("load_kwh"),
        pl.lit(METERED if metered_load else COMPUTED).alias("load_basis"),
        (pl.min_horizontal(coverages) if coverages else pl.lit(None, dtype=pl.Float64)).alias("coverage_pct"),
        pl.any_horizontal([pl.col(r).is_null() for r in BALANCE_ROLES if r in present_roles] or [pl.lit(False)]).alias(
            "has_gap"
        ),
    )
    keep = [c for c in buckets.columns if c != "key"]
    return frame.select(*keep, *BALANCE_COLUMNS, "load_basis", "coverage_pct", "has_gap")
