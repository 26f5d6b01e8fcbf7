"""A real OpenID Connect provider for the sign-in tests: `oidc-provider` (OpenID Certified, from npm) run by Node on a
free loopback port (`tests/oidc/provider.mjs`), with the dashboard registered as a client and the users of
`tests/oidc/users.json` (ada: admins group, ed: editors, vera: viewers, nora: no group), who sign in by typing their
username and password in the provider's own form.

A missing `node`, or a missing `npm ci` in tests/oidc, fails the test (`.ci/run` installs both)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.server import free_port
from tests.processes import REPO, answers, serving

OIDC_DIR = REPO / "tests" / "oidc"
USERS: dict[str, dict[str, object]] = json.loads((OIDC_DIR / "users.json").read_text(encoding="utf-8"))
START_TIMEOUT_S = 20.0
CLIENT_ID = "energy-dashboard"
CLIENT_SECRET = "test-client-secret-not-for-production"  # the loopback test provider's client only
# The role mapping of the tests, as an operator would write it for their provider's group names.
ROLE_SETTINGS = {
    "DATACONN_AUTH_ROLE_CLAIM": "groups",
    "DATACONN_AUTH_ADMIN_VALUES": "energy-admins",
    "DATACONN_AUTH_EDITOR_VALUES": "energy-editors",
    "DATACONN_AUTH_VIEWER_VALUES": "energy-viewers",
}


def password(user: str) -> str:
    return str(USERS[user]["password"])


@dataclass(frozen=True)
class LoopbackProvider:
    issuer: str
    log_path: Path

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def settings(self, **more: str) -> dict[str, str]:
        """The dashboard's `DATACONN_AUTH_*` settings for this provider, with the tests' role mapping."""
        return {
            "DATACONN_AUTH_METADATA_URL": self.metadata_url,
            "DATACONN_AUTH_CLIENT_ID": CLIENT_ID,
            "DATACONN_AUTH_CLIENT_SECRET": CLIENT_SECRET,
            **ROLE_SETTINGS,
            **more,
        }


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "`node` is not installed: the sign-in tests run a real OpenID provider (apt-get install nodejs npm)"
        )
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("the test OpenID provider is not installed: run `npm ci` in tests/oidc (.ci/run does)")
    return node


@contextmanager
def running_provider(
    redirect_uris: Sequence[str], log_path: Path, *, id_token_ttl_s: int = 3600
) -> Iterator[LoopbackProvider]:
    """The provider, listening and answering its discovery document, until the block ends (then stopped)."""
    node = _node()
    port = free_port()
    env = os.environ | {
        "OIDC_PORT": str(port),
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "OIDC_REDIRECT_URIS": " ".join(redirect_uris),
        "OIDC_ID_TOKEN_TTL": str(id_token_ttl_s),
    }
    provider = LoopbackProvider(f"http://127.0.0.1:{port}", log_path)
    with serving(
        [node, "provider.mjs"],
        cwd=OIDC_DIR,
        env=env,
        log_path=log_path,
        ready=lambda: answers(provider.metadata_url),
        what="the test OpenID provider",
        start_timeout_s=START_TIMEOUT_S,
    ):
        yield provider
