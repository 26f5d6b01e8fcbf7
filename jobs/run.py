"""`python -m jobs.run [streamlit options]` (what `make run` starts): the collector, the dashboard and the ingest
service (pushed readings, `jobs.ingest`), together.

They run as child processes and stop together, however the launcher is asked to stop:
- SIGTERM or SIGINT to the launcher (Ctrl+C in its terminal, `kill <pid>`): both children get SIGTERM, the
  collector finishes the polls in hand, and the launcher waits for both;
- the collector or the dashboard ending (the dashboard failed to start, say): the others are stopped too, and the
  launcher exits with the first one's code. The ingest service ending (its port is taken by another instance,
  say) is said in one line and the others go on: polling and the dashboard do not depend on it;
- its parent ending (`kill <pid of make run>` stops make but not the shell make started): the launcher notices
  that it was re-parented within a second and stops both. A shell recipe with `&` and `trap` could not do this.

Before starting anything it checks what `core.serving` checks (`ui.serve` checks it again, with the address from
Streamlit's own configuration too): a network address without sign-in (`make run HOST=0.0.0.0`), half-configured
sign-in or framing settings are said in words, and nothing is started (exit code 2).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

from pydantic import ValidationError

from core.config import load_settings
from core.serving import serving_problems, setting_problems

STOP_WAIT_S = 20.0  # the collector finishes the polls in hand; a vendor call times out after 20 s by default
POLL_S = 1.0
EXIT_REFUSED = 2
ADDRESS_FLAG = "--server.address"


def served_address(streamlit_args: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The address the dashboard is told to serve, by flag (the last one counts) or Streamlit's environment variable;
    None when neither says (Streamlit's config files then decide, and `ui.serve` checks)."""
    address = None
    for i, arg in enumerate(streamlit_args):
        if arg.startswith(ADDRESS_FLAG + "="):
            address = arg.split("=", 1)[1]
        elif arg == ADDRESS_FLAG and i + 1 < len(streamlit_args):
            address = streamlit_args[i + 1]
    return address if address is not None else environ.get("STREAMLIT_SERVER_ADDRESS")


def refusals(streamlit_args: Sequence[str]) -> list[str]:
    """Why the launcher must not start (empty: start). Invalid settings are the children's to say."""
    try:
        settings = load_settings()
    except ValidationError:
        return []
    address = served_address(streamlit_args, os.environ)
    return setting_problems(settings) if address is None else serving_problems(settings, address)


def _children(streamlit_args: Sequence[str]) -> list[subprocess.Popen[bytes]]:
    """The essential children: the collector and the dashboard."""
    python = sys.executable
    return [
        subprocess.Popen([python, "-m", "jobs.collector"]),
        subprocess.Popen([python, "-m", "ui.serve", *streamlit_args]),
    ]


def _ingest() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "jobs.ingest"])


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: Sequence[str] | None = None) -> int:
    streamlit_args = list(sys.argv[1:] if argv is None else argv)
    problems = refusals(streamlit_args)
    if problems:
        for problem in problems:
            print(f"run: {problem}", file=sys.stderr)
        print(
            "run: nothing was started (neither the dashboard nor the collector nor the ingest service)", file=sys.stderr
        )
        return EXIT_REFUSED
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    parent = os.getppid()
    children = _children(streamlit_args)
    ingest: subprocess.Popen[bytes] | None = _ingest()
    code = 0
    try:
        while not stop.wait(POLL_S):
            ended = [child for child in children if child.poll() is not None]
            if ended:
                code = ended[0].returncode or 0
                break
            if ingest is not None and ingest.poll() is not None:
                print(f"run: the ingest service stopped (exit {ingest.returncode}); pushed readings are not taken,"
                      " polling and the dashboard go on", file=sys.stderr)  # fmt: skip
                ingest = None
            if os.getppid() != parent:  # whoever started us is gone: nobody is left to stop us
                break
    finally:
        _stop([*children, *([ingest] if ingest is not None else [])])
    return code


if __name__ == "__main__":
    sys.exit(main())
