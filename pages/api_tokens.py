"""API Tokens: a signed-in user's personal tokens for the HTTP API (README, "HTTP API"; docs/access.md).

A token is shown once, in the run that made it, and never again: the file keeps only its hash and last four
characters (`core.catalog.api_tokens`). It acts with its owner's role as it is at each request. An admin may also see
and revoke everyone's tokens.

Writes happen in the page's own run (forms), not in widget callbacks: the run is where the router says who acts
(`acting_as` in app.py), and a callback runs before it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from core.actors import Forbidden, Permission, allowed, current_actor
from core.catalog import api_tokens
from core.catalog.api_tokens import EXPIRY_CHOICES, ApiToken, IssuedToken, TokenRefused
from core.config import ingest_url, sign_in_configured
from ui.context import get_runtime, page_guard
from ui.markdown import escape_markdown


def _when(moment: datetime | None, never: str = "") -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if moment is not None else never


def _rows(tokens: list[ApiToken], now: datetime, everyone: bool) -> list[dict[str, str]]:
    rows = []
    for token in tokens:
        row = {"Name": token.name, "Token": f"…{token.hint}"}
        if everyone:
            row["Owner"] = token.owner
        row |= {
            "Created": _when(token.created_at),
            "Last used": _when(token.last_used_at, "never"),
            "Expires": _when(token.expires_at, "never"),
            "State": token.state(now) + (f" {_when(token.revoked_at)}" if token.revoked_at else ""),
        }
        rows.append(row)
    return rows


def _show_new(made: IssuedToken, base_url: str) -> None:
    """The token, this once, with how to use it."""
    with st.container(border=True):
        st.success(
            f"Token **{escape_markdown(made.info.name)}** created. Copy it now: it is not shown again (only its last"
            " four characters are kept).",
            icon=":material/key:",
        )
        st.code(made.token, language=None)
        st.markdown(f"Send it with every request, as `Authorization: Bearer <token>`. The API: `{base_url}`.")
        st.code(f'curl -H "Authorization: Bearer {made.token}" {base_url}/meters', language="sh")
        st.caption(
            f"It acts with your role as it is at each request. The endpoints: `{base_url}/openapi.json`, and the"
            ' README\'s "HTTP API".'
        )


def _create_form(base_url: str) -> None:
    with st.form("at_create", clear_on_submit=True, border=True):
        st.markdown("**New token**")
        name_col, expiry_col = st.columns([3, 1])
        name = name_col.text_input("Token Name", placeholder="e.g. nightly export script", key="at_name")
        expiry = expiry_col.selectbox("Expires after", list(EXPIRY_CHOICES), index=1, key="at_expiry")
        submitted = st.form_submit_button("Create token", icon=":material/add:")
    if submitted:
        try:
            made = api_tokens.issue(
                get_runtime().store, name, datetime.now(UTC), expires_in_days=EXPIRY_CHOICES[expiry]
            )
        except (TokenRefused, Forbidden) as exc:
            st.error(escape_markdown(str(exc)), icon=":material/error:")
        else:
            _show_new(made, base_url)


def _revoke_form(tokens: list[ApiToken], now: datetime, everyone: bool) -> bool:
    """Whether a token was revoked in this run."""
    active = {t.id: t for t in tokens if t.state(now) == "active"}
    if not active:
        return False

    def label(token_id: int) -> str:
        token = active[token_id]
        return f"{token.name} (…{token.hint})" + (f", {token.owner}" if everyone else "")

    with st.form("at_revoke", border=True):
        choice_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
        chosen = choice_col.selectbox("Token to revoke", list(active), format_func=label, key="at_revoke_id")
        submitted = button_col.form_submit_button("Revoke", icon=":material/block:")
    if not submitted or chosen is None:
        return False
    try:
        revoked = api_tokens.revoke(get_runtime().store, int(chosen), datetime.now(UTC))
    except (TokenRefused, Forbidden) as exc:
        st.error(escape_markdown(str(exc)), icon=":material/error:")
        return False
    st.success(
        f"Token **{escape_markdown(revoked.name)}** (…{revoked.hint}) revoked: its requests are refused from now on.",
        icon=":material/block:",
    )
    return True


st.title("API Tokens")
with page_guard():
    runtime = get_runtime()
    actor = current_actor()
    base_url = f"{ingest_url(runtime.settings)}/api/v1"
    st.caption(
        "Personal tokens for scripts that use the HTTP API (meters and energy sources, as on Data Connections). A token"
        f" acts as you, with your role at each request. The API is served at `{base_url}` (the ingest service)."
    )
    if api_tokens.owner_subject_or_none(actor) is None:
        st.info("Sign in to make and revoke your API tokens.", icon=":material/login:")
        st.stop()
    if not sign_in_configured(runtime.settings):
        st.caption(
            "Sign-in is not configured: tokens made now act as the local user (an admin), and only while sign-in stays"
            " unconfigured."
        )
    _create_form(base_url)
    everyone = allowed(Permission.MANAGE_USERS, actor) and st.toggle("Everyone's tokens", key="at_everyone")
    st.subheader("Everyone's tokens" if everyone else "Your tokens")
    table = st.container()
    now = datetime.now(UTC)
    tokens = api_tokens.list_tokens(runtime.store, everyone=everyone)
    if _revoke_form(tokens, now, everyone):
        tokens = api_tokens.list_tokens(runtime.store, everyone=everyone)
    with table:
        if tokens:
            st.dataframe(_rows(tokens, now, everyone), hide_index=True, key="at_table")
        else:
            st.caption("No tokens yet.")
