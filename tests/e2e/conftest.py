"""Browser fixtures: Debian's Chromium driven by Playwright against a real dashboard server (`ui.serve`) per test.

Never `playwright install`: the browser is the system one (`apt-get install chromium`), passed as
`executable_path`. Each test gets its own server on a free port with a fresh DuckDB file and key file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 10.0
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each phase's report on the test item, so fixtures can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"_e2e_report_{report.when}", report)


def _failed(item: pytest.Item) -> bool:
    return any(getattr(getattr(item, f"_e2e_report_{when}", None), "failed", False) for when in ("setup", "call"))


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("DATACONN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any], chromium_path: str) -> dict[str, Any]:
    """pytest-playwright's launch options plus the system Chromium, headless unless `--headed` was given."""
    args = dict(browser_type_launch_args)
    args["executable_path"] = chromium_path
    args["args"] = [*args.get("args", []), *CHROMIUM_ARGS]
    args.setdefault("headless", True)
    return args


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    """A tall window: Streamlit scrolls inside its main element, so screenshots show what fits the viewport."""
    return {"viewport": {"width": 1280, "height": 2000}, **browser_context_args}


@pytest.fixture
def seed_demo() -> bool:
    """Whether the server seeds the 'Demo Rooftop' site; override with `@pytest.mark.parametrize("seed_demo", ...)`."""
    return os.environ.get("DATACONN_SEED_DEMO", "false").lower() in {"1", "true", "yes", "on"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200 and response.read().decode().strip() == "ok"
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def fake_vendors() -> Iterator[dict[str, str]]:
    """The fake SolarEdge V2, SolarEdge V1 and Enphase servers, as `DATACONN_*` settings pointing at them."""
    from tests.fakes import enphase, solaredge_v1, solaredge_v2
    from tests.fakes.server import serve

    with contextlib.ExitStack() as stack:
        v2 = stack.enter_context(serve(solaredge_v2.create_app(solaredge_v2.FakeState())))
        v1 = stack.enter_context(serve(solaredge_v1.create_app(solaredge_v1.sandbox_state())))
        en = stack.enter_context(serve(enphase.create_app(enphase.FakeState())))
        yield {
            "DATACONN_SOLAREDGE_BASE_URL": f"{v2}/v2",
            "DATACONN_SOLAREDGE_V1_BASE_URL": v1,
            "DATACONN_ENPHASE_BASE_URL": f"{en}/api/v4",
            "DATACONN_ENPHASE_AUTH_URL": f"{en}/oauth",
        }


@pytest.fixture
def app_server(
    request: pytest.FixtureRequest, tmp_path: Path, seed_demo: bool, fake_vendors: dict[str, str]
) -> Iterator[str]:
    """The dashboard (`python -m ui.serve`, as `make run` starts it) on a free port with a fresh database."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATACONN_DB_PATH": str(tmp_path / "dataconn.duckdb"),
        "DATACONN_KEY_FILE": str(tmp_path / "secret.key"),
        "DATACONN_SEED_DEMO": "true" if seed_demo else "false",
        "PYTHONUNBUFFERED": "1",
        "DATACONN_PUBLIC_URL": base_url,  # where Enphase's consent page sends the browser back
        **fake_vendors,
    }
    env.pop("DATACONN_SECRET_KEYS", None)  # the key file above, not keys from the developer's shell
    command = [
        sys.executable,
        "-m",
        "ui.serve",  # what `make run` starts
        "--server.headless=true",
        "--server.address=127.0.0.1",
        f"--server.port={port}",
        "--browser.gatherUsageStats=false",
        # Others edit the repo while tests run: a file change must not rerun the app or pop "Source file changed".
        "--server.fileWatcherType=none",
    ]
    log_path = tmp_path / "streamlit-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    started = False
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _healthy(f"{base_url}/_stcore/health"):
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with code {process.returncode}:\n{_read(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit was not healthy after {STARTUP_TIMEOUT_S:.0f} s:\n{_read(log_path)}")
            time.sleep(0.2)
        started = True
        yield base_url
    finally:
        exited_early = process.poll()
        process.terminate()
        try:
            process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        if started and _failed(request.node):  # a failed start already put the log in its message
            if exited_early is not None:
                print(f"\nstreamlit had already exited with code {exited_early} when the test ended")
            print(f"\n--- streamlit server log ({log_path}) ---\n{_read(log_path)}")


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else "(no log)"
