"""Widgets several analytics pages share: the site picker and the download buttons under a chart or table."""

from __future__ import annotations

import re

import polars as pl
import streamlit as st

from core import catalog as cat
from core.export import FORMATS, to_bytes
from core.models import Site
from ui.context import get_runtime


def choose_site(key: str, catalog: cat.Catalog | None = None) -> Site | None:
    """A select box of the configured sites (the choice is kept across pages); None when there is no site."""
    catalog = catalog or cat.load_catalog(get_runtime().store)
    if not catalog.sites:
        st.info("No site yet: add one on the Control Room page.", icon=":material/info:")
        return None
    by_id = {site.id: site for site in catalog.sites}
    remembered = st.session_state.get("chosen_site_id")
    # The choice lives in `chosen_site_id`, shared by every page; the widget follows it when it changed elsewhere
    # (another page's picker, a site just created), and writes it back when the user picks here.
    if remembered in by_id:
        st.session_state[key] = remembered
    elif st.session_state.get(key) not in by_id:
        st.session_state[key] = catalog.sites[0].id

    def remember() -> None:
        st.session_state["chosen_site_id"] = st.session_state[key]

    site_id = st.selectbox("Site", list(by_id), format_func=lambda i: by_id[i].name, key=key, on_change=remember)
    st.session_state["chosen_site_id"] = site_id
    return by_id[site_id]


def download_buttons(frame: pl.DataFrame, name: str, key: str) -> None:
    """CSV and Parquet downloads of exactly the data shown above them. Each file is written when its button is
    clicked, not on every rerun: most views are never downloaded, and a page shows several of these."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "data"
    columns = st.columns(len(FORMATS) + 2)
    for column, (file_format, mime) in zip(columns, FORMATS.items(), strict=False):
        column.download_button(
            f"Download {file_format.upper()}",
            data=lambda file_format=file_format: to_bytes(frame, file_format),
            file_name=f"{stem}.{file_format}",
            mime=mime,
            key=f"{key}_{file_format}",
            icon=":material/download:",
            disabled=frame.is_empty(),
        )
