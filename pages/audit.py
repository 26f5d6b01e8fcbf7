"""Audit: who changed what, when (docs/access.md). Admins only; the read itself checks the role
(`core.analytics.audit`), so a viewer who opens this page's address sees the refusal, not the log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from core.actors import Permission
from core.analytics.audit import COLUMNS, audit_choices, audit_rows
from core.store.audit_log import AuditFilter
from ui.context import get_runtime, page_guard, role_wall
from ui.widgets import download_buttons

PERIODS: dict[str, timedelta | None] = {"24 hours": timedelta(days=1), "7 days": timedelta(days=7)}
PERIODS |= {"30 days": timedelta(days=30), "365 days": timedelta(days=365), "All time": None}
EVERY = "(all)"
SHOWN = 5_000  # rows on the page and in the download; narrower filters find older ones

st.title("Audit")
st.caption(
    "Every change to sites, meters, sources, credentials, users and tokens, with who made it and when; alert"
    " acknowledgements, imports and key rotations too. Credentials appear only as entered, replaced or removed."
)
with page_guard():
    role_wall(Permission.READ_AUDIT, "read the audit log")
    store = get_runtime().store
    choices = audit_choices(store)
    period, who, kind, action = st.columns(4)
    span = period.selectbox("Period", list(PERIODS), index=1, key="audit_period")
    actor_name = who.selectbox("Who", [EVERY, *choices["actor"]], key="audit_actor")
    object_type = kind.selectbox("Object", [EVERY, *choices["object_type"]], key="audit_object")
    action_name = action.selectbox("Action", [EVERY, *choices["action"]], key="audit_action")
    text = st.text_input("Name or change contains", key="audit_text", max_chars=200)
    now = datetime.now(UTC)
    length = PERIODS[span]
    where = AuditFilter(
        start=now - length if length is not None else datetime(1970, 1, 1, tzinfo=UTC),
        end=now + timedelta(minutes=1),
        actor=None if actor_name == EVERY else actor_name,
        object_type=None if object_type == EVERY else object_type,
        action=None if action_name == EVERY else action_name,
        text=text.strip() or None,
        limit=SHOWN,
    )
    rows = audit_rows(store, where)
    if rows.is_empty():
        st.info("No change matches these filters.", icon=":material/search_off:")
    else:
        more = " (the newest; narrow the filters to see older ones)" if rows.height == SHOWN else ""
        st.caption(f"{rows.height:,} change(s){more}, newest first.")
        st.dataframe(rows.rename(COLUMNS), hide_index=True, width="stretch")
    download_buttons(rows, f"audit-{now:%Y%m%d-%H%M}", "audit_download")
