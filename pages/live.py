"""Live: a site's power flow now, the newest reading of every source with its age, and the last hours of power.

Everything under the site picker is a fragment that reruns itself every `CHECK_S` seconds: only the fragment
reloads, not the page. A rerun reads the database only when one of the site's sources has a new change mark
(a reading arrived: core.store.change_marks) or `DATACONN_LIVE_REFRESH_S` has passed; otherwise it shows the same
snapshot with its ages moved on, and the newest frames of a live stream (files beside the database) over it. While
it follows, it also leaves watch marks, so the collector streams an Enphase source that allows it. Definitions (as
of, age, stale) live in `core.analytics.live`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
import polars as pl
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from core.analytics import live
from core.analytics.live import FLOW_LABELS, LiveSnapshot, SourceLive, Status
from core.analytics.power_units import power_scale
from core.roles import Role
from ui.context import get_runtime, page_guard
from ui.identity import session_lapsed
from ui.markdown import escape_markdown
from ui.widgets import choose_site, download_buttons

_STATUS_STYLE = {
    Status.STALE: "background-color: rgba(255, 165, 0, 0.25)",
    Status.NO_DATA: "color: gray",
    Status.NO_API: "color: gray",
}


CHECK_S = 1.5  # how often the panel looks at the change marks: a new reading shows within about this long


@st.cache_data(ttl=3600, max_entries=64, show_spinner=False)
def load_snapshot(database: str, site_id: int, tick: int, mark: int | None) -> LiveSnapshot:
    """The site now. `database` keys the cache by file, so two databases never share an entry; `tick` numbers the
    refresh period and `mark` is the sources' newest change mark, so a new reading or a new period reads again
    while the reruns between them, and several open tabs, share one read."""
    return live.live_snapshot(get_runtime().store, site_id, datetime.now(UTC))


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _battery_direction(watts: float) -> str:
    return "discharging" if watts > 0 else "charging" if watts < 0 else "idle"


# Two rows of three, so a value such as "118.25 kW" fits its tile: where power comes from, then where it goes.
_TILE_ROWS = (
    (Role.PRODUCTION, Role.GRID_IMPORT, Role.GRID_EXPORT),
    (Role.LOAD, Role.BATTERY, Role.SOC),
)


def flow_tiles(snapshot: LiveSnapshot) -> None:
    for row in _TILE_ROWS:
        for column, kind in zip(st.columns(len(row)), row, strict=True):
            _flow_tile(column, snapshot, kind)


def _flow_tile(column: DeltaGenerator, snapshot: LiveSnapshot, kind: Role) -> None:
    flow = snapshot.flow[kind]
    label = f"{FLOW_LABELS[kind]} (computed)" if flow.computed else FLOW_LABELS[kind]
    history = f"{kind.value}_w"
    # The last hours as a sparkline, only beside a current value (a stale tile shows "-" and why). st.metric takes
    # numbers only, so the buckets without data (gaps, or the one just begun) are left out of this small chart.
    recent = snapshot.recent
    sparkline = recent[history].drop_nulls().to_list() if flow.value is not None and history in recent else None
    with column:
        if kind is Role.BATTERY and flow.value is not None:
            st.metric(
                label,
                live.format_value(abs(flow.value), "W"),
                delta=_battery_direction(flow.value),
                delta_arrow="off",
                delta_color="off",
                help="Battery power: positive when discharging into the site, negative when charging.",
                chart_data=sparkline,
                border=True,
            )
        else:
            st.metric(
                label,
                live.format_value(flow.value, kind.unit),
                help=flow.note if flow.value is not None else None,
                chart_data=sparkline,
                border=True,
            )
        if flow.value is None:
            st.caption(escape_markdown(flow.note) if flow.note else "no current value")


def _local(moment: datetime | None, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else "-"


def sources_frame(snapshot: LiveSnapshot) -> pl.DataFrame:
    """The table as shown: one row per source, times in the site's zone."""
    zone = ZoneInfo(snapshot.site.timezone)
    return pl.DataFrame(
        {
            "Source": [s.source.name for s in snapshot.sources],
            "Meter": [s.meter.name for s in snapshot.sources],
            "Category": [s.meter.category.value for s in snapshot.sources],
            "Latest": [live.format_value(s.value, s.unit) for s in snapshot.sources],
            f"As of ({snapshot.site.timezone})": [
                _local(s.reading.as_of if s.reading else None, zone) for s in snapshot.sources
            ],
            "Age": [live.format_age(s.age) if s.age is not None else "-" for s in snapshot.sources],
            "Status": [s.status_text for s in snapshot.sources],
        },
        schema_overrides={"Source": pl.String, "Latest": pl.String, "Status": pl.String},
    )


def sources_export(snapshot: LiveSnapshot) -> pl.DataFrame:
    """The table's data for download: numbers and UTC times rather than their display text."""

    def row(s: SourceLive) -> dict[str, object]:
        reading = s.reading
        return {
            "source_id": s.source.id,
            "source": s.source.name,
            "meter": s.meter.name,
            "category": s.meter.category.value,
            "source_type": s.source.source_type,
            "value": reading.value if reading else None,
            "unit": s.unit,
            "interval_start_utc": reading.ts if reading else None,
            "interval_s": reading.interval_s if reading else None,
            "as_of_utc": reading.as_of if reading else None,
            "age_s": s.age.total_seconds() if s.age is not None else None,
            "cadence_min": s.cadence.total_seconds() / 60,
            "status": s.status_text,
        }

    return pl.DataFrame([row(s) for s in snapshot.sources], infer_schema_length=None)


def sources_table(snapshot: LiveSnapshot) -> None:
    frame = sources_frame(snapshot)
    if frame.is_empty():
        st.info("This site has no data sources yet: add them on the Data Connections page.", icon=":material/info:")
        return
    styles = [_STATUS_STYLE.get(s.status, "") for s in snapshot.sources]
    styled = frame.to_pandas().style.apply(lambda row: [styles[row.name]] * len(row), axis=1)
    st.dataframe(styled, hide_index=True)
    stale_after = ", ".join(
        sorted({f"{int(s.cadence.total_seconds() // 60) * live.STALE_FACTOR} min" for s in snapshot.sources})
    )
    st.caption(
        f"A source is stale when its newest reading is older than {live.STALE_FACTOR} x its update frequency "
        f"(here {stale_after}). Stale values are highlighted and never counted in the power flow above. "
        "Readings are as of the end of their interval. A reading without a value (e.g. SolarEdge PV at night) "
        'keeps its source current but shows "-" (no value reported); the flows it feeds show "-" too.'
    )
    download_buttons(sources_export(snapshot), f"live-sources-{snapshot.site.name}", key="live_sources_download")


def recent_chart(snapshot: LiveSnapshot) -> None:
    frame = snapshot.recent
    columns = [c for c in frame.columns if c != "bucket" and frame[c].null_count() < frame.height]
    hours = int(live.RECENT.total_seconds() // 3600)
    if not columns:
        st.info(f"No power readings in the last {hours} h.", icon=":material/info:")
        return
    local = frame.with_columns(pl.col("bucket").dt.convert_time_zone(snapshot.site.timezone).alias("time"))
    divisor, unit = power_scale(v for column in columns for v in frame[column].to_list())
    figure = go.Figure()
    for column in columns:
        kind = Role(column.removesuffix("_w"))
        computed = kind is Role.LOAD and snapshot.recent_load_computed
        name = f"{FLOW_LABELS[kind]} (computed)" if computed else FLOW_LABELS[kind]
        figure.add_trace(
            go.Scatter(
                x=local["time"].to_list(), y=(local[column] / divisor).to_list(), name=name, mode="lines",
                hovertemplate=f"%{{y:,.2f}} {unit}",
            )
        )  # fmt: skip
    figure.update_layout(
        height=300,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        yaxis_title=unit,
        xaxis_title=f"interval start ({snapshot.site.timezone})",
        legend={"orientation": "h"},
    )
    st.plotly_chart(figure, key="live_recent_chart")
    st.caption(
        f"Average power per {snapshot.recent_step_s // 60} minutes; battery positive when discharging. "
        "Gaps are intervals without data."
    )
    export = frame.select("bucket", *columns).rename({"bucket": "interval_start_utc"})
    download_buttons(export, f"live-power-{snapshot.site.name}", key="live_recent_download")


def live_panel(site_id: int, refresh_s: int, following: bool) -> None:
    if session_lapsed():  # this fragment reruns by itself, past the router's sign-in gate: let the gate speak
        st.rerun()
    with page_guard():
        runtime = get_runtime()
        tick = int(time.time() // refresh_s)
        watched = st.session_state.get(f"live_sources_{site_id}", [])  # the previous snapshot's sources
        if following and watched:
            live.watching(runtime.store, watched)  # an Enphase source that allows it streams while someone watches
        mark = live.change_mark(runtime.store, watched) if watched else None
        snapshot = load_snapshot(str(runtime.settings.db_path), site_id, tick, mark)
        ids = [s.source.id for s in snapshot.sources]
        st.session_state[f"live_sources_{site_id}"] = ids
        snapshot = live.with_stream_frames(snapshot, live.stream_frames(runtime.store, ids), datetime.now(UTC))
        zone = ZoneInfo(snapshot.site.timezone)
        newest = live.newest_as_of(snapshot)
        freshness = f" · newest value {_ago(time.time() - newest.timestamp())}" if newest else ""
        st.caption(f"Updated at {snapshot.now.astimezone(zone):%H:%M:%S} ({snapshot.site.timezone}){freshness}")
        st.subheader("Power flow now")
        flow_tiles(snapshot)
        st.subheader("Sources")
        sources_table(snapshot)
        st.subheader(f"Last {int(live.RECENT.total_seconds() // 3600)} hours")
        recent_chart(snapshot)


with page_guard():
    st.title("Live")
    site = choose_site("live_site")
    refresh_s = get_runtime().settings.live_refresh_s
    if site is not None:
        auto = st.toggle(
            "Follow new readings",
            value=True,
            key="live_auto_refresh",
            help=f"Shows a new reading within about {CHECK_S:g} s of its arrival and reloads at least every"
            f" {refresh_s} s; only this panel, not the page. While on, an Enphase source set to stream while"
            " watched follows its live stream (about a value a second). Turn off to study a moment at leisure.",
        )
        st.fragment(run_every=CHECK_S if auto else None)(live_panel)(site.id, refresh_s, auto)
