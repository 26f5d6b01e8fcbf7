"""Users: the people who signed in and their roles (docs/access.md). Admins give roles here, unless the identity
provider's claim decides them; every change is checked on the server side and recorded in the audit log."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from core.actors import Permission, Role
from core.catalog import users
from core.catalog.users import RoleMapping, UserRefused
from core.config import sign_in_configured
from ui.context import flash, get_runtime, page_guard, role_wall, run_safely, show_flashes
from ui.markdown import escape_markdown

ROLE_HELP = {
    Role.VIEWER: "every analytics page, downloads, SQL views",
    Role.EDITOR: "also sites, meters, sources, imports, connection tests, acknowledging alerts",
    Role.ADMIN: "also credentials, deletions, users and roles, key rotation, the audit log",
}
FROM_LABELS = {
    "claim": "identity provider",
    "table": "given here",
    "first user": "first to sign in",
    "default": "default role",
}


def _set_role(subject: str, role: Role) -> str:
    """The change, or the rule that refused it, as the toast says it."""
    runtime = get_runtime()
    mapping = RoleMapping.from_settings(runtime.settings)
    try:
        user = users.set_role(runtime.store, subject, role, datetime.now(UTC), mapping=mapping)
    except UserRefused as exc:
        return str(exc)
    return f"{user.label} is now {user.role.value}."


def _give_role(subject: str, key: str) -> None:
    said = run_safely(_set_role, subject, Role(st.session_state[key]))  # as this session's user, role checked
    if said is not None:
        flash(said, ":material/manage_accounts:")
    st.session_state.pop(key, None)  # redrawn from the stored role: a refused change does not stay on screen


st.title("Users")
st.caption("Who signed in, and what each may do: " + "; ".join(f"**{r.value}**: {h}" for r, h in ROLE_HELP.items()))
show_flashes()
with page_guard():
    runtime = get_runtime()
    if not sign_in_configured(runtime.settings):
        st.info(
            "Sign-in is not configured: this dashboard serves this machine only, and its one user is an admin."
            " Configure sign-in with your organisation's identity provider (see the README, \"Signing in and"
            ' roles") to give each person a role.',
            icon=":material/info:",
        )
        st.stop()
    role_wall(Permission.MANAGE_USERS, "give roles")
    mapping = RoleMapping.from_settings(runtime.settings)
    if mapping.claim:
        st.caption(
            f"Roles of people whose `{escape_markdown(mapping.claim)}` claim lists a mapped value come from the"
            " identity provider and change there; the others' are given here."
        )
    people = users.list_users(runtime.store)
    roles = [r.value for r in Role]
    for person in people:
        with st.container(border=True, key=f"user-{person.subject}"):
            who, since, role = st.columns([3, 3, 2], vertical_alignment="center")
            full_name = f"  \n{escape_markdown(person.name)}" if person.name and person.email else ""
            who.markdown(f"**{escape_markdown(person.label)}**{full_name}")
            origin = FROM_LABELS.get(person.role_from, person.role_from)
            since.caption(
                f"First signed in {person.created_at:%Y-%m-%d %H:%M} UTC, last seen"
                f" {person.last_seen_at:%Y-%m-%d %H:%M} UTC. Role: {origin}."
            )
            key = f"users_role_{person.subject}"
            st.session_state.setdefault(key, person.role.value)
            role.selectbox(
                "Role",
                roles,
                key=key,
                disabled=person.role_from == "claim" and bool(mapping.claim),
                on_change=_give_role,
                args=(person.subject, key),
            )
