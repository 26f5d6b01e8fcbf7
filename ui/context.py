"""Process-wide runtime for the dashboard and the guard that keeps tracebacks off the page."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import streamlit as st

from core.catalog import InvalidInput, NotFound
from core.config import Settings, load_settings
from core.crypto import SecretsError
from core.runtime import Runtime, open_runtime
from core.secret_store import KeyNoticeCache
from core.store import StoreBusy, StoreError

log = logging.getLogger("dataconn.ui")


@st.cache_resource(show_spinner=False)
def _runtime_for(settings_json: str) -> Runtime:
    return open_runtime(Settings.model_validate_json(settings_json))


def get_runtime() -> Runtime:
    """Settings, store and secret box, built once per distinct configuration. Holds no database connection.

    The box re-reads the key file when it changes (core.crypto): a key rewritten by `rotate-keys`, or restored
    after it went missing, is used from the next page run without a restart.
    """
    return _runtime_for(load_settings().model_dump_json())


def runtime_or_none() -> Runtime | None:
    """The runtime, or None when it cannot be built now (invalid settings, a database that cannot be opened or
    migrated, malformed keys in the environment). For what frames the page (sidebar, key banner): the page builds the
    runtime too and says why, so the reason is shown once, not three times."""
    try:
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
    usable key), and what to do (core.crypto). Kept between page runs (core.secret_store.KeyNoticeCache): a click
    does not decrypt every stored credential again, while a restored key file clears the banner at the next run."""
    try:
        notice = _key_notices(runtime.settings.model_dump_json(), runtime).notice(timeout_s=KEY_NOTICE_WAIT_S)
    except StoreError:  # the page itself says what is wrong with the database
        return
    if notice:
        st.error(notice, icon=":material/key_off:")


@contextlib.contextmanager
def page_guard() -> Iterator[None]:
    """Show known failures as messages and unknown ones as a short notice; the traceback goes to the log only."""
    try:
        yield
    except StoreBusy as exc:
        st.warning(str(exc), icon=":material/lock_clock:")
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
    if field in errors:
        st.error(errors[field], icon=":material/error:")


def run_safely(action, *args, errors_key: str | None = None, **kwargs):  # type: ignore[no-untyped-def]
    """Run a core action from a widget callback. Known failures become messages; returns the result or None."""
    try:
        return action(*args, **kwargs)
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
