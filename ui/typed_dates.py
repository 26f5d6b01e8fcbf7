"""Date inputs that apply a typed date on Enter and Tab, as they do on a click elsewhere (see typed_dates.js).

Streamlit's date field sends a typed date to the server only when focus moves to another element; the script makes
Enter, and Tab from the field's last segment, do that. Pages call `commit_typed_dates()` once per run before their
date inputs.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

_SCRIPT = (Path(__file__).parent / "typed_dates.js").read_text(encoding="utf-8")


def commit_typed_dates() -> None:
    """Load the script (it installs itself once per browser tab, so reloading it on every run is harmless).

    In the sidebar: an `st.html` element takes a row's gap even when it shows nothing, which would push the page's
    controls apart.
    """
    st.sidebar.html(f"<script>{_SCRIPT}</script>", unsafe_allow_javascript=True)
