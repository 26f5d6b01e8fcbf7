"""`pip install .` (not editable) installs what the command line and the collector need: every package of `core` and
`jobs`, subpackages included (a built wheel once left `core.providers` out while the editable install hid it).

The project is built from a copy of its sources into a fresh virtualenv (pip's own build isolation fetches the
build backend, as any `pip install .` does) without its dependencies; those come from this environment through a
path entry, which leaves this environment's editable install of the project out (its `.pth` is not read there).
The commands then run from a folder outside the repository, so nothing is imported from the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What a checkout holds besides the sources: environments, caches, data, the tests themselves.
NOT_SOURCES = shutil.ignore_patterns(
    ".venv", ".git", ".ci", "data", "tests", "bench", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


def run(*command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_non_editable_install_runs_the_command_line_and_the_collector(tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    shutil.copytree(REPO, sources, ignore=NOT_SOURCES)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = str(venv / "bin" / "python")
    site_packages = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site_packages) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATACONN_", "PYTHON"))}

    installed = run(
        sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
        "--disable-pip-version-check", str(sources), cwd=tmp_path, env=env,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(
        python, "-c", "import core.providers, jobs.collector; print(core.providers.__file__)", cwd=elsewhere, env=env
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(site_packages), where.stdout  # the installed copy, not the checkout

    for module in ("jobs.cli", "jobs.collector", "jobs.sql"):
        helped = run(python, "-m", module, "--help", cwd=elsewhere, env=env)
        assert helped.returncode == 0, (module, helped.stderr)
        assert "usage:" in helped.stdout, (module, helped.stdout)
