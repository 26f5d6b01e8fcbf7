"""The dashboard as `make run` starts it (`python -m ui.serve`), as a process of its own on a free loopback port, for
the tests that need a real server: the browser tests, the response headers, sign-in."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.processes import REPO, answers, serving

STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 10.0


# Settings a test gives explicitly, never inherited from the test run's environment (a developer's shell).
NOT_INHERITED = ("DATACONN_SECRET_KEYS", "DATACONN_AUTH_", "DATACONN_ALLOW_UNAUTHENTICATED_NETWORK", "DATACONN_FRAME_")


def dashboard_env(tmp_path: Path, base_url: str, *, seed_demo: bool = False, **more: str) -> dict[str, str]:
    """This process's environment (with the settings a test set with monkeypatch) plus a fresh database and key file
    in `tmp_path` and `more`; the key file's keys, sign-in and framing settings are never inherited."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
    return clean | {
        "DATACONN_DB_PATH": str(tmp_path / "dataconn.duckdb"),
        "DATACONN_KEY_FILE": str(tmp_path / "secret.key"),
        "DATACONN_SEED_DEMO": "true" if seed_demo else "false",
        "DATACONN_PUBLIC_URL": base_url,  # where Enphase's consent page and the sign-in provider send the browser back
        "PYTHONUNBUFFERED": "1",
        **more,
    }


def serve_command(port: int, *, address: str = "127.0.0.1", extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ui.serve",  # what `make run` starts
        "--server.headless=true",
        f"--server.address={address}",
        f"--server.port={port}",
        "--browser.gatherUsageStats=false",
        # Others edit the repo while tests run: a file change must not rerun the app or pop "Source file changed".
        "--server.fileWatcherType=none",
        *extra,
    ]


@contextmanager
def running_dashboard(
    env: Mapping[str, str], port: int, log_path: Path, *, address: str = "127.0.0.1", extra: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """The dashboard started and healthy on `port` (the test fails with the server's log otherwise); stopped, or
    killed, when the block ends."""
    with serving(
        serve_command(port, address=address, extra=extra),
        cwd=REPO,
        env=env,
        log_path=log_path,
        ready=lambda: answers(f"http://127.0.0.1:{port}/_stcore/health", "ok"),
        what="the dashboard",
        start_timeout_s=STARTUP_TIMEOUT_S,
        stop_timeout_s=SHUTDOWN_TIMEOUT_S,
    ) as process:
        yield process
