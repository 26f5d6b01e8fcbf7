"""Energy Data Connections dashboard: the router and the shared sidebar."""

from __future__ import annotations

import streamlit as st

from ui.context import get_runtime, page_guard

st.set_page_config(page_title="Energy Data Connections", page_icon=":material/bolt:", layout="wide")

pages = [
    st.Page("pages/control_room.py", title="Control Room", icon=":material/domain:", default=True),
    st.Page(
        "pages/data_connections.py", title="Data Connections", icon=":material/cable:", url_path="data-connections"
    ),
]
navigation = st.navigation(pages)

with st.sidebar:
    st.caption("Energy Data Connections")
    with page_guard():
        st.caption(f"Database: `{get_runtime().settings.db_path.name}`")

navigation.run()
