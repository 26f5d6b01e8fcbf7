"""KPIs: a site's energy, shares, carbon and money figures for a period of local days, each with its formula."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import streamlit as st

from core import localtime
from core.analytics import kpis
from core.analytics.kpi_formulas import SHARE, Kpi, format_number, format_value, unit_label
from core.models import Site
from ui.context import get_runtime, page_guard
from ui.markdown import escape_markdown
from ui.typed_dates import commit_typed_dates
from ui.widgets import choose_site, download_buttons

GROUPS = (
    ("Energy", ("e_prod_kwh", "e_load_kwh", "e_imp_kwh", "e_exp_kwh", "e_self_kwh")),
    ("Battery", ("battery_discharge_kwh", "battery_charge_kwh", "battery_net_kwh")),
    ("Shares", ("self_consumption", "self_sufficiency")),
    ("Carbon", ("emissions_kg", "co2_avoided_kg")),
    ("Money", ("import_cost", "export_revenue", "savings")),
)
TILES_PER_ROW = 5


@st.cache_data(ttl=60, show_spinner=False)
def _report(site_id: int, first_day: date, last_day: date, cut: datetime) -> kpis.KpiReport:
    # Keyed by the quarter-hour cut, not by `now`: a rerun within the quarter reuses the result for a minute.
    return kpis.site_kpis(get_runtime().store, site_id, kpis.Period(first_day, last_day), cut)


def _choose_period(today: date) -> kpis.Period | None:
    preset = st.radio("Period", kpis.PRESETS, index=kpis.PRESETS.index("This month"), horizontal=True, key="kpi_period")
    if preset != "Custom":
        return kpis.preset_period(preset, today)
    commit_typed_dates()  # a date typed in either field applies on Enter and Tab too
    left, right = st.columns(2)
    # Wide bounds on purpose: a range in the future or longer than 5 years gets a message saying why, not a
    # date picker that silently refuses the click.
    lowest, highest = date(today.year - 30, 1, 1), date(today.year + 1, 12, 31)
    first = left.date_input(
        "From (site time)", value=today.replace(day=1), min_value=lowest, max_value=highest, key="kpi_from"
    )
    last = right.date_input("To (site time)", value=today, min_value=lowest, max_value=highest, key="kpi_to")
    problem = kpis.period_problem(first, last, today)
    if problem:
        st.error(problem, icon=":material/event_busy:")
        return None
    return kpis.Period(first, last)


def _tile(kpi: Kpi) -> None:
    # The unit goes in the label so that a large value still fits its tile.
    currency = get_runtime().settings.currency
    st.metric(f"{kpi.name}{unit_label(kpi.unit, currency)}", format_number(kpi.value, kpi.unit))
    with st.expander(f"{kpi.name}: formula"):
        st.markdown(f"`{kpi.formula}`")
        if kpi.note:
            st.caption(kpi.note)
        if kpi.inputs:
            lines = [f"- {escape_markdown(q.name)} = {format_value(q.value, q.unit, currency)}" for q in kpi.inputs]
            st.markdown("\n".join(lines))


def _coverage(report: kpis.KpiReport) -> None:
    if report.coverage is None:
        st.info("Nothing to measure yet: the site has no energy source, or the period has not begun.")
        return
    if report.coverage < 1.0:
        shares = {s.name: s.share for s in report.sources}
        by_source = ""
        if len(set(shares.values())) > 1:  # name the sources only when they differ
            gaps = ", ".join(
                f"{escape_markdown(name)} {format_value(share, SHARE)}" for name, share in shares.items() if share != 1
            )
            by_source = f" (by source: {gaps})"
        judged = ""
        if report.judged_until is not None:  # the newest quarter hours could not have arrived yet
            judged = f" up to {report.judged_until.astimezone(ZoneInfo(report.timezone)):%H:%M}"
        st.warning(
            f"Data incomplete: the sources report {format_value(report.coverage, SHARE)} of the period{judged}"
            f"{by_source}. The KPIs cover only the data received.",
            icon=":material/warning:",
        )


def _caption(report: kpis.KpiReport) -> str:
    period = report.period
    days = f"{period.first_day}" if period.days == 1 else f"{period.first_day} to {period.last_day}"
    text = f"{days} in {report.timezone}"
    if report.so_far and report.end is not None:
        text += f", so far (up to {report.end.astimezone(ZoneInfo(report.timezone)):%H:%M} today)"
    return text


def _render(site: Site) -> None:
    now = datetime.now(UTC)
    period = _choose_period(localtime.site_today(now, site.timezone))
    if period is None:
        return
    report = _report(site.id, period.first_day, period.last_day, localtime.data_cut(now))
    st.caption(_caption(report))
    _coverage(report)
    for title, keys in GROUPS:
        st.subheader(title)
        for column, key in zip(st.columns(TILES_PER_ROW), keys, strict=False):
            with column:
                _tile(report.kpis[key])
    st.subheader("Per day")
    st.caption("Energies in kWh, carbon in kg CO2, money in the currency of the sources' prices; - is undefined.")
    st.dataframe(kpis.daily_for_display(report.daily, get_runtime().settings.currency), hide_index=True)
    download_buttons(report.daily, f"kpis-{site.name}-{period.first_day}-{period.last_day}", key="kpi_daily")


with page_guard():
    st.title("KPIs")
    chosen = choose_site("kpi_site")
    if chosen is not None:
        _render(chosen)
