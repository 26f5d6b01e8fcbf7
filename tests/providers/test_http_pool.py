"""The process's HTTP pool against real loopback servers: connections are counted server-side by the client port
each request arrives from (one port = one TCP connection)."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from core.config import Settings
from core.models import Provider, Site
from core.providers.context import ProviderContext
from core.providers.http import HttpFunnel
from core.providers.http_pool import HttpPool, PoolClosed, host_key
from core.providers.quota import QuotaLedger
from core.providers.registry import build_client
from core.providers.spec import ConnectionRequest
from core.runtime import open_runtime
from tests.fakes import solaredge_v2
from tests.fakes.server import serve


@dataclass
class Connections:
    """What the server saw: the client port of every request, and the most requests in progress at once."""

    ports: list[int] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def distinct(self) -> int:
        return len(set(self.ports))


def counting(app: ASGIApp, seen: Connections) -> ASGIApp:
    """`app` behind a middleware that records each HTTP request's client port and the requests in progress."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        with seen.lock:
            seen.ports.append(scope["client"][1])
            seen.in_flight += 1
            seen.most_in_flight = max(seen.most_in_flight, seen.in_flight)
        try:
            await app(scope, receive, send)
        finally:
            with seen.lock:
                seen.in_flight -= 1

    return wrapped


async def _slow(request: Request) -> JSONResponse:
    await asyncio.sleep(float(request.query_params.get("s", "0")))
    return JSONResponse({"ok": True})


def slow_app() -> Starlette:
    return Starlette(routes=[Route("/slow", _slow)])


@pytest.fixture
def slow_server() -> Iterator[tuple[str, Connections]]:
    seen = Connections()
    with serve(counting(slow_app(), seen)) as url:
        yield url, seen


def london() -> Site:
    return Site(id=1, name="London", latitude=51.5, longitude=-0.12, timezone="Europe/London")


def test_two_vendor_clients_of_one_host_share_one_connection_and_one_closing_leaves_it_usable() -> None:
    state, seen = solaredge_v2.FakeState(), Connections()
    pool = HttpPool(timeout_s=5)
    with serve(counting(solaredge_v2.create_app(state), seen)) as url:
        context = ProviderContext(Settings(solaredge_base_url=f"{url}/v2"), QuotaLedger(), http_pool=pool)
        request = ConnectionRequest(
            Provider.SOLAREDGE,
            london(),
            5.0,
            "3066774",
            secrets={"api_key": SecretStr(solaredge_v2.SANDBOX_API_KEY)},
        )
        now = datetime.now(UTC)
        first, second = build_client(request, context), build_client(request, context)
        first.test_connection(now)
        second.test_connection(now)
        first.close()  # its own: the pooled client is not its to close
        second.test_connection(now)
        second.close()
        calls = len(seen.ports)
        pool.close()

    assert calls >= 3 and state.calls_total >= 3
    assert seen.distinct() == 1  # every call of both clients on one keep-alive TCP connection
    assert pool.hosts() == []  # closed: nothing left open


def test_a_client_without_the_pool_still_opens_and_closes_its_own_connection(
    slow_server: tuple[str, Connections],
) -> None:
    url, seen = slow_server
    for _ in range(2):
        funnel = HttpFunnel(url, vendor="Test")
        funnel.request("GET", "slow")
        funnel.close()
    assert seen.distinct() == 2  # as before the pool: one connection per client


def test_per_host_limit_holds_under_20_concurrent_calls(slow_server: tuple[str, Connections]) -> None:
    url, seen = slow_server
    pool = HttpPool(timeout_s=10, max_connections=4)
    funnels = [HttpFunnel(url, vendor="Test", pool=pool) for _ in range(20)]  # 20 polls of one host
    try:
        with ThreadPoolExecutor(max_workers=20) as threads:
            statuses = list(threads.map(lambda f: f.request("GET", "slow", params={"s": "0.2"}).status_code, funnels))
    finally:
        pool.close()
    assert statuses == [200] * 20  # every call waited its turn and succeeded
    assert seen.most_in_flight <= 4
    assert seen.distinct() <= 4  # never more than 4 connections to the host, each kept for the next call
    assert seen.most_in_flight >= 2  # and they were used side by side


def test_each_host_gets_its_own_client_and_shutdown_closes_them_all(slow_server: tuple[str, Connections]) -> None:
    url, _ = slow_server
    pool = HttpPool(timeout_s=5)
    with serve(slow_app()) as other:
        clients = [pool.client_for(f"{url}/slow"), pool.client_for(f"{other}/slow"), pool.client_for(url)]
        assert clients[0] is clients[2] and clients[0] is not clients[1]
        assert pool.hosts() == [host_key(url), host_key(other)]
        funnel = HttpFunnel(url, vendor="Test", pool=pool)
        assert funnel.request("GET", "slow").status_code == 200

        pool.close()
        pool.close()  # idempotent

        assert all(client.is_closed for client in clients)
        assert pool.closed and pool.hosts() == []
        with pytest.raises(PoolClosed):
            pool.client_for(url)
        with pytest.raises(PoolClosed):  # a poll racing the shutdown is told so, not given a new connection
            funnel.request("GET", "slow")


def test_hosts_are_told_apart_by_scheme_host_and_port() -> None:
    assert host_key("https://api.example.com/v2") == host_key("https://API.example.com:443/oauth")
    assert host_key("http://api.example.com") != host_key("https://api.example.com")
    assert host_key("http://127.0.0.1:8001/a") != host_key("http://127.0.0.1:8002/a")


def test_a_pooled_funnel_reports_a_url_without_host_as_a_bad_base_url_setting() -> None:
    from core.providers.base import ProviderConnectionError

    pool = HttpPool(timeout_s=1)
    funnel = HttpFunnel("not-a-url", vendor="Test", pool=pool)
    with pytest.raises(ProviderConnectionError, match="base URL setting is not a valid URL"):
        funnel.request("GET", "x")
    pool.close()


def test_credentials_stay_out_of_httpx_logs_on_pooled_clients(
    slow_server: tuple[str, Connections], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = slow_server
    pool = HttpPool(timeout_s=5)
    funnel = HttpFunnel(url, vendor="Test", pool=pool)
    with caplog.at_level(logging.DEBUG):
        funnel.request("GET", "slow", params={"api_key": "SUPERSECRET123"}, headers={"Authorization": "Bearer TOK9876"})
    pool.close()
    logged = "\n".join(
        record.getMessage() for record in caplog.records if record.name.startswith(("httpx", "httpcore"))
    )
    assert "slow" in logged  # httpx did log the request
    assert "SUPERSECRET123" not in logged and "TOK9876" not in logged


def test_the_runtime_carries_one_pool_sized_by_the_settings_and_closes_it(tmp_path: Path) -> None:
    settings = Settings(
        db_path=tmp_path / "dataconn.duckdb",
        key_file=tmp_path / "secret.key",
        seed_demo=False,
        http_max_connections_per_host=7,
    )
    with open_runtime(settings) as runtime:  # the collector's and the CLI's: closed at their end
        pool = runtime.providers.http_pool
        assert pool is not None and pool is runtime.providers.http_pool  # one per process, whatever asks
        assert (pool.limits.max_connections, pool.limits.max_keepalive_connections) == (7, 7)
        client = pool.client_for("https://api.example.com")
    assert client.is_closed and pool.closed


def test_connection_limits_are_settings_with_bounds() -> None:
    with pytest.raises(ValueError):
        Settings(http_max_connections_per_host=0)
    with pytest.raises(ValueError):
        HttpPool(max_connections=0)
    assert isinstance(HttpPool().limits, httpx.Limits)


def test_a_pool_dropped_without_close_still_closes_its_clients() -> None:
    # The dashboard and the CLI never call close: the pool's finalizer runs when it is dropped or the process exits.
    pool = HttpPool(timeout_s=1)
    client = pool.client_for("https://api.example.com")
    del pool
    gc.collect()
    assert client.is_closed
