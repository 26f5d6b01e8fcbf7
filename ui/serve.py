"""Start the dashboard: `python -m ui.serve [streamlit options]` (what `make run` uses).

Why not plain `streamlit run app.py`:
- Streamlit treats a `pages/` folder beside the entrypoint as a legacy multipage app until some session has run
  `st.navigation`. On a fresh server the first visitor of a deep link such as /data-connections would then get a
  "Page not found" dialog. Our `pages/` holds `st.navigation` pages, so the launcher tells Streamlit so before the
  server starts.
- Who may reach the dashboard is decided here, once Streamlit has read its options (flags, its config files, its
  environment variables) and before it listens (`core.serving`): a network address without sign-in is refused
  unless the operator allowed it, and half-configured sign-in or framing settings are refused, each in one line
  with what to set. Nothing is started then, and the exit code is 2.
- Sign-in (docs/access.md, "Sign-in"): our `DATACONN_AUTH_*` settings are the one source. Streamlit reads its OpenID
  Connect configuration from the `[auth]` section of its secrets, so the launcher writes that section to a private
  file beside the database (`<db>.sign-in/streamlit-secrets.toml`, 0600 in a 0700 folder, rewritten at every start)
  and points Streamlit's `secrets.files` option at it, and at nothing else: a `secrets.toml` of Streamlit's usual
  places cannot add or change sign-in. The cookie secret, when not set, is made once and kept in the same folder
  (`cookie-secret`), so identity cookies outlive a restart. Neither secret is ever printed.
- Every HTTP response carries the framing headers of `core.serving.frame_headers`. Streamlit has no option for
  response headers, so an ASGI middleware of ours is put first in the middleware list Streamlit builds its Starlette
  app with (`create_streamlit_middleware`); tests/test_serve.py reads the headers from a running dashboard.
"""

from __future__ import annotations

import os
import secrets
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from authlib.deprecate import AuthlibDeprecationWarning
from pydantic import ValidationError
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from streamlit import config as streamlit_config
from streamlit import toml_writer
from streamlit.runtime.pages_manager import PagesManager
from streamlit.web import bootstrap, cli
from streamlit.web.server.starlette import starlette_app

from core.actors import SIGNED_OUT, set_process_actor
from core.config import Settings, load_settings, sign_in_configured
from core.serving import (
    MIN_COOKIE_SECRET_CHARS,
    REFUSE_FRAMING,
    frame_headers,
    is_loopback,
    network_refusal,
    network_warning,
    redirect_url,
    setting_problems,
    sign_in_warnings,
)
from core.store.private_files import (
    Unreadable,
    create_private,
    fsync_dir,
    os_error_words,
    private_dir,
    private_umask,
    read_bounded,
    tighten,
    write_private,
)
from core.validation import field_errors

APP = Path(__file__).resolve().parents[1] / "app.py"
# Streamlit's secrets with invalid settings: a file that is never created (whoever could create it here could change
# this code too).
NO_SECRETS = Path(__file__).resolve().with_name("no-secrets.toml")
EXIT_REFUSED = 2
STREAMLIT_DEFAULT_ADDRESS = "0.0.0.0"  # what Streamlit serves when server.address is unset: every interface
# Streamlit's default prompt, select_account, is refused by providers that do not offer an account chooser (an
# OpenID Connect provider need only support none, login and consent); login is supported by all, and makes signing
# in always ask who is there, so a shared computer never signs the next person in as the last.
SIGN_IN_PROMPT = "login"
SECRETS_FILE = "streamlit-secrets.toml"
COOKIE_SECRET_FILE = "cookie-secret"
COOKIE_SECRET_MAX_BYTES = 4096


def sign_in_folder(settings: Settings) -> Path:
    """The private folder beside the database that holds the sign-in files."""
    return settings.db_path.parent / f"{settings.db_path.name}.sign-in"


def _say(line: str) -> None:
    print(f"serve: {line}", file=sys.stderr, flush=True)


# --- sign-in: our settings as Streamlit's [auth] secrets -----------------------------------------------------------


class SignInSetupError(Exception):
    """The sign-in files cannot be written or read; the message says which and what to do."""


def cookie_secret(settings: Settings, folder: Path) -> str:
    """The setting, else the one kept in `folder` (made on the first start: a restart keeps users signed in)."""
    given = settings.auth_cookie_secret.get_secret_value()
    if given:
        return given
    path = folder / COOKIE_SECRET_FILE
    made = secrets.token_urlsafe(48)
    if create_private(path, made.encode()):
        return made
    try:
        kept = read_bounded(path, COOKIE_SECRET_MAX_BYTES).decode("ascii").strip()
    except (OSError, Unreadable, UnicodeDecodeError) as exc:
        why = os_error_words(exc) if isinstance(exc, OSError) else str(exc)
        raise SignInSetupError(
            f"the cookie secret file {path} cannot be read ({why}): remove it to make one anew"
        ) from None
    if len(kept) < MIN_COOKIE_SECRET_CHARS:
        raise SignInSetupError(f"the cookie secret file {path} holds no usable secret: remove it to make one anew")
    return kept


def auth_secrets(settings: Settings, cookie: str) -> dict[str, Any]:
    """Streamlit's [auth] section for our settings (streamlit.auth_util reads it)."""
    return {
        "auth": {
            "redirect_uri": redirect_url(settings),
            "cookie_secret": cookie,
            "client_id": settings.auth_client_id.strip(),
            "client_secret": settings.auth_client_secret.get_secret_value().strip(),
            "server_metadata_url": settings.auth_metadata_url.strip(),
            "client_kwargs": {"prompt": SIGN_IN_PROMPT},
        }
    }


def write_streamlit_secrets(settings: Settings) -> Path:
    """Write Streamlit's secrets for our settings (the [auth] section with sign-in configured, nothing without) to
    the private sign-in folder, atomically, and return the file's path."""
    folder = sign_in_folder(settings)
    path = folder / SECRETS_FILE
    try:
        private_dir(folder)
        tighten([folder])
        document = auth_secrets(settings, cookie_secret(settings, folder)) if sign_in_configured(settings) else {}
        partial = folder / f".{SECRETS_FILE}.{os.getpid()}"
        write_private(partial, toml_writer.dumps(document).encode())
        os.replace(partial, path)
        fsync_dir(folder)
    except OSError as exc:
        raise SignInSetupError(f"cannot write the sign-in files in {folder}: {os_error_words(exc)}") from None
    return path


# --- headers against framing ----------------------------------------------------------------------------------


class FrameHeaders:
    """ASGI middleware: every HTTP response gets `headers` (the page, its scripts, health, the OAuth routes)."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str]) -> None:
        self.app = app
        self.names = {name.lower().encode("latin-1") for name in headers}
        self.headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self.names]
                message = {**message, "headers": [*kept, *self.headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_frame_headers(headers: Mapping[str, str]) -> None:
    """Put `FrameHeaders` first (outermost) in the middleware Streamlit builds its app with."""
    original: Callable[[], list[Middleware]] = starlette_app.create_streamlit_middleware

    def with_frame_headers() -> list[Middleware]:
        return [Middleware(FrameHeaders, headers=dict(headers)), *original()]

    starlette_app.create_streamlit_middleware = with_frame_headers  # type: ignore[assignment]


# --- the checks ------------------------------------------------------------------------------------------------


def _address_checked(
    run: Callable[..., None], settings: Settings | None, settings_error: str | None
) -> Callable[..., None]:
    """`bootstrap.run`, after the address Streamlit is about to serve (from its flags, config files or environment,
    now all read) passed `core.serving.network_refusal`."""

    def checked_run(*args: Any, **kwargs: Any) -> None:
        address = str(streamlit_config.get_option("server.address") or STREAMLIT_DEFAULT_ADDRESS)
        if settings is None:
            if not is_loopback(address):
                _say(f"refusing to serve {address}: the settings are invalid ({settings_error}), so whether sign-in"
                     " is configured cannot be told; the dashboard was not started")  # fmt: skip
                raise SystemExit(EXIT_REFUSED)
        else:
            refusal = network_refusal(settings, address)
            if refusal:
                _say(refusal)
                raise SystemExit(EXIT_REFUSED)
            warning = network_warning(settings, address)
            if warning:
                _say(f"WARNING: {warning}")
        run(*args, **kwargs)

    return checked_run


def _settings() -> tuple[Settings | None, str | None]:
    try:
        return load_settings(), None
    except ValidationError as exc:
        return None, "; ".join(f"DATACONN_{path.upper()}: {message}" for path, message in field_errors(exc).items())


def prepare(settings: Settings) -> Path:
    """Check the settings that do not depend on the address and write Streamlit's secrets for them (before Streamlit
    reads its options: it may read its secrets while doing so); `SystemExit` with the problems said."""
    problems = setting_problems(settings)
    for problem in problems:
        _say(problem)
    if problems:
        _say("the dashboard was not started")
        raise SystemExit(EXIT_REFUSED)
    for warning in sign_in_warnings(settings):
        _say(f"WARNING: {warning}")
    try:
        path = write_streamlit_secrets(settings)
    except SignInSetupError as exc:
        _say(f"{exc}; the dashboard was not started")
        raise SystemExit(EXIT_REFUSED) from None
    if sign_in_configured(settings):
        _say(f"sign-in through {settings.auth_metadata_url.strip()}, back to {redirect_url(settings)}")
    return path


def main(argv: list[str]) -> int:
    # Authlib warns, at the first sign-in, that its own httpx integration module is renamed: nothing for an operator.
    # Importing its warning class first: that import puts an "always" filter in front, which ours must come before.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated", category=AuthlibDeprecationWarning)
    PagesManager.uses_pages_directory = False
    set_process_actor(SIGNED_OUT)  # a page run acts as its user (app.py); anything outside one may not write
    private_umask()  # the dashboard creates the database on a first start, and its WAL on every write
    settings, settings_error = _settings()
    try:
        # Invalid settings: the pages say what is wrong, framing is refused, and there is no sign-in to set up.
        secrets_file = prepare(settings) if settings is not None else NO_SECRETS
    except SystemExit as exc:
        return int(exc.code or 0)
    install_frame_headers(frame_headers(settings) if settings is not None else REFUSE_FRAMING)
    bootstrap.run = _address_checked(bootstrap.run, settings, settings_error)  # type: ignore[method-assign]
    # Only our file: a secrets.toml in Streamlit's usual places must not add or change sign-in.
    sys.argv = ["streamlit", "run", str(APP), *argv, f"--secrets.files={secrets_file}"]
    return int(cli.main() or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
