"""Run a fake vendor app on loopback in a background thread, and the failure switches all fakes share."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import uvicorn
from starlette.applications import Starlette

FailureKind = Literal["429", "5xx", "timeout", "malformed", "html", "410"]


@dataclass
class FailureSwitch:
    """Make the next `count` data calls fail the vendor's way. Thread-safe enough for tests (one writer)."""

    pending: list[FailureKind] = field(default_factory=list)
    timeout_s: float = 3.0  # how long a "timeout" failure sleeps before answering

    def fail_next(self, kind: FailureKind, count: int = 1) -> None:
        self.pending.extend([kind] * count)

    def take(self) -> FailureKind | None:
        return self.pending.pop(0) if self.pending else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Starlette, port: int | None = None) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 until the block ends; yields the base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("fake server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
