"""Alerts: what the collector's rules found, filtered by site, status, rule and time; acknowledged from here.

The rules and their lifecycle live in `core.analytics.alert_rules` and `core.analytics.alerts`; the collector evaluates
them after each poll. Downloads carry the rows of the `v_alerts` view (UTC and site-local times), not the text shown.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import streamlit as st

from core.actors import Permission
from core.analytics import alerts as al
from core.analytics.alert_rules import Rule, Thresholds, rule_explanations
from ui.context import can, flash, get_runtime, page_guard, run_safely, show_flashes
from ui.widgets import choose_site, download_buttons

REFRESH_S = 30  # how long the page keeps the alerts it read; acknowledging clears it at once
PERIODS: dict[str, timedelta | None] = {
    "Last 24 hours": timedelta(days=1),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "Last 365 days": timedelta(days=365),
    "All time": None,
}
STATUS_CHOICES = {"open": "Open", "acknowledged": "Acknowledged", "resolved": "Resolved", "all": "All"}

# How a severity looks: a Markdown colour with a Material icon (drawn with Streamlit's own font: emoji showed as
# empty boxes where no emoji font is installed), and the table's tag colour, Streamlit's shade of the same colour
# given as such (a colour's name tints the tag so lightly that red and orange look alike).
SEVERITY_LOOK = {
    "critical": ("red", ":material/error:", "#ff4b4b"),
    "warning": ("orange", ":material/warning:", "#ffa421"),
    "info": ("blue", ":material/info:", "#1c83e1"),
}
SEVERITY_COLUMN = st.column_config.MultiselectColumn(
    "Severity",
    options=[al.severity_label(code) for code in al.SEVERITIES],
    color=[SEVERITY_LOOK[code][2] for code in al.SEVERITIES],
)


def _severity_mark(code: str) -> str:
    """The severity in Markdown: its icon in its colour, then its name ("critical")."""
    colour, icon, _tag = SEVERITY_LOOK.get(code, ("gray", ":material/help:", ""))
    return f":{colour}[{icon}] {code}"


@st.cache_data(ttl=REFRESH_S, show_spinner=False)
def _alerts(database: str, site_id: int | None, since: str | None) -> pl.DataFrame:
    """`database` keys the cache by file; `since` is an ISO instant rounded to the minute, so reruns share it."""
    return al.load_alerts(get_runtime().store, site_id, datetime.fromisoformat(since) if since else None)


@st.cache_data(ttl=REFRESH_S, show_spinner=False)
def _last_evaluated(database: str) -> datetime | None:
    return al.last_evaluated(get_runtime().store)


def _acknowledge() -> None:
    ids = st.session_state.get("al_ack_ids", [])
    changed = run_safely(al.acknowledge, get_runtime().store, ids, datetime.now(UTC))
    if changed is None:
        return
    _alerts.clear()
    st.session_state["al_ack_ids"] = []
    if changed:
        flash(f"{changed} alert(s) acknowledged.")
    else:
        flash("Nothing to acknowledge: those alerts were resolved or acknowledged meanwhile.", ":material/info:")


def _ago(moment: datetime, now: datetime) -> str:
    minutes = (now - moment).total_seconds() / 60
    if minutes < 1:
        return "less than a minute ago"
    if minutes < 120:
        return f"{minutes:.0f} min ago"
    return f"{minutes / 60:.1f} h ago" if minutes < 48 * 60 else f"{minutes / 1440:.0f} days ago"


def _freshness(database: str, now: datetime) -> None:
    evaluated = _last_evaluated(database)
    if evaluated is None:
        st.info(
            "The rules have not been evaluated yet: the collector evaluates them after each poll (`make run` starts"
            " it).",
            icon=":material/info:",
        )
    else:
        st.caption(f"Rules last evaluated by the collector {_ago(evaluated, now)}.")


def _filters() -> tuple[int | None, str, list[str], timedelta | None] | None:
    columns = st.columns([2, 1, 2, 1])
    with columns[0]:
        site = choose_site("al_site")
        every_site = st.toggle("All sites", key="al_all_sites")
    if site is None:
        return None
    status = columns[1].selectbox(
        "Status", list(STATUS_CHOICES), format_func=STATUS_CHOICES.__getitem__, key="al_status"
    )
    rules = columns[2].multiselect(
        "Rules",
        [rule.value for rule in Rule],
        format_func=lambda r: Rule(r).label,
        key="al_rules",
        placeholder="All rules",
    )
    period = columns[3].selectbox("Active in", list(PERIODS), index=1, key="al_period")
    return (None if every_site else site.id), status, rules, PERIODS[period]


def _counts(frame: pl.DataFrame) -> None:
    counts = al.status_counts(frame)
    columns = st.columns(len(counts))
    for column, (status, count) in zip(columns, counts.items(), strict=True):
        column.metric(STATUS_CHOICES[status], count, border=True)


def _acknowledge_form(frame: pl.DataFrame) -> None:
    choices = al.acknowledge_choices(frame)
    if not choices:
        return
    choice, button = st.columns([4, 1], vertical_alignment="bottom")
    selected = choice.multiselect(
        "Open alerts to acknowledge",
        list(choices),
        format_func=choices.__getitem__,
        key="al_ack_ids",
        placeholder="Choose alerts",
    )
    button.button(
        "Acknowledge selected",
        on_click=_acknowledge,
        disabled=not selected or not can(Permission.ACKNOWLEDGE),
        icon=":material/done_all:",
        key="al_ack",
        help="An acknowledged alert stays acknowledged until its condition is gone; then it is resolved.",
    )


def _explanations(th: Thresholds) -> None:
    with st.expander("How the rules work (with the current thresholds)"):
        for rule, text in rule_explanations(th).items():
            st.markdown(f"**{rule.label}** ({_severity_mark(rule.severity)}, `{rule.value}`): {text}")
        st.caption(
            "Thresholds are settings (`DATACONN_ALERT_*` environment variables, see the README). An alert opens when"
            " its rule fires, stays open (or acknowledged) while it keeps firing and is resolved once the data shows"
            " the condition is gone; a later occurrence opens a new alert. Times are in each site's time zone."
        )


st.title("Alerts")
show_flashes()
with page_guard():
    runtime = get_runtime()
    database = str(runtime.settings.db_path)
    now = datetime.now(UTC)
    chosen = _filters()
    if chosen is not None:
        site_id, status, rules, period = chosen
        since = (now - period).replace(second=0, microsecond=0).isoformat() if period is not None else None
        frame = al.filter_alerts(_alerts(database, site_id, since), "all", rules)
        _freshness(database, now)
        _counts(frame)
        shown = al.filter_alerts(frame, status, [])
        if shown.is_empty():
            st.success("No alert matches these filters.", icon=":material/check_circle:")
        else:
            st.dataframe(
                al.display_table(shown), hide_index=True, key="al_table", column_config={"Severity": SEVERITY_COLUMN}
            )
        download_buttons(shown, f"alerts-{status}", "al_download")
        _acknowledge_form(frame)
        _explanations(Thresholds.from_settings(runtime.settings))
