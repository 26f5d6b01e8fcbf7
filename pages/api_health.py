"""API Health: how polling goes per provider account and per source, and a coverage heatmap that shows gaps.

The figures and their definitions live in `core.analytics.api_health`, `core.analytics.api_accounts` and
`core.analytics.coverage`; their display rules in `core.analytics.api_health_display`. A warning at the top lists what
the collector put in quarantine (`core.store.quarantine`). Downloads carry the typed figures (UTC instants, numbers),
not the text shown.
"""

from __future__ import annotations

from datetime import UTC, datetime

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from core.analytics.api_health import LOOKBACK, NEEDS_ATTENTION, STATUS_LABELS, STATUS_MARKS, Health, load_health
from core.analytics.api_health_display import (
    account_table,
    mqtt_table,
    pushed_table,
    quarantine_table,
    quarantine_warning,
    source_table,
    status_counts,
    stream_table,
)
from core.analytics.coverage import DEFAULT_DAYS, heatmap, load_coverage
from core.models import Site
from ui.context import get_runtime, page_guard
from ui.widgets import choose_site, download_buttons

REFRESH_S = 30  # how long the page keeps the figures it read
DAY_CHOICES = (7, 14, DEFAULT_DAYS, 62, 92)
# Red for a day without data, through amber, to green for a complete day; days before a source's first reading
# (nothing expected) stay blank.
COVERAGE_COLORS = [[0.0, "#c62828"], [0.5, "#f9a825"], [0.9, "#c0ca33"], [1.0, "#2e7d32"]]


@st.cache_data(ttl=REFRESH_S, show_spinner=False)
def _health(database: str) -> Health:
    """Every figure at the time of reading. `database` keys the cache by file, so two databases never share one."""
    runtime = get_runtime()
    return load_health(runtime.store, runtime.box, datetime.now(UTC), enphase_plan=runtime.settings.enphase_plan)


@st.cache_data(ttl=5 * 60, show_spinner=False)
def _coverage(database: str, site_id: int, days: int) -> pl.DataFrame:
    return load_coverage(get_runtime().store, datetime.now(UTC), days=days, site_id=site_id)


def _quarantine(health: Health) -> None:
    """What the collector moved aside because it could not use it, until the operator removes it."""
    warning = quarantine_warning(health.quarantine)
    if warning is None:
        return
    st.warning(warning, icon=":material/warning:")
    table = quarantine_table(health.quarantine)
    if table.height:
        st.dataframe(table, hide_index=True, key="ah_quarantine_table")


def _summary(health: Health) -> None:
    """Fleet-wide counts, so a problem at another site shows before picking it."""
    statuses = health.sources["status"]
    attention = int(statuses.is_in(NEEDS_ATTENTION).sum())
    columns = st.columns(4)
    columns[0].metric("Sources polled", int((statuses != "off").sum()), border=True)
    columns[1].metric("OK", int((statuses == "ok").sum()), border=True)
    columns[2].metric("Needing attention", attention, border=True)
    columns[3].metric("Provider accounts", health.accounts.height, border=True)
    _status_badges(health)
    if attention:
        sites = (
            health.sources.filter(pl.col("status").is_in(NEEDS_ATTENTION))
            .group_by("site")
            .len()
            .sort("len", "site", descending=[True, False])
        )
        st.caption("Sites needing attention: " + ", ".join(f"{site} ({n})" for site, n in sites.iter_rows()))


def _status_badges(health: Health) -> None:
    """Sources per status, most urgent first: a badge each, its label in words beside a Material icon and a colour
    (never emoji, which show as empty boxes without an emoji font)."""
    marks = {STATUS_LABELS[code]: mark for code, mark in STATUS_MARKS.items()}
    badges = [
        f":{marks[label][1]}-badge[{marks[label][0]} {label}: {n}]"
        for label, n in status_counts(health.sources).items()
    ]
    if badges:
        st.markdown(" ".join(badges))


def _accounts(health: Health) -> None:
    st.subheader("Provider accounts")
    st.caption(
        "One row per budget: a SolarEdge API key, an Enphase application, or the built-in simulator. Poll figures"
        " count each poll of a vendor site once, over the last 24 h; quota today is the vendor's UTC day."
    )
    st.dataframe(
        account_table(health.accounts, health.now), hide_index=True, column_config=ACCOUNT_HELP, key="ah_accounts_table"
    )
    download_buttons(health.accounts, "api-health-accounts", key="ah_accounts_download")


def _sources(health: Health, site: Site) -> None:
    st.subheader("Sources")
    st.caption(f"Times in the site's time zone ({site.timezone}). Hover a column header for its meaning.")
    frame = health.sources.filter(pl.col("site_id") == site.id)
    st.dataframe(source_table(frame, health.now), hide_index=True, column_config=SOURCE_HELP, key="ah_sources_table")
    download_buttons(frame, f"api-health-sources-{site.name}", key="ah_sources_download")


def _pushed(health: Health, site: Site) -> None:
    """Push (HTTP) sources: what the ingest service took and refused (they are not polled, so the table above has
    no poll figures for them)."""
    if health.pushed is None:
        return
    frame = health.pushed.filter(pl.col("site_id") == site.id)
    if frame.is_empty():
        return
    st.subheader("Pushed readings")
    st.caption(
        "Requests to the push endpoint over the last 15 minutes, as the ingest service counts them; a refusal shows"
        " its reason (wrong token, rows refused, rate limit ...)."
    )
    st.dataframe(pushed_table(frame, health.now), hide_index=True, key="ah_pushed_table")


def _mqtt(health: Health, site: Site) -> None:
    """MQTT sources: the collector's connection to each one's broker (they are not polled either)."""
    if health.mqtt is None:
        return
    frame = health.mqtt.filter(pl.col("site_id") == site.id)
    if frame.is_empty():
        return
    st.subheader("MQTT devices")
    st.caption(
        "The collector's connection to each source's broker, as it wrote it a few seconds ago: connecting or refused"
        " says why; messages are counted over the last minute, and a message without a number at the payload path"
        " counts as a payload error (the newest reason is shown)."
    )
    st.dataframe(mqtt_table(frame, health.now), hide_index=True, key="ah_mqtt_table")


def _streams(health: Health, site: Site) -> None:
    """Enphase sources set to stream: the collector's live stream of their system."""
    if health.streams is None:
        return
    frame = health.streams.filter(pl.col("site_id") == site.id)
    if frame.is_empty():
        return
    st.subheader("Live streams")
    st.caption(
        "Enphase's live stream of each source's system, as the collector wrote it a few seconds ago: open while someone"
        " watches the site on Live (when the source allows it) or on its schedule; each stream opened is one call of"
        " the plan and lasts 5 minutes. Waiting or refused says why; frames are counted over the last minute."
    )
    st.dataframe(stream_table(frame, health.now), hide_index=True, key="ah_streams_table")


def _coverage_map(site: Site) -> None:
    st.subheader("Coverage")
    days = st.columns([1, 3])[0].select_slider("Days", options=DAY_CHOICES, value=DEFAULT_DAYS, key="ah_days")
    frame = _coverage(str(get_runtime().settings.db_path), site.id, days)
    if frame.is_empty():
        st.info("This site has no sources yet.", icon=":material/info:")
        return
    labels, dates, values, texts = heatmap(frame)
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=[f"{d:%d %b}" for d in dates],
            y=labels,
            text=texts,
            customdata=[[f"{d:%a %Y-%m-%d}" for d in dates] for _ in labels],
            zmin=0,
            zmax=100,
            colorscale=COVERAGE_COLORS,
            xgap=1,
            ygap=1,
            colorbar={"title": {"text": "coverage %"}},
            hovertemplate="%{y}<br>%{customdata}: %{text}<extra></extra>",
        )
    )
    figure.update_layout(
        height=120 + 28 * len(labels),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        yaxis={"autorange": "reversed"},
        xaxis={"type": "category", "title": f"local day ({site.timezone})"},
    )
    st.plotly_chart(figure, key="ah_coverage_chart")
    st.caption(
        "Received = intervals of the local day the vendor answered, with or without a value (SolarEdge reports"
        " PV as null at night: answered, not missing); expected = the day's length (23 or 25 h on DST days) from the"
        " source's first reading on, up to now."
    )
    download_buttons(frame, f"coverage-{site.name}-{days}d", key="ah_coverage_download")


SOURCE_HELP = {
    "Status": st.column_config.TextColumn(
        help="Stopped, circuit open, rate limited, failing, overdue (no poll for the source's whole update period"
        " and its jitter: 1 h 8 min at 1 hour, 6 h 38 min at 6 h), first poll pending, API off, or OK."
    ),
    "Last success": st.column_config.TextColumn(
        help=f"Newest successful poll (looked for over the last {LOOKBACK.days} days)."
    ),
    "Last error": st.column_config.TextColumn(help="Outcome, HTTP status and message of the newest failed poll."),
    "Success % 24 h": st.column_config.TextColumn(help="Successful polls / polls over the last 24 h."),
    "p50 ms": st.column_config.TextColumn(help="Median poll duration over the last 24 h, failed polls included."),
    "p95 ms": st.column_config.TextColumn(help="95th percentile of poll duration over the last 24 h."),
    "429s 24 h": st.column_config.NumberColumn(help="Polls refused for a rate limit (vendor 429 or our budget)."),
    "Quota today (UTC)": st.column_config.TextColumn(help="Vendor calls of the account today (UTC) / daily budget."),
    "Quota this month": st.column_config.TextColumn(help="Vendor calls of the account this month / monthly budget."),
    "Token expiry": st.column_config.TextColumn(help="Enphase access token (renewed automatically when polled)."),
    "Refresh token expiry": st.column_config.TextColumn(
        help="Enphase refresh token: after it, the owner must authorise again in Data Connections."
    ),
    "Next poll": st.column_config.TextColumn(help="When the collector polls next, and what decides it."),
}
ACCOUNT_HELP = {
    "Queued": st.column_config.NumberColumn(
        help="Vendor calls waiting now for their turn under the account's per-minute limit (the collector paces"
        " them, sites taking turns); '-' when the collector reported no queue in the last 3 minutes."
    ),
    "Wait p95": st.column_config.TextColumn(
        help="95th percentile of how long the account's calls waited for their turn over the last 15 minutes."
    ),
}


st.title("API Health")
with page_guard():
    health = _health(str(get_runtime().settings.db_path))
    _quarantine(health)
    _summary(health)
    _accounts(health)
    site = choose_site("ah_site")
    if site is not None:
        _sources(health, site)
        _pushed(health, site)
        _mqtt(health, site)
        _streams(health, site)
        _coverage_map(site)
