"""The people who sign in, and their roles (docs/access.md).

A user is known by the identity provider's `sub` claim. Their role is decided at each sign-in, first match wins:
1. the provider's role claim (`DATACONN_AUTH_ROLE_CLAIM`), when one of its values is mapped to a role (the highest
   mapped role counts); the provider is then the authority, and the Users page cannot change it;
2. the role an admin gave on the Users page (or the first user's admin);
3. admin, for the first user to sign in on an installation with nobody signed in before;
4. `DATACONN_AUTH_DEFAULT_ROLE` (viewer, editor, or none: no access until an admin gives a role).
A change of role (a new user, a claim that changed, an admin's choice) is written to the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from core.actors import Actor, ActorKind, Permission, Role, require
from core.config import Settings
from core.store import audit_log
from core.store.audit_log import AuditEntry
from core.store.store import Store


class UserRefused(ValueError):
    """A role change the rules do not allow, said in the user's terms."""


@dataclass(frozen=True)
class RoleMapping:
    claim: str
    values: Mapping[str, Role]  # claim value -> role
    default: Role | None  # None: no access without a role

    @classmethod
    def from_settings(cls, settings: Settings) -> RoleMapping:
        values: dict[str, Role] = {}
        for role, listed in (
            (Role.VIEWER, settings.auth_viewer_values),
            (Role.EDITOR, settings.auth_editor_values),
            (Role.ADMIN, settings.auth_admin_values),
        ):
            values |= {v.strip(): role for v in listed.split(",") if v.strip()}
        default = None if settings.auth_default_role == "none" else Role(settings.auth_default_role)
        return cls(settings.auth_role_claim.strip(), values, default)

    def role_of(self, claims: Mapping[str, Any]) -> Role | None:
        """The highest role the claim's values map to; None when the claim is unset, absent or maps to nothing."""
        if not self.claim:
            return None
        raw = claims.get(self.claim)
        listed = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, Sequence) else []
        roles = [self.values[str(v)] for v in listed if str(v) in self.values]
        return max(roles, key=lambda r: r.rank) if roles else None


@dataclass(frozen=True)
class User:
    subject: str
    email: str | None
    name: str | None
    role: Role
    role_from: str  # claim, table, first user, default
    created_at: datetime
    last_seen_at: datetime

    @property
    def label(self) -> str:
        return self.email or self.name or self.subject


class NoRole(PermissionError):
    """A signed-in person with no role: the page says so and shows nothing else."""


def _display(claims: Mapping[str, Any]) -> tuple[str | None, str | None]:
    email, name = claims.get("email"), claims.get("name") or claims.get("preferred_username")
    return (str(email) if email else None, str(name) if name else None)


def _user(row: Sequence[Any]) -> User:
    return User(str(row[0]), row[1], row[2], Role(row[3]), str(row[4]), row[5], row[6])


_COLUMNS = "subject, email, name, role, role_from, created_at, last_seen_at"


def sign_in(store: Store, claims: Mapping[str, Any], mapping: RoleMapping, now: datetime) -> Actor:
    """The actor for a person the provider signed in (`claims`: the ID token's), recording them; `NoRole` when
    nothing gives them a role."""
    subject = str(claims.get("sub") or "")
    if not subject:
        raise NoRole("The identity provider did not say who you are (no 'sub' claim).")
    email, name = _display(claims)
    claimed = mapping.role_of(claims)
    with store.transaction() as con:
        rows = con.execute(f"SELECT {_COLUMNS} FROM users WHERE subject = ?", [subject]).fetchall()
        known = _user(rows[0]) if rows else None
        if claimed is not None:
            role, role_from = claimed, "claim"
        elif known is not None and known.role_from in ("table", "first user"):
            role, role_from = known.role, known.role_from
        elif not con.sql("SELECT count(*) FROM users").fetchall()[0][0]:
            role, role_from = Role.ADMIN, "first user"
        elif mapping.default is not None:
            role, role_from = mapping.default, "default"
        else:
            role, role_from = None, "default"
        stored_role = (role or Role.VIEWER).value
        if known is None:
            con.execute(
                f"INSERT INTO users ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [subject, email, name, stored_role, role_from, now, now],
            )
        else:
            con.execute(
                "UPDATE users SET email = ?, name = ?, role = ?, role_from = ?, last_seen_at = ? WHERE subject = ?",
                [email, name, stored_role, role_from, now, subject],
            )
        actor = Actor(ActorKind.USER, email or name or subject, role or Role.VIEWER, subject)
        if known is None or known.role.value != stored_role:
            what = (
                f"first sign-in, role {stored_role} ({role_from})"
                if known is None
                else (f"role {known.role.value} -> {stored_role} ({role_from})")
            )
            entry = AuditEntry(
                "sign in" if known is None else "update",
                "user",
                None,
                actor.name,
                what,
                fields=("role",),
                before={"role": known.role.value} if known else {},
                after={"role": stored_role},
            )
            audit_log.record(con, actor, [entry], now)
    if role is None:
        raise NoRole(
            f"You are signed in as {actor.name}, but no role is given to you yet: ask an admin to give you one on"
            " the Users page."
        )
    return actor


def list_users(store: Store) -> list[User]:
    with store.connect(read_only=True) as con:
        return [_user(r) for r in con.sql(f"SELECT {_COLUMNS} FROM users ORDER BY created_at").fetchall()]


def find_user(con: duckdb.DuckDBPyConnection, subject: str) -> User | None:
    rows = con.execute(f"SELECT {_COLUMNS} FROM users WHERE subject = ?", [subject]).fetchall()
    return _user(rows[0]) if rows else None


def set_role(store: Store, subject: str, role: Role, now: datetime, *, mapping: RoleMapping) -> User:
    """An admin gives `subject` a role (Users page). Refused for a role the provider's claim decides, and for the
    change that would leave nobody an admin."""
    actor = require(Permission.MANAGE_USERS)
    with store.transaction() as con:
        user = find_user(con, subject)
        if user is None:
            raise UserRefused("That user is no longer known: reload the page.")
        if user.role_from == "claim" and mapping.claim:
            raise UserRefused(
                f"{user.label}'s role comes from the identity provider's '{mapping.claim}' claim: change it there."
            )
        if user.role is Role.ADMIN and role is not Role.ADMIN:
            admins = con.execute("SELECT count(*) FROM users WHERE role = 'admin'").fetchall()[0][0]
            if admins <= 1:
                raise UserRefused(f"{user.label} is the only admin: make someone else an admin first.")
        if user.role is role and user.role_from == "table":
            return user
        con.execute("UPDATE users SET role = ?, role_from = 'table' WHERE subject = ?", [role.value, subject])
        entry = AuditEntry(
            "update",
            "user",
            None,
            user.label,
            f"role {user.role.value} -> {role.value}",
            fields=("role",),
            before={"role": user.role.value},
            after={"role": role.value},
        )
        audit_log.record(con, actor, [entry], now)
        changed = find_user(con, subject)
    assert changed is not None
    return changed
