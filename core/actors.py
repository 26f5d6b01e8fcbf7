"""Who is acting, and what their role lets them do (docs/access.md).

Every change to the file is made on behalf of an `Actor`: a signed-in user of the dashboard, the owner of a personal
API token, the collector, or an operator at the command line. The entry point that knows who it serves (the
dashboard's router for a page run, the API for a request, `jobs.cli`, `jobs.collector`) says so once with
`acting_as`; the code that changes the file asks `require(permission)` on the server side, right before it writes,
so a button hidden from a viewer is a courtesy and never the permission itself. The audit log
(`core.store.audit_log`) names the same actor.

The actor lives in a context variable: each Streamlit session runs its script in a thread of its own and each API
request in its own task (Starlette copies the context into the thread pool), so one user's identity never leaks
into another's run. Where nobody set one, the process's actor counts (`set_process_actor`): `OPERATOR` unless the
process says otherwise, i.e. a process started by hand on the machine that holds the file and its keys (the CLI, a
test, a notebook), which could change the file directly anyway; the collector acts as `COLLECTOR`, and the
dashboard as `SIGNED_OUT` outside a page run that knows its user.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum, StrEnum


class Role(StrEnum):
    """What a person may do, each role including the ones before it."""

    VIEWER = "viewer"  # every analytics page, downloads, SQL views
    EDITOR = "editor"  # also sites, meters, sources, imports, connection tests
    ADMIN = "admin"  # also credentials, users and roles, key rotation, deletes

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, permission: Permission) -> bool:
        return self.rank >= permission.role.rank


class Permission(Enum):
    """An action that changes something, with the least role that may take it and how a refusal names it."""

    VIEW = (Role.VIEWER, "see this installation's data")
    ACKNOWLEDGE = (Role.EDITOR, "acknowledge alerts")
    EDIT_CONFIG = (Role.EDITOR, "change sites, meters or sources")
    IMPORT = (Role.EDITOR, "import readings or sites")
    TEST_CONNECTION = (Role.EDITOR, "test connections")
    CREDENTIALS = (Role.ADMIN, "enter, replace or forget credentials and tokens")
    DELETE = (Role.ADMIN, "delete sites, meters, sources or their data")
    MANAGE_USERS = (Role.ADMIN, "manage users and roles")
    ROTATE_KEYS = (Role.ADMIN, "rotate encryption keys")
    READ_AUDIT = (Role.ADMIN, "read the audit log")

    def __init__(self, role: Role, what: str) -> None:
        self.role = role
        self.what = what


class ActorKind(StrEnum):
    USER = "user"  # signed in through the identity provider, or the local user of an unprotected dashboard
    TOKEN = "token"  # a script with a personal API token (it carries its owner's role)
    COLLECTOR = "collector"
    OPERATOR = "operator"  # the command line or any process started on the machine


@dataclass(frozen=True)
class Actor:
    """`name` is what the audit log and the page show (an email, "collector"); `subject` the stable identity (the
    provider's `sub` claim, a token's id), empty for the processes of this machine."""

    kind: ActorKind
    name: str
    role: Role
    subject: str = ""

    @property
    def label(self) -> str:
        """The audit log's "who": a token's use says whose token it was."""
        return f"{self.name} (API token)" if self.kind is ActorKind.TOKEN else self.name


OPERATOR = Actor(ActorKind.OPERATOR, "operator", Role.ADMIN)
COLLECTOR = Actor(ActorKind.COLLECTOR, "collector", Role.ADMIN)
# The dashboard with sign-in not configured: it binds to 127.0.0.1 only (or a network its operator declared trusted),
# so whoever reaches it is on this machine and could open the file anyway.
LOCAL_USER = Actor(ActorKind.USER, "local user", Role.ADMIN)

# A signed-out visitor: what a dashboard run acts as before its router knows who is there (and what a fragment's own
# rerun acts as, since it skips the router): it may read and never write.
SIGNED_OUT = Actor(ActorKind.USER, "signed-out visitor", Role.VIEWER)

_current: ContextVar[Actor | None] = ContextVar("dataconn_actor", default=None)
_process_actor = OPERATOR  # the actor of a thread or task nobody set one for (`set_process_actor`)


class Forbidden(PermissionError):
    """The actor's role does not allow the action: the message says which role would, in the user's terms."""

    def __init__(self, actor: Actor, permission: Permission) -> None:
        self.actor, self.permission = actor, permission
        super().__init__(
            f"Your role ({actor.role.value}) cannot {permission.what}: that needs the {permission.role.value} role."
            " An admin can change roles on the Users page."
        )


def current_actor() -> Actor:
    return _current.get() or _process_actor


def set_process_actor(actor: Actor) -> None:
    """The actor of every thread of this process that sets none: the collector's workers act as `COLLECTOR`, the
    dashboard's as `SIGNED_OUT` (new threads start with an empty context, so `acting_as` does not reach them)."""
    global _process_actor
    _process_actor = actor


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    token = _current.set(actor)
    try:
        yield actor
    finally:
        _current.reset(token)


def allowed(permission: Permission, actor: Actor | None = None) -> bool:
    return (actor or current_actor()).role.allows(permission)


def require(permission: Permission) -> Actor:
    """The current actor, if their role allows `permission`; else `Forbidden` (nothing has been changed yet)."""
    actor = current_actor()
    if not actor.role.allows(permission):
        raise Forbidden(actor, permission)
    return actor
