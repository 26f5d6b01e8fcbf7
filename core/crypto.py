"""Encryption of stored credentials with MultiFernet.

Keys never live in the DuckDB file: they come from `DATACONN_SECRET_KEYS` (comma-separated, newest first) or from
a git-ignored key file created on first run with mode 0600. The first key encrypts; every key decrypts, which is
what lets a rotation re-encrypt rows while old keys are still configured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr


class SecretsError(Exception):
    """Keys are missing or malformed, or a stored secret cannot be decrypted; the message is safe to show."""


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def parse_keys(text: str, origin: str) -> list[str]:
    keys = [k.strip() for k in text.replace("\n", ",").split(",") if k.strip()]
    if not keys:
        raise SecretsError(f"No encryption key found in {origin}.")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise SecretsError(
                f"Key {position} in {origin} is not a valid Fernet key (32 url-safe base64-encoded bytes)."
            ) from None
    return keys


def read_key_file(path: Path) -> list[str]:
    return parse_keys(path.read_text(encoding="ascii"), f"key file {path.name}")


def write_key_file(path: Path, keys: list[str]) -> None:
    """Replace the key file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates it with mode 0600
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write("\n".join(keys) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    # Sync the directory too: after a power cut the rename must not be undone while the database already holds
    # rows encrypted under the new key.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_keys(env_keys: str | None, key_file: Path) -> list[str]:
    """Keys from the environment if set, else from the key file, creating it on first run."""
    if env_keys:
        return parse_keys(env_keys, "DATACONN_SECRET_KEYS")
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two processes starting at once must not each write a different key.
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return read_key_file(key_file)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(generate_key() + "\n")
    return read_key_file(key_file)


class SecretBox:
    """Encrypts with the newest key, decrypts with any configured key."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretsError("At least one encryption key is required.")
        self._fernet = MultiFernet([Fernet(k) for k in keys])
        self._fingerprint_key = _derive(keys[0], b"dataconn settings fingerprint v1")

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str, *, max_age_s: int | None = None) -> SecretStr:
        """Stored secrets never expire (no `max_age_s`); short-lived tokens such as OAuth states do."""
        try:
            return SecretStr(self._fernet.decrypt(token.encode("ascii"), ttl=max_age_s).decode("utf-8"))
        except (InvalidToken, ValueError):
            raise SecretsError(
                "A stored credential cannot be decrypted with the configured keys: "
                "was a key removed before rotation finished? Re-enter the credential or restore the key."
            ) from None

    def fingerprint(self, text: str) -> str:
        """HMAC-SHA256 of `text` (hex) under a key derived from the newest key: equal texts give equal
        fingerprints, and without the key a fingerprint reveals nothing of the text (credentials included).
        A key rotation changes every fingerprint."""
        return hmac.new(self._fingerprint_key, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def rotate(self, token: str) -> str:
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, ValueError):
            raise SecretsError("A stored credential cannot be decrypted with the configured keys.") from None


def _derive(key: str, purpose: bytes) -> bytes:
    """A separate key for `purpose`, so the encryption key itself is never used for anything else."""
    return hmac.new(base64.urlsafe_b64decode(key.encode("ascii")), purpose, hashlib.sha256).digest()
