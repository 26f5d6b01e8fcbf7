"""Browser fixtures: Debian's Chromium driven by Playwright against a real dashboard server (`ui.serve`) per test.

Never `playwright install`: the browser is the system one (`apt-get install chromium`), passed as
`executable_path`. Each test gets its own server on a free port with a fresh DuckDB file and key file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard import dashboard_env, running_dashboard
from tests.processes import read_log

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
    env = dashboard_env(tmp_path, base_url, seed_demo=seed_demo, **fake_vendors)
    log_path = tmp_path / "streamlit-server.log"
    with running_dashboard(env, port, log_path) as process:
        try:
            yield base_url
        finally:
            if _failed(request.node):
                exited_early = process.poll()
                if exited_early is not None:
                    print(f"\nstreamlit had already exited with code {exited_early} when the test ended")
                print(f"\n--- streamlit server log ({log_path}) ---\n{read_log(log_path)}")
