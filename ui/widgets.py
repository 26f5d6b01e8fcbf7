"""Widgets several analytics pages share: the site picker and the download buttons under a chart or table.

The site the analyst works on is one choice for the whole dashboard, kept in three places, each for its own reach:
- this browser session (`CHOSEN_SITE` in session state): every page's picker follows it, and a page that creates
  a site shows it next (`show_site`);
- the address bar (`?site=<id>`): a reload or a copied link opens the same site; a link may name the site by id
  or by name, and a value that names no site is ignored (the default is used and replaces it);
- the database (`core.catalog.site_choice`): a new tab or a new session starts on the last site used, else the
  first site with data. A write that cannot happen now (database held, read-only) is skipped: the choice still
  holds for the session and is stored on a later run.
"""

from __future__ import annotations

import logging
import re
from functools import partial

import polars as pl
import streamlit as st

from core.analytics.export import FORMATS, to_bytes
from core.catalog import catalog as cat
from core.catalog import site_choice
from core.models import Site
from core.store.store import StoreError
from ui.context import get_runtime

log = logging.getLogger("dataconn.ui")

CHOSEN_SITE = "chosen_site_id"  # session state: the id of the site the analyst works on, shared by every page
SITE_PARAM = "site"  # the address bar's query parameter naming that site
_STORED = "_site_choice_stored"  # session state: the id this session last found or wrote in the database
# The choice is not worth a page waiting out a held database: reading the default falls back to the first site,
# and a write is tried again on a later run.
READ_WAIT_S = 1.0
WRITE_WAIT_S = 0.2


def show_site(site_id: int) -> None:
    """Make `site_id` the site every page shows next. Safe in a widget callback (it only sets session state); the
    next page run puts it in the address bar and the database."""
    st.session_state[CHOSEN_SITE] = site_id


def current_site(catalog: cat.Catalog) -> Site | None:
    """The site the analyst works on: this session's choice, else the one the address bar names (a link), else the
    database's default (`core.catalog.site_choice.default_site`); None when there is no site."""
    if not catalog.sites:
        return None
    by_id = {site.id: site for site in catalog.sites}
    chosen = st.session_state.get(CHOSEN_SITE)
    if chosen in by_id:
        return by_id[chosen]
    linked = site_choice.find_site(catalog, str(st.query_params.get(SITE_PARAM, "")))
    if linked is not None:
        return linked
    try:
        return site_choice.default_site(get_runtime().store, catalog, timeout_s=READ_WAIT_S) or catalog.sites[0]
    except StoreError:
        log.debug("no stored site choice now; starting on the first site", exc_info=True)
        return catalog.sites[0]


def keep_site(site_id: int) -> None:
    """Record `site_id` as the choice: for this session, in the address bar and in the database. Call it during a
    page run (not in a callback) once the page shows that site; it writes only what changed."""
    st.session_state[CHOSEN_SITE] = site_id
    if st.query_params.get(SITE_PARAM) != str(site_id):
        st.query_params[SITE_PARAM] = str(site_id)
    if st.session_state.get(_STORED) == site_id:
        return
    try:
        site_choice.remember_site(get_runtime().store, site_id, timeout_s=WRITE_WAIT_S)
    except StoreError:
        log.debug("site choice not stored now; kept for this session", exc_info=True)
        return
    st.session_state[_STORED] = site_id


def choose_site(key: str, catalog: cat.Catalog | None = None) -> Site | None:
    """A select box of the configured sites, on the site the analyst works on (see the module docstring); None
    when there is no site. `key` is the widget's own; the choice itself is shared by every page."""
    catalog = catalog or cat.load_catalog(get_runtime().store)
    current = current_site(catalog)
    if current is None:
        st.info("No site yet: add one on the Control Room page.", icon=":material/info:")
        return None
    by_id = {site.id: site for site in catalog.sites}
    # The widget follows the shared choice (changed on another page, by a link, a site just created) and writes it
    # back when the user picks here.
    st.session_state[key] = current.id

    def picked() -> None:
        show_site(st.session_state[key])

    site_id = st.selectbox("Site", list(by_id), format_func=lambda i: by_id[i].name, key=key, on_change=picked)
    keep_site(site_id)
    return by_id[site_id]


def download_buttons(frame: pl.DataFrame, name: str, key: str) -> None:
    """CSV and Parquet downloads of exactly the data shown above them. Each file is written when its button is
    clicked, not on every rerun: most views are never downloaded, and a page shows several of these."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "data"
    columns = st.columns(len(FORMATS) + 2)
    for column, (file_format, mime) in zip(columns, FORMATS.items(), strict=False):
        column.download_button(
            f"Download {file_format.upper()}",
            data=partial(to_bytes, frame, file_format),
            file_name=f"{stem}.{file_format}",
            mime=mime,
            key=f"{key}_{file_format}",
            icon=":material/download:",
            disabled=frame.is_empty(),
        )
