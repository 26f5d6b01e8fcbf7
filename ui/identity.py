"""Who this dashboard session acts as (docs/access.md, "Sign-in"): the signed-in user, or, with sign-in not
configured, the local user of a dashboard that serves 127.0.0.1 only (or a network its operator declared trusted).

With sign-in configured, Streamlit's own OpenID Connect support does the protocol (`st.login`, `st.user`,
`st.logout`; `ui.serve` turns our settings into its `[auth]` secrets). The router asks `require_sign_in` before it
shows anything: a visitor who is not signed in, whose sign-in has expired, or who has no role sees one screen that
says so, with no page, no sidebar and no data, and the run stops there. A signed-in user is recorded and given their
role by `core.catalog.users.sign_in`, once per session; the role is looked at again every `RECHECK_S`, so a change
made on the Users page (a demotion) takes effect within minutes, without signing in again.

Expiry is the provider's: Streamlit keeps the identity cookie for 30 days, but the ID token whose claims it holds
says when the provider's trust ends (`exp`), and after that the user signs in again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st
from pydantic import ValidationError
from streamlit.navigation.page import StreamlitPage

from core.actors import LOCAL_USER, SIGNED_OUT, Actor
from core.catalog.users import NoRole, RoleMapping, sign_in
from core.config import Settings, load_settings, sign_in_configured
from core.serving import network_warning
from core.store.store import StoreUnavailable
from ui.context import get_runtime, page_guard, remember_actor
from ui.markdown import escape_markdown

log = logging.getLogger("dataconn.ui")

PRODUCT = "Energy Data Connections"
RECHECK_S = 120.0  # a role changed on the Users page reaches a running session this late at most
_SIGNED_IN = "_dataconn_signed_in"  # not a widget key: a browser cannot set it
_NOT_CLAIMS = ("is_logged_in", "provider", "tokens", "origin")  # what Streamlit adds to the ID token's claims


@dataclass(frozen=True)
class SignedIn:
    """This session's user as last looked up (`sign_in`), and when (time.monotonic())."""

    actor: Actor
    subject: str
    checked_at: float


def _settings() -> Settings | None:
    try:
        return load_settings()
    except ValidationError:  # the page says what is wrong with the settings, and can show nothing else
        return None


def _server_address() -> str:
    return str(st.get_option("server.address") or "0.0.0.0")  # unset: Streamlit serves every address


def require_sign_in(pages: Sequence[StreamlitPage]) -> None:
    """Before the router shows anything: with sign-in configured, a session without a signed-in user with a role
    sees a screen that says why (with the pages hidden) and the run stops here. Without sign-in, a dashboard that
    serves a network because its operator allowed it says so above every page."""
    settings = _settings()
    if settings is None:
        return
    if not sign_in_configured(settings):
        warning = network_warning(settings, _server_address())
        if warning:
            st.warning(escape_markdown(warning), icon=":material/public:")
        return
    user: Mapping[str, Any] = st.user.to_dict()
    if "is_logged_in" not in user:  # Streamlit has no [auth] section: not started by ui.serve
        _stop(
            pages,
            lambda: st.error(
                "Sign-in is configured, but this dashboard was started without it, so it shows nothing. Start it"
                " with `make run` (or `python -m ui.serve`), which sets sign-in up from the DATACONN\\_AUTH\\_"
                " settings.",
                icon=":material/lock:",
            ),
        )
    if not user.get("is_logged_in"):
        st.session_state.pop(_SIGNED_IN, None)
        _stop(pages, _sign_in_screen)
    expires = _expiry(user)
    if expires is None or expires <= time.time():
        st.session_state.pop(_SIGNED_IN, None)
        _stop(pages, lambda: _expired_screen(expires))
    _signed_in_actor(pages, settings, user)


def _stop(pages: Sequence[StreamlitPage], screen: Any = None) -> None:
    """Show `screen` (the product's name and what it says) instead of any page, and end the run. The navigation is
    declared hidden, so that a link to a page is not "Page not found" but the same screen; the callbacks of the next
    run act as whom the router last remembered (ui.context.run_safely): nobody, now."""
    remember_actor(SIGNED_OUT)
    st.navigation(list(pages), position="hidden")
    if screen is not None:
        st.title(PRODUCT)
        screen()
    st.stop()


def _sign_in_screen() -> None:
    st.write("Sign in with your organisation's account to see this installation's data.")
    if st.button("Sign in", type="primary", icon=":material/login:", key="_sign_in"):
        st.login()


def _expired_screen(expires: float | None) -> None:
    when = f" at {_local_time(expires)}" if expires is not None else ""
    st.info(
        f"Your sign-in ended{when}, when your organisation's identity provider said it would: sign in again to go on.",
        icon=":material/schedule:",
    )
    if st.button("Sign in again", type="primary", icon=":material/login:", key="_sign_in_again"):
        st.login()
    st.button("Sign out", key="_sign_out_expired", on_click=_sign_out)


def _no_role_screen(message: str) -> None:
    st.warning(escape_markdown(message), icon=":material/person_off:")
    st.button("Sign out", key="_sign_out_no_role", on_click=_sign_out)


def _expiry(user: Mapping[str, Any]) -> float | None:
    """When the provider's ID token stops being valid (its `exp` claim, seconds since 1970)."""
    exp = user.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def _claims(user: Mapping[str, Any]) -> dict[str, Any]:
    return {key: user[key] for key in user if key not in _NOT_CLAIMS}


def _signed_in_actor(pages: Sequence[StreamlitPage], settings: Settings, user: Mapping[str, Any]) -> Actor:
    """The actor of this session's user: looked up once (`sign_in`, which records them and decides their role),
    then again every RECHECK_S. A user without a role sees why, and the run stops."""
    subject = str(user.get("sub") or "")
    known = st.session_state.get(_SIGNED_IN)
    now = time.monotonic()
    if isinstance(known, SignedIn) and known.subject == subject and now - known.checked_at < RECHECK_S:
        return known.actor
    actor: Actor | None = None
    refused: str | None = None
    try:
        with page_guard():
            try:
                actor = sign_in(
                    get_runtime().store, _claims(user), RoleMapping.from_settings(settings), datetime.now(UTC)
                )
            except NoRole as exc:
                refused = str(exc)
            except StoreUnavailable:
                if not (isinstance(known, SignedIn) and known.subject == subject):
                    raise  # page_guard says so (and waits for a held file)
                log.debug("role re-check deferred: the database is unavailable", exc_info=True)
                actor = known.actor  # the role as last looked up, until the file can be read again
    finally:
        if actor is None:
            st.session_state.pop(_SIGNED_IN, None)
    if refused is not None:
        _stop(pages, lambda: _no_role_screen(refused))
    if actor is None:  # page_guard showed why
        _stop(pages)
    assert actor is not None
    st.session_state[_SIGNED_IN] = SignedIn(actor, subject, now)
    return actor


def session_lapsed() -> bool:
    """With sign-in configured: whether this session's user is signed out or past the ID token's expiry. For a
    fragment that reruns by itself (Live's panel), which skips the router's gate: it reruns the whole app instead,
    so the gate shows its screen rather than the panel showing data after the session ended."""
    user: Mapping[str, Any] = st.user.to_dict()
    if "is_logged_in" not in user:  # no [auth] section: sign-in is off (or the gate already refused this run)
        return False
    expires = _expiry(user)
    return not user.get("is_logged_in") or expires is None or expires <= time.time()


def _signed_in() -> SignedIn | None:
    known = st.session_state.get(_SIGNED_IN)
    return known if isinstance(known, SignedIn) else None


def session_actor(settings: Settings | None) -> Actor:
    """The actor of this page run. Without settings (they failed to load: the page says why) nobody may write."""
    if settings is None:
        return SIGNED_OUT
    if not sign_in_configured(settings):
        return LOCAL_USER
    known = _signed_in()  # set by require_sign_in earlier in this run
    user = st.user.to_dict()
    if known is None or not user.get("is_logged_in") or known.subject != str(user.get("sub") or ""):
        return SIGNED_OUT
    return known.actor


def show_identity() -> None:
    """In the sidebar: who is signed in, their role, until when, and the button that signs them out."""
    known = _signed_in()
    if known is None:
        return
    user: Mapping[str, Any] = st.user.to_dict()
    name, email = str(user.get("name") or ""), str(user.get("email") or "")
    # An address in a code span: shown as typed, where markdown would make it a mailto link.
    address = f"`{email.replace('`', '')}`" if email else ""
    shown = [f"**{escape_markdown(name)}**"] if name and name != email else []
    if address:
        shown.append(f"({address})" if shown else address)
    line = "Signed in as " + (" ".join(shown) or f"**{escape_markdown(known.actor.name)}**")
    line += f" · {known.actor.role.value}"
    expires = _expiry(user)
    if expires is not None:
        line += f" · until {_local_time(expires)}"
    st.caption(line)
    st.button("Sign out", key="_sign_out", icon=":material/logout:", on_click=_sign_out)


def _sign_out() -> None:
    st.session_state.pop(_SIGNED_IN, None)
    st.logout()


def _local_time(epoch_s: float) -> str:
    """HH:MM in the browser's time zone when it told us one, else the server's."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    zone_name = st.context.timezone
    try:
        local = moment.astimezone(ZoneInfo(zone_name)) if zone_name else moment.astimezone()
    except (ZoneInfoNotFoundError, ValueError):
        local = moment.astimezone()
    return f"{local:%H:%M}"
