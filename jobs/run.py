"""`python -m jobs.run [streamlit options]` (what `make run` starts): the collector and the dashboard, together.

Both run as child processes and stop together, however the launcher is asked to stop:
- SIGTERM or SIGINT to the launcher (Ctrl+C in its terminal, `kill <pid>`): both children get SIGTERM, the
  collector finishes the polls in hand, and the launcher waits for both;
- one child ending (the dashboard failed to start, say): the other is stopped too, and the launcher exits with
  the first one's code;
- its parent ending (`kill <pid of make run>` stops make but not the shell make started): the launcher notices
  that it was re-parented within a second and stops both. A shell recipe with `&` and `trap` could not do this.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

STOP_WAIT_S = 20.0  # the collector finishes the polls in hand; a vendor call times out after 20 s by default
POLL_S = 1.0


def _children(streamlit_args: Sequence[str]) -> list[subprocess.Popen[bytes]]:
    python = sys.executable
    return [
        subprocess.Popen([python, "-m", "jobs.collector"]),
        subprocess.Popen([python, "-m", "ui.serve", *streamlit_args]),
    ]


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
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    parent = os.getppid()
    children = _children(streamlit_args)
    code = 0
    try:
        while not stop.wait(POLL_S):
            ended = [child for child in children if child.poll() is not None]
            if ended:
                code = ended[0].returncode or 0
                break
            if os.getppid() != parent:  # whoever started us is gone: nobody is left to stop us
                break
    finally:
        _stop(children)
    return code


if __name__ == "__main__":
    sys.exit(main())
