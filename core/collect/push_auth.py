"""Who may push readings, and how fast (docs/real-time.md, "The push endpoint").

- `PushDirectory`: the push sources and their credentials as the ingest service knows them, read from the file every
  few seconds and kept in memory, so that requests are checked (and accepted into the spool) while another program
  holds the file, and a token just made or revoked takes effect within `REFRESH_S`.
- `check_signature`: the optional HMAC of webhook senders, with its 5-minute replay window (`ReplayGuard`).
- `RateLimiter`: requests per token per minute.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import duckdb
from pydantic import SecretStr

from core.catalog import catalog as cat
from core.models import Provider
from core.store.crypto import SecretBox, SecretsError
from core.store.push_tokens import signing_secret, token_hash
from core.store.store import Store, StoreError

log = logging.getLogger(__name__)
REFRESH_S = 5.0  # how stale the directory may get
UNKNOWN_REFRESH_S = 1.0  # an unknown token re-reads the directory at most this often (a token made a second ago)
REPLAY_WINDOW_S = 300  # a signed request's timestamp may be this far from our clock, either way


@dataclass(frozen=True)
class PushSource:
    """A push source as a request needs it."""

    source_id: int
    name: str
    site_zone: str
    enabled: bool
    signed: bool
    signing_secret: SecretStr | None  # None in signature mode: the key cannot be decrypted (the key file is lost)


class CannotTell(Exception):
    """An unknown token while the file cannot be read: it may be a token made since the last read (answer 503, not
    a 401 the sender would take as final)."""


class PushDirectory:
    """token hash -> source, and source id -> source, refreshed from the file (thread-safe)."""

    def __init__(self, store: Store, box: SecretBox, *, read_wait_s: float = 1.0) -> None:
        self.store, self.box, self.read_wait_s = store, box, read_wait_s
        self._by_hash: dict[str, int] = {}
        self._sources: dict[int, PushSource] = {}
        self._read_at = -math.inf
        self._stale = False  # the last read failed
        self._lock = threading.Lock()

    def source_for(self, token: str, source_id: int) -> PushSource | None:
        """The source the token opens if it is `source_id`'s; None for any other token (unknown, or another
        source's: the answer must not tell which). `CannotTell` for an unknown token while the file is held."""
        key = token_hash(token)
        self._refresh(max_age_s=REFRESH_S)
        if key not in self._by_hash:
            self._refresh(max_age_s=UNKNOWN_REFRESH_S)
        with self._lock:
            owner = self._by_hash.get(key)
            if owner is None and self._stale:
                raise CannotTell("the database is held: tokens made since it was last read cannot be checked yet")
            return self._sources.get(source_id) if owner == source_id else None

    def known(self, source_id: int) -> PushSource | None:
        self._refresh(max_age_s=REFRESH_S)
        with self._lock:
            return self._sources.get(source_id)

    def _refresh(self, *, max_age_s: float) -> None:
        if time.monotonic() - self._read_at < max_age_s:
            return
        with self._lock:
            if time.monotonic() - self._read_at < max_age_s:
                return
            self._read_at = time.monotonic()  # a held file is tried again after `max_age_s`, not at every request
            try:
                by_hash, sources = self._read()
            except (StoreError, duckdb.Error) as exc:
                # Held or failing, or not migrated yet (the service started beside `init`): the directory as last
                # read stays in force, and the next request tries again.
                if not self._stale:
                    log.warning("cannot read the push sources now (%s); tokens as last read stay in force", exc)
                self._stale = True
                return
            self._by_hash, self._sources, self._stale = by_hash, sources, False

    def _read(self) -> tuple[dict[str, int], dict[int, PushSource]]:
        with self.store.connect(read_only=True, timeout_s=self.read_wait_s) as con:
            catalog = cat.read_catalog(con)
            tokens = con.sql("SELECT token_hash, source_id, signed FROM push_tokens").fetchall()
            signed = {int(sid): bool(flag) for _, sid, flag in tokens}
            sources: dict[int, PushSource] = {}
            for source in catalog.sources:
                if source.api.api_provider is not Provider.PUSH or source.id not in signed:
                    continue
                site = catalog.site(catalog.meter(source.meter_id).site_id)
                secret = None
                if signed[source.id]:
                    try:
                        secret = signing_secret(con, self.box, source.id)
                    except SecretsError:
                        secret = None
                sources[source.id] = PushSource(
                    source.id, source.name, site.timezone, source.api.use_api, signed[source.id], secret
                )
        return {str(h): int(sid) for h, sid, _ in tokens if int(sid) in sources}, sources


def signature_of(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>`: the HMAC-SHA256 of `<timestamp>.<body>` with the source's signing secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class ReplayGuard:
    """Signatures seen within the replay window: the same signed request sent twice is refused the second time."""

    def __init__(self, window_s: float = REPLAY_WINDOW_S, capacity: int = 100_000) -> None:
        self.window_s, self.capacity = window_s, capacity
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, signature: str, now: float) -> bool:
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - 2 * self.window_s:
                self._seen.popitem(last=False)
            if signature in self._seen:
                return False
            self._seen[signature] = now
            if len(self._seen) > self.capacity:  # bounded memory under a flood
                self._seen.popitem(last=False)
            return True


def check_signature(
    source: PushSource, timestamp: str | None, signature: str | None, body: bytes, now: float, guard: ReplayGuard
) -> str | None:
    """None when the request is signed right and not a replay; otherwise what is wrong, in the sender's terms."""
    if source.signing_secret is None:
        return "this source's signing secret cannot be read on the server (its key is missing): rotate the token"
    if not timestamp or not signature:
        return "this source takes signed requests only: send X-Timestamp and X-Signature"
    try:
        sent = int(timestamp)
    except ValueError:
        return "X-Timestamp must be Unix seconds"
    if abs(now - sent) > REPLAY_WINDOW_S:
        return f"X-Timestamp is more than {REPLAY_WINDOW_S // 60} minutes from the server's clock"
    expected = signature_of(source.signing_secret.get_secret_value(), timestamp, body)
    if not hmac.compare_digest(expected, signature.strip()):
        return "X-Signature does not match the body and X-Timestamp"
    if not guard.first_time(expected, now):
        return "this signed request was already received (a replay)"
    return None


class RateLimiter:
    """At most `per_minute` requests per key in any 60 s (a sliding log, bounded per key)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._log: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str, now: float) -> int | None:
        """None: the request may go (and is counted); else the whole seconds to wait."""
        with self._lock:
            times = self._log.setdefault(key, deque())
            while times and times[0] <= now - 60:
                times.popleft()
            if len(times) >= self.per_minute:
                return max(1, math.ceil(times[0] + 60 - now))
            times.append(now)
            return None
