"""History (being built for issue 5)."""

from __future__ import annotations

import streamlit as st

st.title("History")
