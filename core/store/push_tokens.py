"""The credentials of Push sources: bearer tokens kept as hashes, signing secrets kept encrypted (docs/real-time.md,
"The push endpoint").

A token is shown once, when it is made (`issue`): afterwards only its SHA-256 (`push_tokens.token_hash`) and its last
four characters remain, so the file gives nobody a working token. Checking a request hashes the token it presents
and looks the hash up (`find`): one indexed probe, constant-time in what matters (the comparison is of hashes, so
timing reveals nothing about the token). A source in signature mode also keeps the same secret encrypted in
`source_secrets` (`SIGNING_SECRET`), since an HMAC can only be checked by whoever holds its key.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import duckdb
from pydantic import SecretStr

from core.providers.push.spec import SIGNING_SECRET
from core.store.crypto import SecretBox
from core.store.secret_store import delete_secret, put_secret, read_secrets

TOKEN_PREFIX = "dcp_"  # lets a secret scanner, or a person, tell what the string is


@dataclass(frozen=True)
class PushCredential:
    """What a presented token opens: the source, and whether its requests must also be signed."""

    source_id: int
    signed: bool


@dataclass(frozen=True)
class TokenInfo:
    """A source's token as pages may show it (never the token itself)."""

    hint: str
    signed: bool
    created_at: datetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def issue(con: duckdb.DuckDBPyConnection, box: SecretBox, source_id: int, now: datetime, *, signed: bool) -> str:
    """Make the source's token (replacing any older one, which stops working at once) and return it: the only time
    it exists in the clear. In the caller's transaction."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    con.execute("DELETE FROM push_tokens WHERE source_id = ?", [source_id])
    con.execute(
        "INSERT INTO push_tokens (source_id, token_hash, token_hint, signed, created_at) VALUES (?, ?, ?, ?, ?)",
        [source_id, token_hash(token), token[-4:], signed, now],
    )
    if signed:
        put_secret(con, box, source_id, SIGNING_SECRET, token)
    else:
        delete_secret(con, source_id, SIGNING_SECRET)
    return token


def revoke(con: duckdb.DuckDBPyConnection, source_id: int) -> bool:
    """Forget the source's token (requests with it are refused from now on); False when it had none."""
    gone = con.execute("DELETE FROM push_tokens WHERE source_id = ? RETURNING source_id", [source_id]).fetchall()
    delete_secret(con, source_id, SIGNING_SECRET)
    return bool(gone)


def find(con: duckdb.DuckDBPyConnection, token: str) -> PushCredential | None:
    """The source a presented token opens, or None."""
    rows = con.execute("SELECT source_id, signed FROM push_tokens WHERE token_hash = ?", [token_hash(token)]).fetchall()
    return PushCredential(int(rows[0][0]), bool(rows[0][1])) if rows else None


def token_info(con: duckdb.DuckDBPyConnection, source_id: int) -> TokenInfo | None:
    rows = con.execute(
        "SELECT token_hint, signed, created_at FROM push_tokens WHERE source_id = ?", [source_id]
    ).fetchall()
    return TokenInfo(str(rows[0][0]), bool(rows[0][1]), rows[0][2]) if rows else None


def signing_secret(con: duckdb.DuckDBPyConnection, box: SecretBox, source_id: int) -> SecretStr | None:
    """The key a signed source's requests are checked with (None: not in signature mode, or no key to decrypt)."""
    return read_secrets(con, box, source_id).get(SIGNING_SECRET)
