"""The dashboard's launchers as real processes (`python -m ui.serve`, `python -m jobs.run`): framing headers read from a
running dashboard, a network address refused without sign-in (and nothing left running), the warning when the
operator allowed it, and the sign-in files written beside the database without a secret reaching the log."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from tests.dashboard import dashboard_env, running_dashboard, serve_command
from tests.fakes.server import free_port
from tests.processes import REPO, read_log

REFUSAL_TIMEOUT_S = 60.0
CLIENT_SECRET = "client-secret-that-must-never-be-logged"
SIGN_IN = {
    # Nothing needs to answer here: the dashboard reads the provider's document only when someone signs in.
    "DATACONN_AUTH_METADATA_URL": "http://127.0.0.1:9/.well-known/openid-configuration",
    "DATACONN_AUTH_CLIENT_ID": "energy-dashboard",
    "DATACONN_AUTH_CLIENT_SECRET": CLIENT_SECRET,
}


def _headers(url: str) -> dict[str, str]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return {name.lower(): value for name, value in answer.headers.items()}


def _static_asset(base_url: str) -> str:
    """A script the page loads (its hashed name differs between Streamlit builds)."""
    with urllib.request.urlopen(base_url + "/", timeout=10) as answer:
        page = answer.read().decode()
    start = page.index("/static/js/")
    return base_url + page[start : page.index('"', start)]


def test_framing_is_refused_on_every_response(tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with running_dashboard(dashboard_env(tmp_path, base_url), port, tmp_path / "dashboard.log"):
        for url in (base_url + "/", base_url + "/live", base_url + "/_stcore/health", _static_asset(base_url)):
            headers = _headers(url)
            assert headers.get("content-security-policy") == "frame-ancestors 'none'", url
            assert headers.get("x-frame-options") == "DENY", url


def test_listed_origins_may_frame_the_dashboard(tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = dashboard_env(tmp_path, base_url, DATACONN_FRAME_ANCESTORS="https://intranet.example.com 'self'")
    with running_dashboard(env, port, tmp_path / "dashboard.log"):
        headers = _headers(base_url + "/")
    assert headers.get("content-security-policy") == "frame-ancestors https://intranet.example.com 'self'"
    assert "x-frame-options" not in headers


def _finished(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=REFUSAL_TIMEOUT_S)


def _assert_refused_in_words(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for name in ("DATACONN_AUTH_METADATA_URL", "DATACONN_AUTH_CLIENT_ID", "DATACONN_AUTH_CLIENT_SECRET"):
        assert name in done.stderr
    assert "DATACONN_ALLOW_UNAUTHENTICATED_NETWORK=true" in done.stderr


def test_make_run_on_a_network_address_without_sign_in_starts_nothing(tmp_path: Path) -> None:
    env = dashboard_env(tmp_path, "http://127.0.0.1:8501")
    port = free_port()
    command = [sys.executable, "-m", "jobs.run", "--server.address=0.0.0.0", f"--server.port={port}"]
    done = _finished([*command, "--server.headless=true"], env)
    _assert_refused_in_words(done)
    assert "nothing was started" in done.stderr
    # Neither the collector nor the dashboard ran: either would have created the database.
    assert not (tmp_path / "dataconn.duckdb").exists()


def test_the_dashboard_alone_refuses_a_network_address_however_it_is_given(tmp_path: Path) -> None:
    env = dashboard_env(tmp_path, "http://127.0.0.1:8501")
    port = free_port()
    by_flag = _finished(serve_command(port, address="0.0.0.0"), env)
    _assert_refused_in_words(by_flag)
    # Streamlit's own environment variable, over the repository's .streamlit/config.toml (127.0.0.1): the check reads
    # the address Streamlit is about to serve, wherever it came from.
    unset = [c for c in serve_command(port) if not c.startswith("--server.address")]
    _assert_refused_in_words(_finished(unset, env | {"STREAMLIT_SERVER_ADDRESS": "0.0.0.0"}))


def test_half_configured_sign_in_starts_nothing(tmp_path: Path) -> None:
    env = dashboard_env(
        tmp_path, "http://127.0.0.1:8501", DATACONN_AUTH_METADATA_URL=SIGN_IN["DATACONN_AUTH_METADATA_URL"]
    )
    done = _finished([sys.executable, "-m", "jobs.run", "--server.address=127.0.0.1", "--server.headless=true"], env)
    assert done.returncode == 2
    assert "DATACONN_AUTH_CLIENT_ID and DATACONN_AUTH_CLIENT_SECRET" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "dataconn.duckdb").exists()


def test_an_allowed_unauthenticated_network_is_served_with_a_warning_in_the_log(tmp_path: Path) -> None:
    port = free_port()
    env = dashboard_env(tmp_path, f"http://127.0.0.1:{port}", DATACONN_ALLOW_UNAUTHENTICATED_NETWORK="true")
    log_path = tmp_path / "dashboard.log"
    with running_dashboard(env, port, log_path, address="0.0.0.0"):  # asked on 127.0.0.1 only
        log = read_log(log_path)
    assert "WARNING: This dashboard serves 0.0.0.0 without sign-in" in log
    assert "acts as an admin" in log


def test_sign_in_settings_become_private_streamlit_secrets_and_no_secret_is_logged(tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = dashboard_env(tmp_path, base_url, **SIGN_IN)
    folder = tmp_path / "dataconn.duckdb.sign-in"
    log_path = tmp_path / "dashboard.log"
    with running_dashboard(env, port, log_path):
        secrets_file = folder / "streamlit-secrets.toml"
        auth = tomllib.loads(secrets_file.read_text())["auth"]
        cookie = (folder / "cookie-secret").read_text().strip()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "cookie-secret").stat().st_mode) == 0o600
    assert auth == {
        "redirect_uri": f"{base_url}/oauth2callback",
        "cookie_secret": cookie,
        "client_id": "energy-dashboard",
        "client_secret": CLIENT_SECRET,
        "server_metadata_url": SIGN_IN["DATACONN_AUTH_METADATA_URL"],
        "client_kwargs": {"prompt": "login"},
    }
    assert len(cookie) >= 32
    first_log = read_log(log_path)
    assert "sign-in through" in first_log

    # A restart keeps the cookie secret (users stay signed in), and neither secret is ever in the log.
    with running_dashboard(env, port, log_path):
        pass
    assert (folder / "cookie-secret").read_text().strip() == cookie
    for log in (first_log, read_log(log_path)):
        assert CLIENT_SECRET not in log and cookie not in log


def test_without_sign_in_no_secrets_are_left_for_streamlit(tmp_path: Path) -> None:
    """Sign-in configured once, then not: the file Streamlit reads no longer holds the old [auth] section."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    secrets_file = tmp_path / "dataconn.duckdb.sign-in" / "streamlit-secrets.toml"
    with running_dashboard(dashboard_env(tmp_path, base_url, **SIGN_IN), port, tmp_path / "1.log"):
        assert "auth" in tomllib.loads(secrets_file.read_text())
    with running_dashboard(dashboard_env(tmp_path, base_url), port, tmp_path / "2.log"):
        assert tomllib.loads(secrets_file.read_text()) == {}
    assert CLIENT_SECRET not in secrets_file.read_text()


def test_the_refusal_leaves_no_process_behind(tmp_path: Path) -> None:
    """`make run HOST=0.0.0.0`: make's launcher exits at once; nothing of ours listens on the port afterwards."""
    env = dashboard_env(tmp_path, "http://127.0.0.1:8501")
    port = free_port()
    started = time.monotonic()
    done = _finished(
        ["make", "--no-print-directory", "run", "HOST=0.0.0.0", f"PORT={port}", "PYTHON=" + sys.executable], env
    )
    assert done.returncode != 0
    assert "refusing to serve the dashboard on 0.0.0.0" in done.stderr
    assert time.monotonic() - started < REFUSAL_TIMEOUT_S
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
