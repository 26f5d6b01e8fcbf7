"""Run a fake vendor app on loopback in a background thread, and the failure switches all fakes share."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


@dataclass
class Weather:
    """The network of a real vendor, for load benchmarks (bench/bench_fleet.py): every answer waits a latency drawn
    uniformly from `latency_s`; a share `error_rate` answers 502 without reaching the fake (a gateway's), and a
    share `timeout_rate` answers only after `timeout_s` more (longer than a client waits). The fake handles (and
    counts) every other call when it arrives, as a vendor does. Applied by wrapping an app
    (`weathered`), so the fakes and their tests never see it. `statuses` counts what was answered."""

    latency_s: tuple[float, float] = (0.07, 0.8)
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_s: float = 25.0
    seed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)


def weathered(app: ASGIApp, weather: Weather) -> ASGIApp:
    """`app` behind `weather`: the same routes, answered with latency and occasional failures."""
    draw = random.Random(weather.seed)

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        latency = draw.uniform(*weather.latency_s)
        roll = draw.random()
        if roll < weather.error_rate:  # a gateway's 502: the vendor itself never sees (nor counts) the call
            await asyncio.sleep(latency)
            weather.injected["5xx"] += 1
            weather.statuses[502] += 1
            await send({"type": "http.response.start", "status": 502, "headers": [(b"content-type", b"text/html")]})
            await send({"type": "http.response.body", "body": b"<html><body>502 Bad Gateway</body></html>"})
            return
        # A vendor counts a call when it arrives, however long its answer then takes: the app (whose quota counters
        # the benchmark reads) handles the call at once, and its answer is held back by the latency (or the timeout).
        # Held back before the app saw it, a call that timed out was counted 25 s late, in a later minute.
        answer: list[Message] = []

        async def held(message: Message) -> None:
            answer.append(message)

        await app(scope, receive, held)
        delay = latency
        if roll < weather.error_rate + weather.timeout_rate:
            weather.injected["timeout"] += 1
            delay += weather.timeout_s
        await asyncio.sleep(delay)
        for message in answer:
            if message["type"] == "http.response.start":
                weather.statuses[int(message["status"])] += 1
            await send(message)

    return wrapped


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: ASGIApp, port: int | None = None) -> Iterator[str]:
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
