"""Who may reach the dashboard and who may frame it, decided before it starts (docs/access.md, "Sign-in").

- **A network address needs sign-in.** Without sign-in every visitor acts as the local user, an admin
  (`core.actors.LOCAL_USER`). That is fine on 127.0.0.1, where a visitor is someone on this machine who could open
  the file anyway; on any other address it would hand the installation to whoever reaches the port. So the launcher
  refuses to serve one unless sign-in is configured or the operator declared the network trusted
  (`DATACONN_ALLOW_UNAUTHENTICATED_NETWORK`), and then every page says so (`network_warning`).
- **Sign-in's settings are checked as a whole, at start.** Half a configuration (a provider without a secret) would
  otherwise leave the dashboard open without a word, and a redirect URL Streamlit cannot serve or a weak cookie
  secret would only show when the first person tries to sign in.
- **Framing is refused** (`Content-Security-Policy: frame-ancestors 'none'`, `X-Frame-Options: DENY`) so another
  site cannot show the dashboard in a frame and trick a signed-in user into clicking (clickjacking), unless
  `DATACONN_FRAME_ANCESTORS` lists the origins that may: then exactly those.

Pure functions of the settings and the address: the launchers (`jobs.run`, `ui.serve`) say the problems and exit.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from core.config import Settings, sign_in_configured

CALLBACK_PATH = "/oauth2callback"  # Streamlit's route for the provider's answer: the redirect URL must end with it
MIN_COOKIE_SECRET_CHARS = 32
UNIX_SOCKET_PREFIX = "unix://"  # Streamlit serves a Unix socket for such an address: reachable from this machine only

SIGN_IN_SETTINGS = ("DATACONN_AUTH_METADATA_URL", "DATACONN_AUTH_CLIENT_ID", "DATACONN_AUTH_CLIENT_SECRET")
HOW_TO_SIGN_IN = (
    "configure sign-in through your organisation's OpenID Connect provider (" + ", ".join(SIGN_IN_SETTINGS) + ";"
    ' the README\'s "Signing in and roles" says how)'
)


def is_loopback(address: str) -> bool:
    """Whether a server address is reachable from this machine only: 127.0.0.0/8, ::1, localhost, a Unix socket.
    Any other name counts as a network: what it resolves to is not ours to trust."""
    address = address.strip()
    if address.startswith(UNIX_SOCKET_PREFIX):
        return True
    host = address.removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_is_loopback(url: str) -> bool:
    return is_loopback(urlsplit(url).hostname or "")


def redirect_url(settings: Settings) -> str:
    """Where the provider sends a user back after signing in: the setting, else the public URL + /oauth2callback."""
    explicit = settings.auth_redirect_url.strip()
    return explicit or settings.public_url.strip().rstrip("/") + CALLBACK_PATH


def sign_in_problems(settings: Settings) -> list[str]:
    """What keeps the sign-in settings from working, in the operator's words (empty: fine, or not configured)."""
    given = {
        "DATACONN_AUTH_METADATA_URL": settings.auth_metadata_url.strip(),
        "DATACONN_AUTH_CLIENT_ID": settings.auth_client_id.strip(),
        "DATACONN_AUTH_CLIENT_SECRET": settings.auth_client_secret.get_secret_value().strip(),
    }
    missing = [name for name, value in given.items() if not value]
    if missing and len(missing) < len(given):
        return [
            f"sign-in is half configured: set {' and '.join(missing)} too (or unset"
            f" {' and '.join(n for n in given if n not in missing)} to run without sign-in, on 127.0.0.1 only)"
        ]
    if not sign_in_configured(settings):
        return []
    problems = []
    metadata = urlsplit(given["DATACONN_AUTH_METADATA_URL"])
    if metadata.scheme not in ("http", "https") or not metadata.hostname:
        problems.append(
            "DATACONN_AUTH_METADATA_URL must be the address of the provider's discovery document"
            " (https://<issuer>/.well-known/openid-configuration)"
        )
    elif metadata.scheme == "http" and not is_loopback(metadata.hostname):
        problems.append(
            "DATACONN_AUTH_METADATA_URL must use https: over plain http anyone on the way could pose as the provider"
            " (http is accepted for a provider on this machine only)"
        )
    callback = redirect_url(settings)
    parts = urlsplit(callback)
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.path.endswith(CALLBACK_PATH):
        source = "DATACONN_AUTH_REDIRECT_URL" if settings.auth_redirect_url.strip() else "DATACONN_PUBLIC_URL"
        problems.append(
            f"the sign-in redirect URL ({callback!r}, from {source}) must be the dashboard's public address followed"
            f" by {CALLBACK_PATH}, as registered with the provider (e.g. https://energy.example.com{CALLBACK_PATH})"
        )
    cookie_secret = settings.auth_cookie_secret.get_secret_value()
    if cookie_secret and len(cookie_secret) < MIN_COOKIE_SECRET_CHARS:
        problems.append(
            f"DATACONN_AUTH_COOKIE_SECRET is shorter than {MIN_COOKIE_SECRET_CHARS} characters: use a long random"
            " string (python -c 'import secrets; print(secrets.token_urlsafe(48))'), or leave it empty and one is"
            " made for you"
        )
    return problems


def sign_in_warnings(settings: Settings) -> list[str]:
    """What works but should not be left so: a redirect over plain http to another machine."""
    if not sign_in_configured(settings):
        return []
    callback = redirect_url(settings)
    if urlsplit(callback).scheme == "http" and not _url_is_loopback(callback):
        return [
            f"users sign in through {callback}, plain http: their identity cookie crosses the network unencrypted."
            " Serve the dashboard over https (a reverse proxy) and set DATACONN_PUBLIC_URL to that address."
        ]
    return []


def network_refusal(settings: Settings, address: str) -> str | None:
    """Why the dashboard must not serve `address` (None: it may)."""
    if is_loopback(address) or sign_in_configured(settings) or settings.allow_unauthenticated_network:
        return None
    return (
        f"refusing to serve the dashboard on {address}: sign-in is not configured, so everyone who reaches it would"
        f" act as an admin. Either {HOW_TO_SIGN_IN}, or serve 127.0.0.1 only (make run HOST=127.0.0.1), or, on a"
        " network you trust with admin rights, set DATACONN_ALLOW_UNAUTHENTICATED_NETWORK=true."
    )


def network_warning(settings: Settings, address: str) -> str | None:
    """The warning of a dashboard that serves a network without sign-in because the operator allowed it."""
    if is_loopback(address) or sign_in_configured(settings) or not settings.allow_unauthenticated_network:
        return None
    return (
        f"This dashboard serves {address} without sign-in (DATACONN_ALLOW_UNAUTHENTICATED_NETWORK=true): everyone who"
        f" can reach it acts as an admin and may change or delete anything. To know who does what, {HOW_TO_SIGN_IN}."
    )


# --- framing -----------------------------------------------------------------------------------------------------

_KEYWORD = re.compile(r"^'self'$")
_SCHEME_SOURCE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:$")  # https:
_HOST_SOURCE = re.compile(  # [scheme://]host[:port][/path], the host possibly *.domain or *
    r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:\*|(?:\*\.)?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)(?::(?:[0-9]{1,5}|\*))?"
    r"(?:/[A-Za-z0-9._~!$&'()*+=:@%/-]*)?$"
)


def frame_ancestors(settings: Settings) -> list[str]:
    return settings.frame_ancestors.split()


def frame_ancestor_problems(settings: Settings) -> list[str]:
    """Each listed source that is not one a browser understands (a typo would otherwise fail open or closed
    silently; a ';' would smuggle in another policy)."""
    bad = [
        source
        for source in frame_ancestors(settings)
        if not (_KEYWORD.match(source) or _SCHEME_SOURCE.match(source) or _HOST_SOURCE.match(source))
    ]
    if not bad:
        return []
    return [
        f"DATACONN_FRAME_ANCESTORS: {', '.join(repr(s[:60]) for s in bad)} is not an origin: list origins separated"
        " by spaces, such as https://intranet.example.com 'self'"
    ]


REFUSE_FRAMING = {"Content-Security-Policy": "frame-ancestors 'none'", "X-Frame-Options": "DENY"}


def frame_headers(settings: Settings) -> dict[str, str]:
    """The headers every dashboard response carries against framing."""
    allowed = frame_ancestors(settings)
    if not allowed:
        return dict(REFUSE_FRAMING)
    # X-Frame-Options can name no origin of its own: browsers that know CSP ignore it anyway when frame-ancestors is
    # set, and an old one would refuse the frames that were just allowed.
    return {"Content-Security-Policy": "frame-ancestors " + " ".join(allowed)}


def setting_problems(settings: Settings) -> list[str]:
    """What in the settings keeps the dashboard from starting, whatever its address (empty: nothing)."""
    return [*sign_in_problems(settings), *frame_ancestor_problems(settings)]


def serving_problems(settings: Settings, address: str) -> list[str]:
    """Everything that keeps the dashboard from starting on `address` (empty: start)."""
    refusal = network_refusal(settings, address)
    return [*setting_problems(settings), *([refusal] if refusal else [])]
