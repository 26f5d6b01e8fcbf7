"""Process-wide runtime for the dashboard and the guard that keeps tracebacks off the page."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from core.actors import SIGNED_OUT, Actor, Forbidden, Permission, acting_as, allowed
from core.catalog.catalog import InvalidInput, NotFound
from core.config import Settings, load_settings
from core.runtime import Runtime, open_runtime
from core.store.crypto import SecretsError
from core.store.secret_store import KeyNoticeCache
from core.store.store import StoreBusy, StoreError, reads_wait_at_most
from core.store.store_wait import HeldSince, still_held
from ui.markdown import escape_markdown

log = logging.getLogger("dataconn.ui")


@st.cache_resource(show_spinner=False)
def _runtime_for(settings_json: str) -> Runtime:
    return open_runtime(Settings.model_validate_json(settings_json))


def get_runtime() -> Runtime:
    """Settings, store and secret box, built once per distinct configuration. Holds no database connection.

    The box re-reads the key file when it changes (core.store.crypto): a key rewritten by `rotate-keys`, or restored
    after it went missing, is used from the next page run without a restart.
    """
    return _runtime_for(load_settings().model_dump_json())


def runtime_or_none() -> Runtime | None:
    """The runtime, or None when it cannot be built now (invalid settings, a database that cannot be opened or
    migrated, malformed keys in the environment). For what frames the page (sidebar, key banner): the page builds the
    runtime too and says why, so the reason is shown once, not three times."""
    try:
        with reads_wait_at_most(PAGE_READ_WAIT_S):  # a held file: the page says so, in its own guard
            return get_runtime()
    except Exception:
        log.debug("no runtime for the sidebar and the key banner; the page says why", exc_info=True)
        return None


KEY_NOTICE_WAIT_S = 1.0  # the banner is not worth a page waiting out a held database: the page says that itself
KEY_NOTICE_MAX_AGE_S = 30.0  # a change of stored credentials alone shows this late at most; a change of keys at once


@st.cache_resource(show_spinner=False)
def _key_notices(settings_json: str, _runtime: Runtime) -> KeyNoticeCache:
    """One per runtime (the same settings give the same cached runtime), shared by every session."""
    return KeyNoticeCache(_runtime.store, _runtime.box, max_age_s=KEY_NOTICE_MAX_AGE_S)


def key_banner(runtime: Runtime) -> None:
    """Above every page: the one line saying that stored credentials cannot be decrypted (or that there is no
    usable key), and what to do (core.store.crypto). Kept between page runs (core.store.secret_store.KeyNoticeCache): a
    click does not decrypt every stored credential again, while a restored key file clears the banner at the next
    run."""
    try:
        notice = _key_notices(runtime.settings.model_dump_json(), runtime).notice(timeout_s=KEY_NOTICE_WAIT_S)
    except StoreError:  # the page itself says what is wrong with the database
        return
    if notice:
        st.error(notice, icon=":material/key_off:")


# A database held by another program (an analyst's read-write duckdb session) is said at once and waited out by
# the page itself. Why this shape:
# - A page's reads give the file PAGE_READ_WAIT_S, not the store's lock wait (15 s by default, made for the CLI and
#   for writes): long enough to ride over our own processes' short writes (the collector's, other sessions'),
#   short enough that the page says "held" before the user wonders why it is grey. Writes keep the full wait: a
#   click on Save or Import asked for them, and giving up early would drop them (core.store.store.reads_wait_at_most).
# - Then a fragment with `run_every` looks at the file every HELD_RETRY_S (one open attempt, no query) and reruns
#   the whole page once it is free: nothing to click, and the look runs in the timer's own short script run rather
#   than a script sleeping in a loop, so a waiting page costs the server one file open every few seconds. Inside a
#   fragment (Live's panel) the same: the waiting fragment is nested in it and reruns the whole page too.
# - "Since HH:MM" is the first time any page of this dashboard saw the file held (core.store.store_wait.HeldSince, one
#   per database), so reruns, tabs and pages agree on it.
PAGE_READ_WAIT_S = 1.0
HELD_RETRY_S = 3.0
_JUST_SEEN_HELD = "_database_just_seen_held"  # set by the run that met the held file: its waiting box looks no more


@st.cache_resource(show_spinner=False)
def _held_since(settings_json: str) -> HeldSince:
    """One per runtime (the same settings give the same cached runtime), shared by every session."""
    return HeldSince()


def _held_tracker() -> HeldSince:
    return _held_since(load_settings().model_dump_json())


def _database_still_held() -> bool:
    """One look at the file. Anything but "held" (the file gone, a fault, settings that fail) answers False: the
    page then reruns and its own guard says what is wrong."""
    try:
        with reads_wait_at_most(0.0):  # building the runtime, when that failed before, reads the schema version
            store = get_runtime().store
    except StoreBusy:
        return True
    except Exception:
        log.debug("looking at a held database failed otherwise; the page's run says why", exc_info=True)
        return False
    return still_held(store)


def _local_time(moment: datetime) -> str:
    """HH:MM in the browser's time zone when it told us one, else the server's."""
    zone_name = st.context.timezone
    try:
        local = moment.astimezone(ZoneInfo(zone_name)) if zone_name else moment.astimezone()
    except (ZoneInfoNotFoundError, ValueError):
        local = moment.astimezone()
    return f"{local:%H:%M}"


def held_database_notice(file_name: str) -> None:
    """The waiting box, and (as a fragment with `run_every`) the look that reruns the page once the file is free."""
    tracker = _held_tracker()
    if not st.session_state.pop(_JUST_SEEN_HELD, False):  # a timer's run: the run that drew the box just looked
        if not _database_still_held():
            tracker.seen_free()
            st.rerun()  # the whole page, not this fragment: everything it shows comes from the database
        tracker.seen_held()
    since = tracker.since or tracker.seen_held()
    label = f"Waiting for the database: another program holds {escape_markdown(file_name)} since {_local_time(since)}"
    # Not `with st.status(...)`: leaving the block marks it complete (a check mark), and this box is still waiting.
    st.status(label, state="running", expanded=True).markdown(
        "Close the other program (for example a `duckdb` CLI session or a notebook with the file open for "
        "writing), or open it read-only (`duckdb -readonly`). This page carries on by itself as soon as the file "
        "is free: nothing to click. Nothing was changed while it was held."
    )


def wait_for_database(path: Path) -> None:
    """Say at once that another program holds the database, and carry on by itself when it is free."""
    _held_tracker().seen_held()
    st.session_state[_JUST_SEEN_HELD] = True
    st.fragment(run_every=HELD_RETRY_S)(held_database_notice)(path.name)


@contextlib.contextmanager
def page_guard() -> Iterator[None]:
    """Show known failures as messages and unknown ones as a short notice; the traceback goes to the log only.

    A database held by another program is waited out: a short wait for reads, then a box that says so and reruns
    the page once the file is free (see PAGE_READ_WAIT_S above)."""
    try:
        with reads_wait_at_most(PAGE_READ_WAIT_S):
            yield
    except StoreBusy as exc:
        wait_for_database(exc.path)
    except Forbidden as exc:
        st.error(str(exc), icon=":material/lock:")
    except (StoreError, SecretsError, NotFound, InvalidInput) as exc:
        st.error(str(exc), icon=":material/error:")
    except Exception as exc:  # the page boundary: nothing below may show a traceback to the user
        log.exception("page failed")
        st.error(
            f"Something went wrong ({type(exc).__name__}). Nothing was changed; the details are in the server log.",
            icon=":material/error:",
        )


def flash(message: str, icon: str = ":material/check_circle:") -> None:
    """Queue a toast for the next run (callbacks run before the page renders)."""
    st.session_state.setdefault("_flash", []).append((message, icon))


def show_flashes() -> None:
    for message, icon in st.session_state.pop("_flash", []):
        st.toast(message, icon=icon)


def field_error(errors: dict[str, str], field: str) -> None:
    """The message for one field, right under it."""
    if field in errors:  # messages may quote what was typed: shown as typed, not as markdown
        st.error(escape_markdown(errors[field]), icon=":material/error:")


SESSION_ACTOR = "_dataconn_actor"  # not a widget key: a browser cannot set it


def remember_actor(actor: Actor) -> None:
    """The router's answer to "who is this session?", for the callbacks of the next run: Streamlit runs them
    before the script, outside the router's `acting_as`."""
    st.session_state[SESSION_ACTOR] = actor


def session_actor_now() -> Actor:
    actor = st.session_state.get(SESSION_ACTOR)
    return actor if isinstance(actor, Actor) else SIGNED_OUT


def can(permission: Permission) -> bool:
    """Whether this session's role allows `permission`: for disabling what it may not do. A courtesy only: core
    checks the role again at the write (core.actors.require)."""
    return allowed(permission, session_actor_now())


def role_note(permission: Permission, what: str) -> None:
    """One line saying what this role may not do here, where the disabled controls are."""
    if not can(permission):
        actor = session_actor_now()
        st.caption(
            f":material/lock: {what} needs the {permission.role.value} role; you are signed in as"
            f" {escape_markdown(actor.name)} ({actor.role.value})."
        )


def role_wall(permission: Permission, what: str) -> None:
    """Stop the page here, saying why, for a role that may not `what` (e.g. "read the audit log")."""
    if not can(permission):
        actor = session_actor_now()
        st.info(
            f"Only an {permission.role.value} can {what}; you are signed in as {escape_markdown(actor.name)}"
            f" ({actor.role.value}).",
            icon=":material/lock:",
        )
        st.stop()


def run_safely(action, *args, errors_key: str | None = None, **kwargs):  # type: ignore[no-untyped-def]
    """Run a core action from a widget callback, as this session's actor (whose role core checks). Known failures
    become messages; returns the result or None."""
    try:
        with acting_as(session_actor_now()):
            return action(*args, **kwargs)
    except Forbidden as exc:
        flash(str(exc), ":material/lock:")
        if errors_key:
            st.session_state[errors_key] = {"_form": str(exc)}
        return None
    except InvalidInput as exc:
        if errors_key:
            st.session_state[errors_key] = exc.errors
        return None
    except (StoreError, SecretsError, NotFound) as exc:
        flash(str(exc), ":material/error:")
        if errors_key:
            st.session_state[errors_key] = {"_form": str(exc)}
        return None
    except Exception as exc:
        log.exception("action %s failed", getattr(action, "__name__", action))
        flash(f"Something went wrong ({type(exc).__name__}); nothing was changed.", ":material/error:")
        return None
