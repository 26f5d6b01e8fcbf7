"""Widgets several analytics pages share: the site picker and the download buttons under a chart or table."""

from __future__ import annotations

import re

import polars as pl
import streamlit as st

from core import catalog as cat
from core.export import FORMATS, to_bytes
from core.models import Site
from ui.context import get_runtime


def choose_site(key: str) -> Site | None:
    """A select box of the configured sites (the choice is kept across pages); None when there is no site."""
    catalog = cat.load_catalog(get_runtime().store)
    if not catalog.sites:
        st.info("No site yet: add one on the Control Room page.", icon=":material/info:")
        return None
    by_id = {site.id: site for site in catalog.sites}
    remembered = st.session_state.get("chosen_site_id")
    ids = list(by_id)
    index = ids.index(remembered) if remembered in by_id else 0
    site_id = st.selectbox("Site", ids, index=index, format_func=lambda i: by_id[i].name, key=key)
    st.session_state["chosen_site_id"] = site_id
    return by_id[site_id]


def download_buttons(frame: pl.DataFrame, name: str, key: str) -> None:
    """CSV and Parquet downloads of exactly the data shown above them."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "data"
    columns = st.columns(len(FORMATS) + 2)
    for column, (file_format, mime) in zip(columns, FORMATS.items(), strict=False):
        column.download_button(
            f"Download {file_format.upper()}",
            data=to_bytes(frame, file_format),
            file_name=f"{stem}.{file_format}",
            mime=mime,
            key=f"{key}_{file_format}",
            icon=":material/download:",
            disabled=frame.is_empty(),
        )
