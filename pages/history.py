"""History: power, energy, the energy balance and the same period of earlier years, in the site's time zone.

Gaps are shown, never filled: lines break where a bucket has no data and bars leave a marked hole; the caption
gives the share of expected data present. Every chart's data can be downloaded as it is drawn.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from core.analytics.history import (
    MAX_COMPARISON_YEARS,
    ROLE_NAMES,
    History,
    Level,
    Resolution,
    YearComparison,
    check_range,
    load_history,
    load_year_comparison,
    series_groups,
    shift_back,
)
from core.analytics.power_units import power_scale
from core.catalog import catalog as cat
from core.localtime import site_today
from core.models import Site
from core.roles import Role
from ui.context import get_runtime, page_guard
from ui.typed_dates import commit_typed_dates
from ui.widgets import choose_site, download_buttons

# The site's roles keep one colour in every chart (the balance uses the same hues).
ROLE_COLORS = {
    ROLE_NAMES[Role.PRODUCTION]: "#ef6c00",
    ROLE_NAMES[Role.LOAD]: "#212121",
    ROLE_NAMES[Role.GRID_IMPORT]: "#e53935",
    ROLE_NAMES[Role.GRID_EXPORT]: "#1e88e5",
    ROLE_NAMES[Role.BATTERY]: "#43a047",
    ROLE_NAMES[Role.SOC]: "#8e24aa",
}
GAP_MARK = {"symbol": "x-thin-open", "size": 9, "color": "#9e9e9e", "line": {"width": 2}}


@st.cache_data(ttl=15, show_spinner=False)
def _catalog() -> cat.Catalog:
    return cat.load_catalog(get_runtime().store)


@st.cache_data(ttl=60, max_entries=32, show_spinner=False)
def _history(
    site_id: int, level: str, entity_id: int | None, resolution: str, first: date, last: date, minute: datetime
) -> History:
    store = get_runtime().store
    return load_history(store, site_id, Level(level), entity_id, Resolution(resolution), first, last, minute)


@st.cache_data(ttl=60, max_entries=32, show_spinner=False)
def _comparison(
    site_id: int,
    group_key: str,
    level: str,
    entity_id: int | None,
    resolution: str,
    first: date,
    last: date,
    years: int,
    minute: datetime,
) -> YearComparison:
    store = get_runtime().store
    return load_year_comparison(
        store, site_id, group_key, Level(level), entity_id, Resolution(resolution), first, last, years, minute
    )


# --- controls ------------------------------------------------------------------------------------------------


def _selection(site: Site, catalog: cat.Catalog) -> tuple[Level, int | None]:
    level = Level(
        st.radio(
            "Show",
            [lv.value for lv in Level],
            format_func=lambda v: {"site": "Whole site", "meter": "A meter", "source": "A source"}[v],
            horizontal=True,
            key="hist_level",
        )
    )
    if level == Level.METER:
        meters = {m.id: m for m in catalog.meters_of(site.id)}
        meter_id = st.selectbox(
            "Meter",
            list(meters),
            format_func=lambda i: f"{meters[i].name} ({meters[i].category.label})",
            key="hist_meter",
        )
        return level, meter_id
    if level == Level.SOURCE:
        sources = {s.id: s for s in catalog.sources_of_site(site.id)}
        names = {m.id: m.name for m in catalog.meters_of(site.id)}
        source_id = st.selectbox(
            "Source", list(sources), format_func=lambda i: f"{names[sources[i].meter_id]}: {sources[i].name}",
            key="hist_source",
        )  # fmt: skip
        return level, source_id
    return level, None


def _range(site: Site, now: datetime) -> tuple[Resolution, date | None, date | None]:
    today = site_today(now, site.timezone)
    left, right = st.columns([1, 2])
    options = [r.value for r in Resolution]
    chosen = left.selectbox(
        "Resolution", options, index=1, format_func=lambda v: Resolution(v).label.capitalize(), key="hist_resolution"
    )
    resolution = Resolution(chosen)
    commit_typed_dates()  # a range typed with the keyboard applies on Enter and Tab too
    picked = right.date_input(
        f"Dates (site time, {site.timezone})",
        value=(today - timedelta(days=6), today),
        min_value=shift_back(today, 30),
        max_value=today + timedelta(days=366),
        format="YYYY-MM-DD",
        key="hist_range",
    )
    dates = list(picked) if isinstance(picked, tuple | list) else [picked]
    first = dates[0] if dates else None
    last = dates[1] if len(dates) > 1 else None
    return resolution, first, last


# --- charts --------------------------------------------------------------------------------------------------


def _x(local: pl.Series, resolution: Resolution, by_category: bool) -> list[Any]:
    """Axis values in site time: dates for days and months, wall-clock times below a day.

    The night the clocks go back repeats an hour of wall-clock time; a time axis would fold those buckets onto each
    other, so such ranges use an ordered axis of labels that carry the UTC offset.
    """
    if resolution in (Resolution.DAY, Resolution.MONTH):
        return local.dt.date().to_list()
    if by_category:
        return local.dt.strftime("%d %b %H:%M %z").to_list()
    return local.dt.replace_time_zone(None).to_list()


def _layout(
    figure: go.Figure, y_title: str, by_category: bool, resolution: Resolution | None = None, **extra: Any
) -> go.Figure:
    settings: dict[str, Any] = {
        "margin": {"l": 10, "r": 10, "t": 30, "b": 10},
        "legend": {"orientation": "h", "y": -0.15},
        "yaxis_title": y_title,
        "hovermode": "x unified",
    }
    figure.update_layout(**(settings | extra))
    if by_category:
        figure.update_xaxes(type="category", nticks=8, tickangle=0)
    elif resolution == Resolution.MONTH:  # one tick a month, named, however short the range
        figure.update_xaxes(dtick="M1", tickformat="%b %Y")
    return figure


def _partial(frame: pl.DataFrame, now: datetime) -> list[bool]:
    """Per row, whether its bucket is still running at `now`: drawn as partial, never as a fall."""
    moment = now.astimezone(UTC)
    return [end.astimezone(UTC) > moment for end in frame["bucket_end_local"].to_list()]


PARTIAL_BAR = {"pattern_shape": "/", "opacity": 0.55}  # a bucket in progress: hatched and paler


def _gap_marks(figure: go.Figure, x: list[Any], missing: pl.Series) -> None:
    """Crosses on the zero line where a bar has no data, so a gap cannot pass for a zero."""
    points = [value for value, gap in zip(x, missing.to_list(), strict=True) if gap]
    if points:
        figure.add_trace(go.Scatter(x=points, y=[0] * len(points), mode="markers", marker=GAP_MARK, name="No data"))


def _series_chart(
    frame: pl.DataFrame,
    column: str,
    unit: str,
    kind: str,
    resolution: Resolution,
    by_category: bool,
    now: datetime,
    divisor: float = 1.0,
) -> go.Figure:
    """Lines or bars per series; values divided by `divisor` (a power chart's unit, `core.analytics.power_units`); a
    bar whose bucket is still running is hatched and says "so far"."""
    figure = go.Figure()
    names = frame["series"].unique(maintain_order=True).to_list()
    for name in names:
        rows = frame.filter(pl.col("series") == name)
        x = _x(rows["bucket_start_local"], resolution, by_category)
        values = [None if v is None else v / divisor for v in rows[column].to_list()]
        partial = _partial(rows, now)
        notes = [" so far" if p else "" for p in partial]
        coverage = rows["coverage_pct"].to_list()
        common = {"x": x, "y": values, "name": name, "customdata": list(zip(coverage, notes, strict=True))}
        template = f"%{{y:,.2f}} {unit}%{{customdata[1]}} (coverage %{{customdata[0]:.0f}} %)"
        color = ROLE_COLORS.get(name)
        if kind == "bar":
            marker = {
                "color": color,
                "pattern_shape": [PARTIAL_BAR["pattern_shape"] if p else "" for p in partial],
                "opacity": [PARTIAL_BAR["opacity"] if p else 1.0 for p in partial],
            }
            figure.add_trace(go.Bar(**common, hovertemplate=template, marker=marker))
        else:
            # Small markers too: a bucket with data between two gaps has no line to draw and would vanish.
            figure.add_trace(
                go.Scatter(
                    **common, mode="lines+markers", marker_size=3, connectgaps=False, hovertemplate=template,
                    line_color=color,
                )
            )  # fmt: skip
    if kind == "bar" and names:
        per_bucket = frame.group_by("bucket_start_utc", maintain_order=True).agg(
            pl.first("bucket_start_local"), pl.col(column).is_null().any().alias("missing")
        )
        _gap_marks(figure, _x(per_bucket["bucket_start_local"], resolution, by_category), per_bucket["missing"])
    return _layout(figure, unit, by_category, resolution, barmode="group")


def _balance_chart(balance: pl.DataFrame, resolution: Resolution, by_category: bool, now: datetime) -> go.Figure:
    x = _x(balance["bucket_start_local"], resolution, by_category)
    partial = _partial(balance, now)
    hatch = {
        "pattern_shape": [PARTIAL_BAR["pattern_shape"] if p else "" for p in partial],
        "opacity": [PARTIAL_BAR["opacity"] if p else 1.0 for p in partial],
    }
    figure = go.Figure()
    # Sources of the energy used on site stack above zero; energy leaving (export, charging) stacks below.
    for column, name, sign, color in (
        ("self_consumed_kwh", "Self-consumed PV", 1, "#f9a825"),
        ("imported_kwh", "Grid import", 1, "#e53935"),
        ("battery_discharge_kwh", "Battery discharge", 1, "#43a047"),
        ("exported_kwh", "Grid export", -1, "#1e88e5"),
        ("battery_charge_kwh", "Battery charge", -1, "#8e24aa"),
    ):
        y = (balance[column] * sign).to_list()
        figure.add_trace(go.Bar(x=x, y=y, name=name, marker=hatch | {"color": color}, hovertemplate="%{y:,.2f} kWh"))
    for column, name, dash in (("load_kwh", "Load", "solid"), ("production_kwh", "Production", "dot")):
        figure.add_trace(
            go.Scatter(
                x=x, y=balance[column].to_list(), name=name, mode="lines", connectgaps=False,
                line={"color": "#212121" if column == "load_kwh" else "#ef6c00", "dash": dash},
                hovertemplate="%{y:,.2f} kWh",
            )
        )  # fmt: skip
    # A metered flow without (complete) data is a gap; an unmetered grid flow is unknown everywhere, not a gap.
    _gap_marks(figure, x, balance["has_gap"])
    return _layout(figure, "kWh (export and charge below zero)", by_category, resolution, barmode="relative")


def _comparison_chart(frame: pl.DataFrame, column: str, unit: str, resolution: Resolution) -> go.Figure:
    figure = go.Figure()
    for period in frame["period"].unique(maintain_order=True).to_list():
        rows = frame.filter(pl.col("period") == period)
        figure.add_trace(
            go.Scatter(
                x=rows["position"].to_list(), y=rows[column].to_list(), name=period, mode="lines+markers",
                connectgaps=False, customdata=rows["first_day"].cast(pl.String).to_list(),
                hovertemplate=f"%{{customdata}}: %{{y:,.2f}} {unit}",
            )
        )  # fmt: skip
    position = "Day" if resolution == Resolution.DAY else "Month"
    figure = _layout(figure, unit, False, xaxis_title=f"{position} of the period", hovermode="closest")
    return figure.update_xaxes(dtick=1, tick0=1)  # positions are whole days or months


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _show(figure: go.Figure, frame: pl.DataFrame, name: str, key: str) -> None:
    st.plotly_chart(figure, key=f"hist_chart_{key}")
    download_buttons(frame, name, key=f"hist_dl_{key}")


# --- page ----------------------------------------------------------------------------------------------------


def _render() -> None:
    site = choose_site("hist_site")
    if site is None:
        return
    now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0)
    catalog = _catalog()
    level, entity_id = _selection(site, catalog)
    resolution, first, last = _range(site, now)
    if first is None or last is None:
        st.info("Pick the last day of the range too.", icon=":material/date_range:")
        return
    problems = check_range(first, last, resolution, site.timezone, now)
    for problem in problems:
        st.error(problem, icon=":material/error:")
    if problems:
        return
    if level != Level.SITE and entity_id is None:
        st.info(f"This site has no {level.value} yet.", icon=":material/info:")
        return
    data = _history(site.id, level.value, entity_id, resolution.value, first, last, minute)
    if not data.groups:
        st.info("Nothing to show: this selection has no data sources.", icon=":material/info:")
        return
    coverage = "-" if data.coverage_pct is None else f"{data.coverage_pct:.1f} %"
    days = f"{first}" if first == last else f"{first} to {last}"
    st.caption(
        f"{days}, times in {site.timezone}. Data coverage over the range: {coverage} of the expected data. Gaps are"
        " breaks in the lines and crosses under the bars; nothing is filled in or interpolated. A series of several"
        " sources is a gap where any of them has no data: a partial sum never shows as the total."
    )
    by_category = bool(data.balance["bucket_start_local"].dt.replace_time_zone(None).is_duplicated().any())
    if by_category:
        st.caption("The clocks went back in this range: the axis lists each bucket with its UTC offset.")
    stem = f"{site.name}-{resolution.value}-{first}-{last}"
    times = ["series", "bucket_start_local", "bucket_end_local"]
    power = data.series.filter(~pl.col("percent")).select(*times, "power_w", "coverage_pct")
    if not power.is_empty():
        st.subheader("Power")
        divisor, unit = power_scale(power["power_w"].to_list())  # one unit for the chart, as on Live
        figure = _series_chart(power, "power_w", unit, "line", resolution, by_category, minute, divisor)
        _show(figure, power, f"{stem}-power", "power")
        energy = data.series.filter(~pl.col("percent")).select(*times, "energy_kwh", "coverage_pct", "bucket_start_utc")
        st.subheader("Energy")
        figure = _series_chart(energy, "energy_kwh", "kWh", "bar", resolution, by_category, minute)
        _show(figure, energy.drop("bucket_start_utc"), f"{stem}-energy", "energy")
    soc = data.series.filter(pl.col("percent")).select(*times, "soc_pct", "coverage_pct")
    if not soc.is_empty():
        st.subheader("State of charge")
        _show(_series_chart(soc, "soc_pct", "%", "line", resolution, by_category, minute), soc, f"{stem}-soc", "soc")
    st.subheader("Energy balance of the site")
    basis = data.balance["load_basis"][0] if data.balance.height else "-"
    st.caption(f"Self-consumed = production - export. Battery net > 0 is a discharge. Load: {basis}.")
    if data.unmetered:
        flows = " and ".join(name.lower() for name in data.unmetered)
        st.caption(f"This site has no source for {flows}: those flows, and what depends on them, are unknown.")
    _show(_balance_chart(data.balance, resolution, by_category, minute), data.balance, f"{stem}-balance", "balance")
    _comparison_section(site, level, entity_id, resolution, first, last, minute)


def _comparison_section(
    site: Site, level: Level, entity_id: int | None, resolution: Resolution, first: date, last: date,
    minute: datetime,
) -> None:  # fmt: skip
    st.subheader("Same period in earlier years")
    compared = resolution if resolution in (Resolution.DAY, Resolution.MONTH) else Resolution.DAY
    groups = {g.key: g for g in series_groups(_catalog(), site.id, level, entity_id)}
    left, right = st.columns([2, 1])
    key = left.selectbox("Series", list(groups), format_func=lambda k: groups[k].name, key="hist_cmp_series")
    years = int(right.number_input("Years back", 1, MAX_COMPARISON_YEARS, 2, key="hist_cmp_years"))
    if key is None:
        return
    result = _comparison(site.id, key, level.value, entity_id, compared.value, first, last, years, minute)
    column, unit = ("soc_pct", "%") if groups[key].percent else ("energy_kwh", "kWh")
    note = " (compared per day)" if compared != resolution else ""
    st.caption(
        f"The same local dates shifted back year by year, aligned by position in the period{note}; a Feb 29 has no"
        " counterpart in other years."
    )
    if result.without_data:  # one line, however many years
        st.info(f"No data for {_listed(result.without_data)}.", icon=":material/info:")
    frame = result.frame.select("period", "years_back", "position", "first_day", "last_day", column, "coverage_pct")
    _show(_comparison_chart(frame, column, unit, compared), frame, f"{site.name}-{groups[key].name}-years", "years")


st.title("History")
with page_guard():
    _render()
