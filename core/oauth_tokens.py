"""OAuth tokens of a source, kept encrypted in `source_secrets` as one row, so a save is atomic.

Enphase rotates the refresh token on every refresh: the old one dies the moment the new one is issued. Keeping
access token, refresh token and their expiry in ONE encrypted row, written in one transaction, means a crash can
never leave a new access token beside a dead refresh token.
"""

from __future__ import annotations

import json
from datetime import datetime

from pydantic import SecretStr

from core.crypto import SecretBox
from core.providers.enphase_oauth import Tokens
from core.secret_store import put_secret, read_secrets
from core.store import Store

TOKENS_SECRET = "oauth_tokens"


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
    """The `TokenStore` of one source, over the database."""

    def __init__(self, store: Store, box: SecretBox, source_id: int) -> None:
        self.store, self.box, self.source_id = store, box, source_id

    def load(self) -> Tokens | None:
        with self.store.connect(read_only=True) as con:
            secret = read_secrets(con, self.box, self.source_id).get(TOKENS_SECRET)
        return decode_tokens(secret.get_secret_value()) if secret else None

    def save(self, tokens: Tokens) -> None:
        with self.store.transaction() as con:
            put_secret(con, self.box, self.source_id, TOKENS_SECRET, encode_tokens(tokens))
