"""`make run`'s launcher (`jobs.run`) as real processes: the collector, the dashboard and the ingest service start
together and stop together, whether the launcher gets SIGTERM or whoever started it (make) goes away; the ingest
service failing alone leaves the others running."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.processes import REPO, operator_env

READY_S = 90.0
GONE_S = 40.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(line) for line in found.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by its new parent) counts as gone.
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


def _kill_tree(launcher: subprocess.Popen[bytes]) -> None:
    """A failed test leaves no server behind: the launcher's children, then the launcher."""
    for pid in _children(launcher.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    launcher.kill()


def _wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + GONE_S
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    return [pid for pid in pids if _alive(pid)]


def _wait_ready(port: int, launcher: int, children: int = 3) -> list[int]:
    """The launcher's children (collector, dashboard, ingest service), once the dashboard answers."""
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                if answer.status == 200 and len(_children(launcher)) == children:
                    return _children(launcher)
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise AssertionError("the dashboard did not start")


def _command(tmp_path: Path, port: int, ingest_port: int | None = None) -> tuple[list[str], dict[str, str]]:
    env = operator_env(tmp_path / "dataconn.duckdb", tmp_path / "secret.key")
    env["DATACONN_INGEST_PORT"] = str(ingest_port or _free_port())
    args = [sys.executable, "-m", "jobs.run", "--server.address=127.0.0.1", f"--server.port={port}"]
    return [*args, "--server.headless=true"], env


def test_sigterm_to_the_launcher_stops_the_collector_the_dashboard_and_the_ingest_service(tmp_path: Path) -> None:
    port = _free_port()
    command, env = _command(tmp_path, port)
    launcher = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        children = _wait_ready(port, launcher.pid)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=GONE_S) == 0
        assert _wait_gone(children) == []
    finally:
        _kill_tree(launcher)


def test_when_make_goes_away_the_launcher_stops_both(tmp_path: Path) -> None:
    """`kill <pid of make run>` ends make, not the processes its recipe started: the launcher sees it was
    re-parented and stops both children."""
    port = _free_port()
    command, env = _command(tmp_path, port)
    parent = subprocess.Popen(  # stands for make: starts the launcher and waits for it
        ["sh", "-c", 'exec "$@" & wait', "make", *command],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started: list[int] = []
    try:
        deadline = time.monotonic() + READY_S
        while not _children(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        (launcher,) = _children(parent.pid)
        started.append(launcher)
        started += _wait_ready(port, launcher)
        parent.send_signal(signal.SIGKILL)  # only the parent: its children are not signalled
        parent.wait(timeout=10)
        assert _wait_gone(started) == []
    finally:
        parent.kill()
        for pid in started:  # a failed test leaves no server behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_an_ingest_service_that_cannot_start_leaves_the_others_running(tmp_path: Path) -> None:
    port = _free_port()
    with socket.socket() as taken:  # another instance's ingest service holds the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        command, env = _command(tmp_path, port, ingest_port=int(taken.getsockname()[1]))
        launcher = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            children = _wait_ready(port, launcher.pid, children=2)  # the ingest service gave up, the rest runs
            time.sleep(2)
            assert launcher.poll() is None and all(_alive(pid) for pid in children)
            launcher.send_signal(signal.SIGTERM)
            assert launcher.wait(timeout=GONE_S) == 0
            assert launcher.stderr is not None
            said = launcher.stderr.read().decode()
            assert "cannot listen on 127.0.0.1" in said and "the ingest service stopped" in said
        finally:
            _kill_tree(launcher)
