"""KPIs of a site for a period of local days: the period rules, reading the energies, the daily table, the view.

A period is a range of whole local days [first_day, last_day] in the site's time zone (a DST day lasts 23 or 25
hours). Days that ended before the data cut are read from `readings_daily` (one row per source and day); the day
the cut falls in ("today so far") is read from `readings_15min` up to the cut, so the result follows the `now`
it is given, never data written after it. The cut is `now` floored to the quarter hour: the open quarter is not
expected yet. A quarter-hour bucket before the cut counts whole, with every reading that starts in it: an hourly
reading that starts at 10:00 counts its whole hour in a cut at 10:15 (the rollup keeps no finer split, so a
pro-rated share would be a guess; its coverage is capped at the time elapsed). Battery charge and discharge are
split by the sign of each hour's energy in `readings_hourly` (each quarter hour's for today so far, and for a zone
whose midnight is not on a whole UTC hour, like Asia/Kolkata at +05:30, where an hour would straddle two days): the
daily rollup holds only their net, which is what the balance uses. A year of 15-minute buckets would mean scanning
the whole 15-minute table (17.5M rows at 500 sources) for a few batteries.

A role (grid import, production, ...) whose sources sent no data at all in the period, or in a day of the daily
table, is unknown there, not zero (core.analytics.kpi_formulas: `Flow.has_data`).

Coverage: per source and day, the seconds with data (`covered_s`) over the seconds its data could have arrived
for (`core.analytics.availability`: the day up to the cut, less what its update frequency and vendor delay keep back);
the period's coverage is over all energy sources of the site. Below 100 % the page says the data is incomplete, and up
to when it was judged.
The formulas themselves are in core.analytics.kpi_formulas; local days and the cut in core.localtime.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import duckdb
import polars as pl

from core.analytics.availability import judged_until, newest_ends
from core.analytics.kpi_formulas import (
    COST,
    KG_CO2,
    KPI_KEYS,
    KWH,
    SHARE,
    Flow,
    Kpi,
    Quantity,
    SiteFlows,
    compute_kpis,
    format_number,
    unit_label,
)
from core.catalog.catalog import NotFound
from core.localtime import data_cut, local_midnight
from core.models import ApiSettings
from core.roles import Role, role_of
from core.store.store import Store, ts_literal

MAX_PERIOD_DAYS = 5 * 365 + 2  # five years, leap days included
PRESETS = ("Today", "Yesterday", "This week", "This month", "Last month", "This year", "Custom")


# --- periods ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    first_day: date
    last_day: date

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1


def preset_period(preset: str, today: date) -> Period:
    """The local days of a preset; the current week, month and year run up to today."""
    if preset == "Today":
        return Period(today, today)
    if preset == "Yesterday":
        return Period(today - timedelta(days=1), today - timedelta(days=1))
    if preset == "This week":
        return Period(today - timedelta(days=today.weekday()), today)  # weeks start on Monday (ISO 8601)
    if preset == "This month":
        return Period(today.replace(day=1), today)
    if preset == "Last month":
        last = today.replace(day=1) - timedelta(days=1)
        return Period(last.replace(day=1), last)
    if preset == "This year":
        return Period(today.replace(month=1, day=1), today)
    raise ValueError(f"unknown period {preset!r}: choose one of {', '.join(PRESETS[:-1])}")


def period_problem(first_day: date, last_day: date, today: date) -> str | None:
    """Why a custom range cannot be shown, or None."""
    if first_day > last_day:
        return f"The start date {first_day} is after the end date {last_day}: pick a start on or before the end."
    if first_day > today:
        return f"The start date {first_day} is in the future: the latest day with data is today, {today}."
    if last_day > today:
        return f"The end date {last_day} is in the future: end the range today ({today}) at the latest."
    days = (last_day - first_day).days + 1
    if days > MAX_PERIOD_DAYS:
        return f"The range spans {days:,} days: choose at most 5 years ({MAX_PERIOD_DAYS:,} days)."
    return None


@dataclass(frozen=True)
class DaySpan:
    """A local day of the period up to the cut: [start, end) in UTC; `whole` when it ended before the cut."""

    day: date
    start: datetime
    end: datetime
    whole: bool

    @property
    def seconds(self) -> int:
        return self.seconds_before(self.end)

    def seconds_before(self, limit: datetime) -> int:
        """Its seconds before `limit` (0 when the day starts after it)."""
        return max(0, int((min(self.end, limit) - self.start).total_seconds()))


def day_spans(period: Period, timezone: str, now: datetime) -> list[DaySpan]:
    """The period's days that have begun before the cut (a day's length follows DST: 23, 24 or 25 hours)."""
    cut = data_cut(now)
    spans = []
    day = period.first_day
    while day <= period.last_day:
        start, end = local_midnight(day, timezone), local_midnight(day + timedelta(days=1), timezone)
        if start >= cut:
            break
        spans.append(DaySpan(day, start, min(end, cut), end <= cut))
        day += timedelta(days=1)
    return spans


# --- reading energies ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceCoverage:
    source_id: int
    name: str
    covered_s: int
    expected_s: int

    @property
    def share(self) -> float | None:
        return min(1.0, self.covered_s / self.expected_s) if self.expected_s else None


@dataclass(frozen=True)
class KpiReport:
    """A site's KPIs for a period, with the daily table and how complete the data was."""

    site_id: int
    site_name: str
    timezone: str
    period: Period
    start: datetime | None  # UTC; None when no day of the period has begun
    end: datetime | None  # the cut when the period reaches it ("so far"), else the end of the last day
    so_far: bool
    kpis: dict[str, Kpi]
    coverage: float | None  # None when the site has no energy source or no time has elapsed
    sources: tuple[SourceCoverage, ...]
    daily: pl.DataFrame
    # when some source's data could not have arrived up to `end` yet: the coverage is judged up to here
    judged_until: datetime | None = None

    @property
    def incomplete_sources(self) -> list[SourceCoverage]:
        return [s for s in self.sources if s.share is not None and s.share < 1.0]


_SOURCE_SCHEMA = {
    "source_id": pl.Int64,
    "name": pl.String,
    "role": pl.String,
    "intensity": pl.Float64,
    "price": pl.Float64,
}


def _site(con: duckdb.DuckDBPyConnection, site_id: int) -> tuple[str, str, pl.DataFrame, dict[int, ApiSettings]]:
    """The site's name, zone, energy sources with their roles, and their API settings by id. Reads only this site:
    the whole catalog of a large fleet costs more to validate than the KPIs cost to compute."""
    found = con.execute("SELECT name, timezone FROM sites WHERE id = ?", [site_id]).fetchall()
    if not found:
        raise NotFound(f"site {site_id} no longer exists")
    rows, apis = [], {}
    query = (
        "SELECT e.id, e.name, m.category, e.source_type, e.carbon_intensity_g_per_kwh, e.cost_per_mwh, e.metadata"
        " FROM energy_sources e JOIN meters m ON m.id = e.meter_id WHERE m.site_id = ? ORDER BY e.id"
    )
    for source_id, name, category, source_type, intensity, price, metadata in con.execute(query, [site_id]).fetchall():
        role = role_of(category, source_type)
        if role is not None and role.is_energy:
            rows.append((source_id, name, role.value, intensity, price))
            apis[source_id] = ApiSettings.from_metadata(json.loads(metadata))
    return found[0][0], found[0][1], pl.DataFrame(rows, schema=_SOURCE_SCHEMA, orient="row"), apis


def _read_energy(
    con: duckdb.DuckDBPyConnection, sources: pl.DataFrame, spans: list[DaySpan], timezone: str
) -> pl.DataFrame:
    """Per source and day: energy_wh, covered_s, charge_wh, discharge_wh (rows only where a rollup has data)."""
    ids = ", ".join(str(int(i)) for i in sources["source_id"])
    battery = sources.filter(pl.col("role") == Role.BATTERY.value)["source_id"]
    whole = [s for s in spans if s.whole]
    partial = [s for s in spans if not s.whole]
    parts = []
    # Every literal below is formatted here from ints, datetimes and a validated IANA zone name.
    if whole:
        parts.append(
            "SELECT source_id, bucket AS day_start, coalesce(energy_wh, 0) AS energy_wh, covered_s FROM readings_daily"
            f" WHERE bucket >= {ts_literal(whole[0].start)} AND bucket < {ts_literal(whole[-1].end)}"
            f" AND source_id IN ({ids})"
        )
    for span in partial:
        parts.append(
            f"SELECT source_id, {ts_literal(span.start)} AS day_start, coalesce(sum(energy_wh), 0) AS energy_wh,"
            " sum(covered_s) AS covered_s"
            f" FROM readings_15min WHERE bucket >= {ts_literal(span.start)} AND bucket < {ts_literal(span.end)}"
            f" AND source_id IN ({ids}) GROUP BY source_id"
        )
    battery_sql = (
        "SELECT NULL::BIGINT AS source_id, NULL::TIMESTAMPTZ AS day_start, 0.0 AS charge_wh, 0.0 AS discharge_wh"
        " WHERE false"
    )
    if len(battery):
        battery_ids = ", ".join(str(int(i)) for i in battery)
        zone = timezone.replace("'", "''")
        splits = []
        # Charge and discharge by the sign of each hour (see the module docstring); today so far, of each quarter.
        if whole:
            # An hour straddles local midnight where midnight is not on a whole UTC hour: split by quarter there.
            off_hour = any(s.start.minute or s.end.minute for s in whole)
            splits.append(("readings_15min" if off_hour else "readings_hourly", whole[0].start, whole[-1].end))
        splits += [("readings_15min", span.start, span.end) for span in partial]
        battery_sql = " UNION ALL ".join(
            f"SELECT source_id, time_bucket(INTERVAL 1 DAY, bucket, '{zone}') AS day_start,"
            " coalesce(sum(greatest(-energy_wh, 0)), 0) AS charge_wh,"
            " coalesce(sum(greatest(energy_wh, 0)), 0) AS discharge_wh"
            f" FROM {table} WHERE bucket >= {ts_literal(start)} AND bucket < {ts_literal(end)}"
            f" AND source_id IN ({battery_ids}) GROUP BY ALL"
            for table, start, end in splits
        )
    query = (
        f"WITH e AS ({' UNION ALL '.join(parts)}), b AS ({battery_sql})"
        " SELECT e.source_id, e.day_start, e.energy_wh::DOUBLE AS energy_wh, e.covered_s::BIGINT AS covered_s,"
        " coalesce(b.charge_wh, 0)::DOUBLE AS charge_wh, coalesce(b.discharge_wh, 0)::DOUBLE AS discharge_wh"
        " FROM e LEFT JOIN b USING (source_id, day_start)"
    )
    return con.sql(query).pl()


# --- shaping ---------------------------------------------------------------------------------------------


def _configured(sources: pl.DataFrame) -> dict[str, tuple[float, float]]:
    """Per role: the mean configured intensity and price, for periods in which the role saw no energy."""
    means = sources.group_by("role").agg(pl.col("intensity").mean(), pl.col("price").mean())
    return {r["role"]: (r["intensity"], r["price"]) for r in means.iter_rows(named=True)}


def _flows(totals: dict[str, dict[str, float]], configured: dict[str, tuple[float, float]],
           parts: dict[str, tuple[Quantity, ...]] | None = None) -> SiteFlows:  # fmt: skip
    """SiteFlows from per-role sums: roles without a source stay None; a role whose sources covered no second
    (no rows, or rows without coverage) has no data, so its flow is unknown rather than zero."""
    flows: dict[str, Flow] = {}
    for role, (intensity, price) in configured.items():
        sums = totals.get(role, {})
        flows[role] = Flow(
            energy_kwh=sums.get("energy_kwh", 0.0),
            co2_g=sums.get("co2_g", 0.0),
            cost=sums.get("cost", 0.0),
            configured_intensity=intensity,
            configured_price=price,
            charge_kwh=sums.get("charge_kwh", 0.0),
            discharge_kwh=sums.get("discharge_kwh", 0.0),
            parts=(parts or {}).get(role, ()),
            has_data=sums.get("covered_s", 0) > 0,
        )
    return SiteFlows(
        production=flows.get(Role.PRODUCTION.value),
        load=flows.get(Role.LOAD.value),
        grid_import=flows.get(Role.GRID_IMPORT.value),
        grid_export=flows.get(Role.GRID_EXPORT.value),
        battery=flows.get(Role.BATTERY.value),
    )


_SUMS = ("energy_kwh", "co2_g", "cost", "charge_kwh", "discharge_kwh")


def _role_sums(frame: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return frame.group_by([*by, "role"]).agg(pl.col([*_SUMS, "covered_s"]).sum())


def _parts(per_source: pl.DataFrame) -> dict[str, tuple[Quantity, ...]]:
    """Each source's energy in the period, named, for the inputs of the KPIs that sum them ("-" without data)."""
    parts: dict[str, list[Quantity]] = defaultdict(list)
    for row in per_source.sort("source_id").iter_rows(named=True):
        has_data = row["covered_s"] > 0
        if row["role"] == Role.BATTERY.value:
            parts[row["role"]] += [
                Quantity(f"{row['name']}: discharge", row["discharge_kwh"] if has_data else None, "kWh"),
                Quantity(f"{row['name']}: charge", row["charge_kwh"] if has_data else None, "kWh"),
            ]
        else:
            parts[row["role"]].append(Quantity(row["name"], row["energy_kwh"] if has_data else None, "kWh"))
    return {role: tuple(quantities) for role, quantities in parts.items()}


def _empty_energy() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "source_id": pl.Int64, "day_start": pl.Datetime("us", "UTC"), "energy_wh": pl.Float64,
            "covered_s": pl.Int64, "charge_wh": pl.Float64, "discharge_wh": pl.Float64,
        }
    )  # fmt: skip


@dataclass(frozen=True)
class _Raw:
    """What the KPIs need from the database, fetched in one short connection."""

    site_id: int
    site_name: str
    timezone: str
    period: Period
    sources: pl.DataFrame
    spans: list[DaySpan]
    energy: pl.DataFrame
    judged_until: dict[int, datetime]  # per source: how far its data could have arrived (core.analytics.availability)


def _fetch(con: duckdb.DuckDBPyConnection, site_id: int, period: Period, now: datetime) -> _Raw:
    site_name, timezone, sources, apis = _site(con, site_id)
    spans = day_spans(period, timezone, now)
    energy = _read_energy(con, sources, spans, timezone) if spans and len(sources) else _empty_energy()
    cut = data_cut(now)
    newest = newest_ends(con, list(apis), cut) if spans and apis else {}
    judged = {i: judged_until(api, newest.get(i), cut) for i, api in apis.items()}
    return _Raw(site_id, site_name, timezone, period, sources, spans, energy, judged)


def _report(raw: _Raw) -> KpiReport:
    """Shape and compute, with no connection: up to 1,827 days of Polars work need not hold the file."""
    site_id, site_name, timezone, period = raw.site_id, raw.site_name, raw.timezone, raw.period
    sources, spans, energy = raw.sources, raw.spans, raw.energy
    days = pl.DataFrame(
        {
            "day_start": [s.start for s in spans],
            "day": [s.day for s in spans],
        },
        schema={"day_start": pl.Datetime("us", "UTC"), "day": pl.Date},
    )
    # Each source is expected up to how far its data could have arrived (core.analytics.availability), day by day.
    expected_by = pl.DataFrame(
        [
            (source_id, span.day, span.seconds_before(raw.judged_until.get(source_id, span.end)))
            for source_id in sources["source_id"]
            for span in spans
        ],
        schema={"source_id": pl.Int64, "day": pl.Date, "source_expected_s": pl.Int64},
        orient="row",
    )
    rows = (
        energy.with_columns(pl.col("day_start").dt.convert_time_zone("UTC"))
        .join(days, on="day_start", how="inner")
        .join(sources, on="source_id", how="inner")
        .join(expected_by, on=["source_id", "day"], how="left")
        .with_columns(
            (pl.col("energy_wh") / 1000.0).alias("energy_kwh"),
            (pl.col("charge_wh") / 1000.0).alias("charge_kwh"),
            (pl.col("discharge_wh") / 1000.0).alias("discharge_kwh"),
            pl.min_horizontal(pl.col("covered_s").fill_null(0), pl.col("source_expected_s")).alias("covered_s"),
        )
        .with_columns(
            (pl.col("energy_kwh") * pl.col("intensity")).alias("co2_g"),
            (pl.col("energy_kwh") * pl.col("price") / 1000.0).alias("cost"),
        )
    )
    configured = _configured(sources)
    per_source = _role_sums(rows, ["source_id"])
    per_source = sources.join(per_source, on=["source_id", "role"], how="left").fill_null(0)
    period_totals = {r["role"]: r for r in _role_sums(rows, []).iter_rows(named=True)}
    kpis = compute_kpis(_flows(period_totals, configured, _parts(per_source)))

    expected = dict(expected_by.group_by("source_id").agg(pl.col("source_expected_s").sum()).iter_rows())
    coverage = tuple(
        SourceCoverage(r["source_id"], r["name"], int(r["covered_s"]), int(expected.get(r["source_id"], 0)))
        for r in per_source.iter_rows(named=True)
    )
    total_expected = sum(c.expected_s for c in coverage)
    share = min(1.0, sum(c.covered_s for c in coverage) / total_expected) if total_expected else None
    end = spans[-1].end if spans else None
    judged = min(raw.judged_until.values(), default=None)
    return KpiReport(
        site_id=site_id,
        site_name=site_name,
        timezone=timezone,
        period=period,
        start=spans[0].start if spans else None,
        end=spans[-1].end if spans else None,
        so_far=bool(spans) and not spans[-1].whole,
        kpis=kpis,
        coverage=share,
        sources=coverage,
        daily=_daily_table(site_name, days, rows, configured, expected_by),
        judged_until=judged if judged is not None and end is not None and judged < end else None,
    )


def _daily_table(
    site_name: str,
    days: pl.DataFrame,
    rows: pl.DataFrame,
    configured: dict[str, tuple[float, float]],
    expected_by: pl.DataFrame,
) -> pl.DataFrame:
    """One row per local day: coverage and every KPI (null when undefined, or when the day has no data at all)."""
    by_day: dict[date, dict[str, dict[str, float]]] = defaultdict(dict)
    for r in _role_sums(rows, ["day"]).iter_rows(named=True):
        by_day[r["day"]][r["role"]] = r
    covered = dict(rows.group_by("day").agg(pl.col("covered_s").sum()).iter_rows())
    expected_on = dict(expected_by.group_by("day").agg(pl.col("source_expected_s").sum()).iter_rows())
    records = []
    for (day,) in days.select("day").iter_rows():
        day_covered, expected = covered.get(day, 0), expected_on.get(day, 0)
        values: dict[str, float | None] = dict.fromkeys(KPI_KEYS)
        if day_covered:
            values = {key: kpi.value for key, kpi in compute_kpis(_flows(by_day[day], configured)).items()}
        share = min(1.0, day_covered / expected) if expected else None
        records.append({"site": site_name, "day": day, "coverage_pct": None if share is None else 100.0 * share,
                        **values})  # fmt: skip
    schema = {"site": pl.String, "day": pl.Date, "coverage_pct": pl.Float64} | dict.fromkeys(KPI_KEYS, pl.Float64)
    return pl.DataFrame(records, schema=schema)


def site_kpis(store: Store, site_id: int, period: Period, now: datetime) -> KpiReport:
    """The site's KPIs over the period up to `now`, read in one short read-only connection and computed after it is
    closed."""
    with store.connect(read_only=True) as con:
        raw = _fetch(con, site_id, period, now)
    return _report(raw)


DAILY_HEADERS = {
    "coverage_pct": ("Coverage", "%"),
    "e_prod_kwh": ("Production (kWh)", KWH),
    "e_load_kwh": ("Consumption (kWh)", KWH),
    "e_imp_kwh": ("Grid import (kWh)", KWH),
    "e_exp_kwh": ("Grid export (kWh)", KWH),
    "e_self_kwh": ("Self-consumed (kWh)", KWH),
    "battery_discharge_kwh": ("Battery discharge (kWh)", KWH),
    "battery_charge_kwh": ("Battery charge (kWh)", KWH),
    "battery_net_kwh": ("Battery net (kWh)", KWH),
    "self_consumption": ("Self-consumption", SHARE),
    "self_sufficiency": ("Self-sufficiency", SHARE),
    "emissions_kg": ("Emissions (kg CO2)", KG_CO2),
    "co2_avoided_kg": ("CO2 avoided (kg)", KG_CO2),
    "import_cost": ("Import cost", COST),
    "export_revenue": ("Export revenue", COST),
    "savings": ("Savings", COST),
}


def daily_for_display(daily: pl.DataFrame, currency: str = "") -> pl.DataFrame:
    """The daily table as text with readable headers: shares in %, "-" where a KPI is undefined, costs headed with
    their currency.

    The downloads keep `daily` itself (numbers, nulls), which suits spreadsheets and notebooks better."""
    shown = {"Site": daily["site"], "Day": daily["day"].cast(pl.String)}
    for column, (header, unit) in DAILY_HEADERS.items():
        header += unit_label(unit, currency) if unit == COST else ""
        shown[header] = pl.Series([format_number(v, unit) for v in daily[column]], dtype=pl.String)
    return pl.DataFrame(shown)
