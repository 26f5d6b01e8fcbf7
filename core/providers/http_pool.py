"""One keep-alive HTTP client per vendor host, shared by every poll of that host in a process.

Building an `httpx.Client` per poll (as each vendor client did on its own) means a new TCP and TLS handshake for
every poll: at fleet scale, thousands an hour to the same few hosts. The pool hands out one client per
(scheme, host, port) instead, with a per-host connection limit (`Limits.max_connections`: polls beyond it wait for
a free connection, at most the call timeout); a connection left idle stays open for httpx's keep-alive expiry (5 s).
Every connection may stay idle (`max_keepalive_connections` = `max_connections`): httpcore 1.0 compares the number
of ALL its connections, not the idle ones, with that limit, so a lower value closes a connection after each answer
whenever the host is busy, and 20 calls through 4 connections open 20 of them (tests/providers/test_http_pool.py).
`httpx.Client` is safe to share between threads; the pool's own map is behind a lock.

Who may close what: a vendor client never closes a pooled client (`HttpFunnel.close` closes only a client it made
itself); the pool's owner (`core.runtime.Runtime.close`) closes them all, and so does the process's exit (a
`weakref.finalize`, which also runs when the pool is dropped), so a dashboard or CLI that never says so still
closes its connections. A client asked for after `close` is refused, so nothing reopens a pool being shut down.
"""

from __future__ import annotations

import threading
import weakref

import httpx

HostKey = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_key(url: httpx.URL | str) -> HostKey:
    """(scheme, host, port) of a URL, the default port spelled out so that `https://h` and `https://h:443` match."""
    parsed = httpx.URL(url)
    scheme = parsed.scheme.lower()
    return scheme, parsed.host.lower(), parsed.port or _DEFAULT_PORTS.get(scheme, 0)


def _close_all(clients: dict[HostKey, httpx.Client], lock: threading.Lock) -> None:
    """Module-level so the finalizer holds no reference to the pool itself."""
    with lock:
        taken = list(clients.values())
        clients.clear()
    for client in taken:
        client.close()


class PoolClosed(RuntimeError):
    """A client was asked of a pool already shut down (a bug of the caller's, not a vendor failure)."""


class HttpPool:
    """The process's HTTP clients, one per vendor host (see the module docstring)."""

    def __init__(self, *, timeout_s: float = 20.0, max_connections: int = 32) -> None:
        if timeout_s <= 0 or max_connections < 1:
            raise ValueError("timeout_s must be positive and max_connections at least 1")
        # The wait for a free connection counts against the same timeout as the call (httpx's `pool` timeout).
        self.timeout = httpx.Timeout(timeout_s)
        self.limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._clients: dict[HostKey, httpx.Client] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_all, self._clients, self._lock)

    def client_for(self, url: httpx.URL | str) -> httpx.Client:
        """The shared client for `url`'s host, made on first use. `httpx.InvalidURL` for a URL without a host."""
        key = host_key(url)
        if not key[1]:
            raise httpx.InvalidURL(f"no host in {key[0]}:// URL")
        with self._lock:
            if self._closed:
                raise PoolClosed("the HTTP pool is closed: the process is shutting down")
            client = self._clients.get(key)
            if client is None:
                client = httpx.Client(timeout=self.timeout, limits=self.limits)
                self._clients[key] = client
            return client

    def hosts(self) -> list[HostKey]:
        """The hosts a client was made for, in first-use order."""
        with self._lock:
            return list(self._clients)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close every client (idempotent); later `client_for` calls raise `PoolClosed`."""
        with self._lock:
            self._closed = True
        self._finalizer()
