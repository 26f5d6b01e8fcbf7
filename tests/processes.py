"""Our commands run as an operator runs them: `python -m <module>` in a process of its own, from the repository,
with the settings in `DATACONN_*` environment variables (and none inherited from the test run)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

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
