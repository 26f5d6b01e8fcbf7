"""Our commands run as an operator runs them: `python -m <module>` in a process of its own, from the repository,
with the settings in `DATACONN_*` environment variables (and none inherited from the test run)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def operator_env(db: Path, key_file: Path, *, demo: bool = False, **more: str) -> dict[str, str]:
    """This process's environment without its `DATACONN_*` variables, plus a database, a key file and `more`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DATACONN_")}
    settings = {"DATACONN_DB_PATH": str(db), "DATACONN_KEY_FILE": str(key_file), "DATACONN_SEED_DEMO": str(demo)}
    return clean | settings | more


def run_module(
    module: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """`python -m module args` (after `prefix`, a command that runs it, such as setpriv); `env`: this process's own
    environment when not given (a test that set its settings with monkeypatch)."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", module, *args],
        env=dict(os.environ if env is None else env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def cli(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m jobs.cli args` with the environment `env` (an operator's, see `operator_env`)."""
    return run_module("jobs.cli", *args, env=env)


def answers(url: str, body: str | None = None) -> bool:
    """Whether `url` answers 200 now (with exactly `body`, when given)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200 and (body is None or response.read().decode().strip() == body)
    except (urllib.error.URLError, OSError):
        return False


def read_log(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else "(no log)"


@contextmanager
def serving(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    ready: Callable[[], bool],
    what: str,
    start_timeout_s: float,
    stop_timeout_s: float = 10.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server of the tests' (`command`, output to `log_path`) from when `ready()` says so until the block ends:
    then terminated, killed if it does not end within `stop_timeout_s`. A server that exits or is not ready in
    `start_timeout_s` fails the test with its log (`what` names it)."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(list(command), cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"{what} exited with code {process.returncode}:\n{read_log(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what} was not ready after {start_timeout_s:g} s:\n{read_log(log_path)}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=stop_timeout_s)
