"""Credentials of energy sources, stored only as ciphertext in `source_secrets`."""

from __future__ import annotations

import duckdb
from pydantic import SecretStr

from core.crypto import SecretBox, SecretsError
from core.store import Store


def put_secret(con: duckdb.DuckDBPyConnection, box: SecretBox, source_id: int, name: str, value: str) -> None:
    con.execute(
        "INSERT INTO source_secrets (source_id, name, ciphertext) VALUES (?, ?, ?)"
        " ON CONFLICT (source_id, name) DO UPDATE SET ciphertext = excluded.ciphertext, updated_at = now()",
        [source_id, name, box.encrypt(value)],
    )


def delete_secret(con: duckdb.DuckDBPyConnection, source_id: int, name: str) -> None:
    con.execute("DELETE FROM source_secrets WHERE source_id = ? AND name = ?", [source_id, name])


def read_secrets(con: duckdb.DuckDBPyConnection, box: SecretBox, source_id: int) -> dict[str, SecretStr]:
    rows = con.execute("SELECT name, ciphertext FROM source_secrets WHERE source_id = ?", [source_id]).fetchall()
    return {name: box.decrypt(token) for name, token in rows}


def read_all_secrets(
    con: duckdb.DuckDBPyConnection, box: SecretBox
) -> tuple[dict[int, dict[str, SecretStr]], dict[int, str]]:
    """Every source's secrets in one query, and, apart, why a source's cannot be decrypted (so one unreadable
    secret stops only its own source)."""
    secrets: dict[int, dict[str, SecretStr]] = {}
    unreadable: dict[int, str] = {}
    for source_id, name, token in con.sql("SELECT source_id, name, ciphertext FROM source_secrets").fetchall():
        try:
            secrets.setdefault(int(source_id), {})[name] = box.decrypt(token)
        except SecretsError as exc:
            unreadable[int(source_id)] = str(exc)
    return secrets, unreadable


def load_secrets(store: Store, box: SecretBox, source_id: int) -> dict[str, SecretStr]:
    with store.connect(read_only=True) as con:
        return read_secrets(con, box, source_id)


def rotate_all(store: Store, box: SecretBox) -> int:
    """Re-encrypt every stored secret under the box's newest key, in one transaction. Returns the row count.

    Decrypting everything first means a row that no configured key can read aborts the rotation before any
    row changes, so a rotation never leaves the table half old, half new.
    """
    with store.transaction() as con:
        rows = con.sql("SELECT source_id, name, ciphertext FROM source_secrets").fetchall()
        rotated = [(box.rotate(token), source_id, name) for source_id, name, token in rows]
        for token, source_id, name in rotated:
            con.execute(
                "UPDATE source_secrets SET ciphertext = ?, updated_at = now() WHERE source_id = ? AND name = ?",
                [token, source_id, name],
            )
    return len(rotated)
