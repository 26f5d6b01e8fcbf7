"""Personal API tokens: made and revoked on the API Tokens page (or `jobs.cli api-token`), checked by the HTTP API
(docs/access.md, "API tokens").

A token is shown once, when it is made (`issue`): afterwards only its SHA-256 (`api_tokens.token_hash`) and its last
four characters remain, as for Push tokens (`core.store.push_tokens`, whose hash this reuses): 256 random bits need no
slow hash, and a fast one keeps each request cheap. A token has no role of its own: each request acts with its
OWNER's role as the `users` table says now (`verify`), so demoting a person demotes their tokens at once, and a
person removed from `users` (or left without a role) can no longer use theirs.

With sign-in not configured, the dashboard's user is `LOCAL_USER` (an admin, with no subject): tokens made then are
owned by `LOCAL_OWNER` and act as admin only while sign-in stays unconfigured; once it is configured, nobody can say
whose they were, so they are refused. Making and revoking a token is recorded in the audit log (object type
"api token"), never the token itself.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
from pydantic import TypeAdapter, ValidationError

from core.actors import LOCAL_USER, Actor, ActorKind, Forbidden, Permission, Role, allowed, current_actor
from core.catalog.users import find_user
from core.config import Settings, sign_in_configured
from core.models import Name
from core.store import audit_log
from core.store.audit_log import AuditEntry
from core.store.push_tokens import token_hash
from core.store.store import Store, StoreError

log = logging.getLogger(__name__)

TOKEN_PREFIX = "dca_"  # lets a secret scanner, or a person, tell what the string is (Push tokens are "dcp_")
LOCAL_OWNER = "local"  # the owner of tokens made while sign-in was not configured (`LOCAL_USER`)
EXPIRY_CHOICES: dict[str, int | None] = {"30 days": 30, "90 days": 90, "365 days": 365, "never": None}
USE_WRITE_EVERY_S = 60.0  # `last_used_at` is written at most this often per token: a request is not worth a write
USE_WRITE_WAIT_S = 0.5  # nor worth waiting out a held file for
_NAME: TypeAdapter[str] = TypeAdapter(Name)


class TokenRefused(ValueError):
    """A token that cannot be made or revoked as asked, said in the user's terms."""


@dataclass(frozen=True)
class ApiToken:
    """A token as the page lists it: never the token, only its last four characters (`hint`)."""

    id: int
    owner_subject: str
    owner: str  # the owner as people read them: email, name or subject; "local user" for `LOCAL_OWNER`
    name: str
    hint: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        """ "active", "expired" or "revoked"."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class IssuedToken:
    """A token just made: `token` exists in the clear only here, to be shown once."""

    token: str
    info: ApiToken


def owner_subject(actor: Actor) -> str:
    """The `owner_subject` of tokens `actor` makes or lists as their own; `TokenRefused` for an actor that owns none
    (a signed-out visitor, a token, the collector)."""
    if actor == LOCAL_USER:
        return LOCAL_OWNER
    if actor.kind is ActorKind.USER and actor.subject:
        return actor.subject
    raise TokenRefused("Sign in to make or revoke your API tokens.")


def _clean_name(name: str) -> str:
    try:
        return _NAME.validate_python(name)
    except ValidationError as exc:
        message = str(exc.errors()[0].get("msg", "is invalid")).removeprefix("Value error, ")
        raise TokenRefused(f"Token Name {message}") from None


_COLUMNS = "t.id, t.owner_subject, t.name, t.token_hint, t.created_at, t.expires_at, t.last_used_at, t.revoked_at"
_SELECT = (
    f"SELECT {_COLUMNS}, coalesce(u.email, u.name, t.owner_subject) FROM api_tokens t"
    " LEFT JOIN users u ON u.subject = t.owner_subject"
)


def _token(row: Sequence[Any]) -> ApiToken:
    owner_subject_, owner = str(row[1]), str(row[8])
    if owner_subject_ == LOCAL_OWNER:
        owner = LOCAL_USER.name
    return ApiToken(int(row[0]), owner_subject_, owner, str(row[2]), str(row[3]), row[4], row[5], row[6], row[7])


def _read(con: duckdb.DuckDBPyConnection, token_id: int) -> ApiToken | None:
    rows = con.execute(f"{_SELECT} WHERE t.id = ?", [token_id]).fetchall()
    return _token(rows[0]) if rows else None


def issue(
    store: Store, name: str, now: datetime, *, expires_in_days: int | None, owner: str | None = None
) -> IssuedToken:
    """Make a token for the current actor (or, for an admin at the command line, for `owner`) and return it: the
    only time it exists in the clear. Recorded in the audit log without it."""
    actor = current_actor()
    if owner is not None and owner != owner_subject_or_none(actor):
        if not allowed(Permission.MANAGE_USERS, actor):
            raise Forbidden(actor, Permission.MANAGE_USERS)
        subject = owner.strip()
        if not subject:
            raise TokenRefused("Name the owner: the subject of a user who signed in, or 'local'.")
    else:
        subject = owner_subject(actor)
    clean = _clean_name(name)
    if expires_in_days is not None and not 1 <= expires_in_days <= 3_650:
        raise TokenRefused("Expires must be between 1 and 3,650 days, or never.")
    expires_at = now + timedelta(days=expires_in_days) if expires_in_days is not None else None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store.transaction() as con:
        if subject != LOCAL_OWNER and find_user(con, subject) is None:
            raise TokenRefused(f"No user {subject!r} has signed in here: a token acts with its owner's role.")
        token_id = int(
            con.execute(
                "INSERT INTO api_tokens (owner_subject, name, token_hash, token_hint, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                [subject, clean, token_hash(token), token[-4:], now, expires_at],
            ).fetchall()[0][0]
        )
        info = _read(con, token_id)
        assert info is not None
        until = f"expires {expires_at:%Y-%m-%d}" if expires_at else "never expires"
        entry = AuditEntry(
            "create",
            "api token",
            token_id,
            clean,
            f"API token created for {info.owner}; {until}",
            after={"owner": info.owner, "expires_at": expires_at.isoformat() if expires_at else None},
        )
        audit_log.record(con, actor, [entry], now)
    return IssuedToken(token, info)


def owner_subject_or_none(actor: Actor) -> str | None:
    try:
        return owner_subject(actor)
    except TokenRefused:
        return None


def list_tokens(store: Store, *, everyone: bool = False) -> list[ApiToken]:
    """The current actor's own tokens, newest first; with `everyone`, every token (admins only)."""
    actor = current_actor()
    with store.connect(read_only=True) as con:
        if everyone:
            if not allowed(Permission.MANAGE_USERS, actor):
                raise Forbidden(actor, Permission.MANAGE_USERS)
            rows = con.sql(f"{_SELECT} ORDER BY t.created_at DESC, t.id DESC").fetchall()
        else:
            rows = con.execute(
                f"{_SELECT} WHERE t.owner_subject = ? ORDER BY t.created_at DESC, t.id DESC", [owner_subject(actor)]
            ).fetchall()
    return [_token(r) for r in rows]


def revoke(store: Store, token_id: int, now: datetime) -> ApiToken:
    """Revoke a token (its requests are refused from now on): one's own, or anyone's for an admin. Revoking a
    revoked token changes nothing."""
    actor = current_actor()
    with store.transaction() as con:
        token = _read(con, token_id)
        if token is None:
            raise TokenRefused("That token no longer exists: reload the page.")
        if token.owner_subject != owner_subject_or_none(actor) and not allowed(Permission.MANAGE_USERS, actor):
            raise Forbidden(actor, Permission.MANAGE_USERS)
        if token.revoked_at is not None:
            return token
        con.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?", [now, token_id])
        entry = AuditEntry(
            "revoke",
            "api token",
            token_id,
            token.name,
            f"API token of {token.owner} revoked",
            before={"owner": token.owner},
        )
        audit_log.record(con, actor, [entry], now)
        revoked = _read(con, token_id)
    assert revoked is not None
    return revoked


@dataclass(frozen=True)
class Verified:
    """What a presented token opens: the actor a request acts as (None: the owner has no role now)."""

    token_id: int
    actor: Actor | None
    why_not: str = ""


def verify(store: Store, presented: str, now: datetime, settings: Settings) -> Verified | None:
    """The actor a presented token acts as, with its owner's current role; None when the token is unknown, revoked
    or expired, or its owner is no longer known (or is `LOCAL_OWNER` while sign-in is configured): the caller
    answers all of these alike. Raises `StoreError` when the file cannot be read now."""
    with store.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT id, owner_subject, expires_at, revoked_at FROM api_tokens WHERE token_hash = ?",
            [token_hash(presented)],
        ).fetchall()
        if not rows:
            return None
        token_id, subject, expires_at, revoked_at = int(rows[0][0]), str(rows[0][1]), rows[0][2], rows[0][3]
        if revoked_at is not None or (expires_at is not None and expires_at <= now):
            log.info("API token %d refused: %s", token_id, "revoked" if revoked_at is not None else "expired")
            return None
        if subject == LOCAL_OWNER:
            if sign_in_configured(settings):
                log.info("API token %d refused: made without sign-in, which is now configured", token_id)
                return None
            return Verified(token_id, Actor(ActorKind.TOKEN, LOCAL_USER.name, Role.ADMIN, str(token_id)))
        user = find_user(con, subject)
    if user is None:
        log.info("API token %d refused: its owner is no longer a user", token_id)
        return None
    if user.role_from == "default" and settings.auth_default_role == "none":
        # As `users.sign_in` decides: nothing gives this person a role, so they would be refused at sign-in.
        return Verified(token_id, None, f"{user.label} has no role: an admin can give one on the Users page.")
    return Verified(token_id, Actor(ActorKind.TOKEN, user.label, user.role, str(token_id)))


class UseMarks:
    """Writes `last_used_at` at most every `USE_WRITE_EVERY_S` per token, and never makes a request wait for it: a
    held file skips the write (the next use writes it)."""

    def __init__(self) -> None:
        self._written: dict[int, float] = {}
        self._lock = threading.Lock()

    def used(self, store: Store, token_id: int, now: datetime) -> None:
        moment = now.timestamp()
        with self._lock:
            if moment - self._written.get(token_id, float("-inf")) < USE_WRITE_EVERY_S:
                return
            self._written[token_id] = moment
        try:
            with store.transaction(timeout_s=USE_WRITE_WAIT_S) as con:
                con.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", [now, token_id])
        except (StoreError, duckdb.Error) as exc:
            log.debug("last use of API token %d not written (%s)", token_id, type(exc).__name__)
            with self._lock:
                self._written.pop(token_id, None)
