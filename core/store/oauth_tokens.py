"""OAuth tokens of a source, kept encrypted in `source_secrets` as one row, so a save is atomic.

Enphase rotates the refresh token on every refresh: the old one dies the moment the new one is issued. Keeping
access token, refresh token and their expiry in ONE encrypted row, written in one transaction, means a crash can
never leave a new access token beside a dead refresh token.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

from pydantic import SecretStr

from core.actors import current_actor
from core.providers.enphase.oauth import Tokens
from core.providers.enphase.spec import TOKENS_SECRET
from core.store import audit_log
from core.store.audit_log import AuditEntry
from core.store.crypto import SecretBox
from core.store.secret_store import credentials_holder, put_secret, read_secrets
from core.store.store import Store


def encode_tokens(tokens: Tokens) -> str:
    return json.dumps(
        {
            "access_token": tokens.access_token.get_secret_value(),
            "refresh_token": tokens.refresh_token.get_secret_value(),
            "access_expires_at": tokens.access_expires_at.isoformat(),
            "refresh_expires_at": tokens.refresh_expires_at.isoformat() if tokens.refresh_expires_at else None,
        }
    )


def decode_tokens(text: str) -> Tokens:
    data = json.loads(text)
    refresh_expires = data.get("refresh_expires_at")
    return Tokens(
        access_token=SecretStr(data["access_token"]),
        refresh_token=SecretStr(data["refresh_token"]),
        access_expires_at=datetime.fromisoformat(data["access_expires_at"]),
        refresh_expires_at=datetime.fromisoformat(refresh_expires) if refresh_expires else None,
    )


class StoredTokens:
    """The `TokenStore` of one source, over the database: its own grant, or the one it shares
    (`ApiSettings.credentials_source_id`, one hop), whose row is read and written in its place."""

    def __init__(self, store: Store, box: SecretBox, source_id: int) -> None:
        self.store, self.box, self.source_id = store, box, source_id
        self._holder: int | None = None

    def holder(self) -> int:
        """The source whose row holds the grant: the shared one when it still exists, else this source."""
        if self._holder is None:
            with self.store.connect(read_only=True) as con:
                self._holder = credentials_holder(con, self.source_id)
        return self._holder

    @property
    def lock(self) -> threading.Lock:
        return _grant_lock(self.store, self.holder())

    def load(self) -> Tokens | None:
        with self.store.connect(read_only=True) as con:  # read_secrets follows a shared grant to its holder
            secret = read_secrets(con, self.box, self.source_id).get(TOKENS_SECRET)
        return decode_tokens(secret.get_secret_value()) if secret else None

    def save(self, tokens: Tokens, *, audit: AuditEntry | None = None) -> None:
        """Save the grant; `audit` records a person's authorization in the same transaction (a refresh by a
        client is routine and not recorded)."""
        holder = self.holder()  # before the write: the store allows one connection at a time while writing
        with self.store.transaction() as con:
            put_secret(con, self.box, holder, TOKENS_SECRET, encode_tokens(tokens))
            if audit is not None:
                audit_log.record(con, current_actor(), [audit], datetime.now(UTC))


# One lock per grant and database in this process: the collector's clients of systems sharing a grant renew it one
# at a time (another process adopts a renewal through the store: EnphaseClient._refresh_locked reads it first).
_GRANT_LOCKS: dict[tuple[str, int], threading.Lock] = {}
_GRANT_LOCKS_GUARD = threading.Lock()


def _grant_lock(store: Store, holder: int) -> threading.Lock:
    with _GRANT_LOCKS_GUARD:
        return _GRANT_LOCKS.setdefault((str(store.path), holder), threading.Lock())
