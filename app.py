"""Energy Data Connections dashboard: the router and the shared sidebar."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.actors import acting_as
from ui.context import key_banner, page_guard, remember_actor, runtime_or_none
from ui.identity import require_sign_in, session_actor, show_identity

# The icon is a file of ours, sent inline: a ":material/..." page icon makes the browser fetch it from a font server.
st.set_page_config(
    page_title="Energy Data Connections", page_icon=Path(__file__).parent / "ui" / "icon.svg", layout="wide"
)
st.html(Path(__file__).parent / "ui" / "page.css")  # only a <style>: takes no room on the page

pages = [
    st.Page("pages/control_room.py", title="Control Room", icon=":material/domain:", default=True),
    st.Page(
        "pages/data_connections.py", title="Data Connections", icon=":material/cable:", url_path="data-connections"
    ),
    st.Page("pages/live.py", title="Live", icon=":material/monitoring:", url_path="live"),
    st.Page("pages/history.py", title="History", icon=":material/timeline:", url_path="history"),
    st.Page("pages/kpis.py", title="KPIs", icon=":material/analytics:", url_path="kpis"),
    st.Page("pages/alerts.py", title="Alerts", icon=":material/notifications:", url_path="alerts"),
    st.Page("pages/api_health.py", title="API Health", icon=":material/health_and_safety:", url_path="api-health"),
    st.Page(
        "pages/import_readings.py", title="Import Readings", icon=":material/upload_file:", url_path="import-readings"
    ),
    st.Page("pages/import_sites.py", title="Import Sites", icon=":material/travel_explore:", url_path="import-sites"),
    st.Page("pages/api_tokens.py", title="API Tokens", icon=":material/key:", url_path="api-tokens"),
    st.Page("pages/users.py", title="Users", icon=":material/manage_accounts:", url_path="users"),
    st.Page("pages/audit.py", title="Audit", icon=":material/history_edu:", url_path="audit"),
]
require_sign_in(pages)  # with sign-in configured, nothing below runs for a visitor who is not signed in
navigation = st.navigation(pages)

runtime = runtime_or_none()  # None: the page says why (settings, database, keys), once
with st.sidebar:
    st.caption("Energy Data Connections")
    if runtime is not None:
        st.caption(f"Database: `{runtime.settings.db_path.name}`")
    show_identity()  # the signed-in user, their role and Sign out

if runtime is not None:
    with page_guard():
        key_banner(runtime)

# Every write a page makes checks this actor's role (core.actors.require) and is recorded under their name; the
# callbacks of the next run act as the same (ui.context.run_safely).
actor = session_actor(runtime.settings if runtime is not None else None)
remember_actor(actor)
with acting_as(actor):
    navigation.run()
