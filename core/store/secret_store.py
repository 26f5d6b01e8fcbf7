"""Credentials of energy sources, stored only as ciphertext in `source_secrets`.

Also what the keys need from the database (`core.store.crypto` has no DuckDB): whether any credential is stored (a key
file may be created only while none is), the operator's one line when some cannot be decrypted (`key_notice`, kept
between page runs by `KeyNoticeCache`), and removing exactly those (`forget_undecryptable`, the `forget-credentials`
command).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
from pydantic import SecretStr

from core.actors import Permission, require
from core.store import audit_log
from core.store.audit_log import AuditEntry
from core.store.crypto import KeyState, SecretBox, SecretsError
from core.store.store import Store, StoreError

log = logging.getLogger(__name__)
STORED_CHECK_WAIT_S = 2.0


# The credentials each source uses, as a table expression (source_id, name, ciphertext, updated_at): its own rows,
# or, for a source that shares another's (`ApiSettings.credentials_source_id`, metadata key credentialsSourceId:
# an account's key stored once for all its sites), that source's rows while it exists. Every read of a source's
# credentials goes through it; writes go to the row's owner (`core.store.oauth_tokens` for renewed tokens).
def credentials_source_of(metadata: str) -> str:
    """SQL: the `credentialsSourceId` a source's `metadata` column (named `metadata`) gives, or NULL."""
    return f"TRY_CAST(json_extract_string({metadata}, '$.credentialsSourceId') AS BIGINT)"


SOURCE_CREDENTIALS = (
    "(SELECT s.id AS source_id, x.name, x.ciphertext, x.updated_at FROM energy_sources s"
    f" LEFT JOIN energy_sources h ON h.id = {credentials_source_of('s.metadata')}"
    " JOIN source_secrets x ON x.source_id = coalesce(h.id, s.id))"
)


def credentials_holder(con: duckdb.DuckDBPyConnection, source_id: int) -> int:
    """The source whose rows hold `source_id`'s credentials: its `credentialsSourceId` when that source exists, else
    itself (`SOURCE_CREDENTIALS` reads by the same rule)."""
    rows = con.execute(
        "SELECT id FROM energy_sources"
        f" WHERE id = (SELECT {credentials_source_of('metadata')} FROM energy_sources WHERE id = ?)",
        [source_id],
    ).fetchall()
    return int(rows[0][0]) if rows else source_id


def put_secret(con: duckdb.DuckDBPyConnection, box: SecretBox, source_id: int, name: str, value: str) -> None:
    put_secrets(con, box, [(source_id, name, value)])


def put_secrets(con: duckdb.DuckDBPyConnection, box: SecretBox, secrets: list[tuple[int, str, str]]) -> None:
    """Store (source id, name, plaintext) triples, encrypted, in one statement whatever their number: a statement
    each cost ~1.6 ms, which held the database for seconds when an import set thousands of keys."""
    if not secrets:
        return
    ids, names, values = zip(*secrets, strict=True)
    con.execute(
        "INSERT INTO source_secrets (source_id, name, ciphertext)"
        " SELECT unnest(?::BIGINT[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[])"
        " ON CONFLICT (source_id, name) DO UPDATE SET ciphertext = excluded.ciphertext, updated_at = now()",
        [list(ids), list(names), [box.encrypt(value) for value in values]],
    )


def delete_secret(con: duckdb.DuckDBPyConnection, source_id: int, name: str) -> None:
    delete_secrets(con, [(source_id, name)])


def delete_secrets(con: duckdb.DuckDBPyConnection, secrets: list[tuple[int, str]]) -> None:
    """Delete (source id, name) pairs in one statement."""
    if not secrets:
        return
    ids, names = zip(*secrets, strict=True)
    con.execute(
        "DELETE FROM source_secrets s USING (SELECT unnest(?::BIGINT[]) AS source_id, unnest(?::VARCHAR[]) AS name) d"
        " WHERE s.source_id = d.source_id AND s.name = d.name",
        [list(ids), list(names)],
    )


def read_secrets(con: duckdb.DuckDBPyConnection, box: SecretBox, source_id: int) -> dict[str, SecretStr]:
    rows = con.execute(f"SELECT name, ciphertext FROM {SOURCE_CREDENTIALS} WHERE source_id = ?", [source_id]).fetchall()
    return {name: box.decrypt(token) for name, token in rows}


def read_all_secrets(
    con: duckdb.DuckDBPyConnection, box: SecretBox, source_ids: Collection[int] | None = None
) -> tuple[dict[int, dict[str, SecretStr]], dict[int, str]]:
    """Every source's secrets in one query (shared ones under each source using them), or only those of
    `source_ids`, and, apart, why a source's cannot be decrypted (so one unreadable secret stops only the sources
    using it). One query for many sources: a query per source costs ~2.5 ms (2.5 s for 1,000)."""
    secrets: dict[int, dict[str, SecretStr]] = {}
    unreadable: dict[int, str] = {}
    query = f"SELECT source_id, name, ciphertext FROM {SOURCE_CREDENTIALS}"
    if source_ids is not None:
        rows = con.execute(f"{query} WHERE source_id IN (SELECT unnest(?::BIGINT[]))", [list(source_ids)]).fetchall()
    else:
        rows = con.sql(query).fetchall()
    for source_id, name, token in rows:
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
    actor = require(Permission.ROTATE_KEYS)
    with store.transaction() as con:
        rows = con.sql("SELECT source_id, name, ciphertext FROM source_secrets").fetchall()
        rotated = [(box.rotate(token), source_id, name) for source_id, name, token in rows]
        summary = f"{len(rotated):,} stored credentials re-encrypted under the newest key"
        audit_log.record(con, actor, [AuditEntry("rotate keys", "keys", None, "", summary)], datetime.now(UTC))
        for token, source_id, name in rotated:
            con.execute(
                "UPDATE source_secrets SET ciphertext = ?, updated_at = now() WHERE source_id = ? AND name = ?",
                [token, source_id, name],
            )
    return len(rotated)


def credentials_stored(store: Store) -> bool | None:
    """Whether any credential is stored: False for a database or table that does not exist yet; None when the
    database cannot be read now (held by another program, unreadable), which must never count as "none"."""
    if not store.exists():
        return False
    try:
        # A short wait: asked before each collection pass while the key file is missing, it must not hold a pass up
        # for the whole lock timeout; "cannot tell" is safe (no key is made).
        with store.connect(read_only=True, timeout_s=STORED_CHECK_WAIT_S) as con:
            if not con.sql("SELECT 1 FROM duckdb_tables() WHERE table_name = 'source_secrets'").fetchall():
                return False
            return bool(con.sql("SELECT EXISTS (SELECT 1 FROM source_secrets)").fetchall()[0][0])
    except (StoreError, duckdb.Error):
        log.debug("cannot tell whether credentials are stored in %s", store.path, exc_info=True)
        return None


@dataclass(frozen=True)
class LostCredential:
    """A stored credential that the configured keys cannot decrypt (its name only, never its value)."""

    source_id: int
    source: str | None  # None when the source row is gone
    site: str | None
    name: str

    def line(self) -> str:
        where = f'"{self.source}" (site "{self.site}")' if self.source is not None else "(removed)"
        return f"source {self.source_id} {where}: {self.name}"


def _undecryptable(con: duckdb.DuckDBPyConnection, box: SecretBox) -> list[tuple[LostCredential, str]]:
    rows = con.sql(
        "SELECT x.source_id, e.name, s.name, x.name, x.ciphertext FROM source_secrets x"
        " LEFT JOIN energy_sources e ON e.id = x.source_id LEFT JOIN meters m ON m.id = e.meter_id"
        " LEFT JOIN sites s ON s.id = m.site_id ORDER BY x.source_id, x.name"
    ).fetchall()
    lost = []
    for source_id, source, site, name, token in rows:
        try:
            box.decrypt(token)
        except SecretsError:
            lost.append((LostCredential(int(source_id), source, site, name), token))
    return lost


def key_notice(store: Store, box: SecretBox, *, timeout_s: float | None = None) -> str | None:
    """The operator's one line about the keys (stored credentials that cannot be decrypted, or no usable key), or
    None when all is well. Refreshes the box first: a restored key file counts at once, and a missing one is
    created if no credential is stored any more."""
    box.refresh()
    with store.connect(read_only=True, timeout_s=timeout_s) as con:
        lost = _undecryptable(con, box)
    return box.notice(len({credential.source_id for credential, _ in lost}))


class KeyNoticeCache:
    """`key_notice` for a process that draws it on every screen (the dashboard: every click reruns the page).

    Asking costs a read under the database's lock and a decryption of every stored credential (45 ms for 3,000), so
    the answer is kept while the box's keys stay the same, for at most `max_age_s`. Keys that change (a key file
    restored, fixed or rotated: the box notices by its `stat`, in microseconds) give a fresh answer at once; a change
    of the stored credentials alone (`forget-credentials`, a source deleted) shows within `max_age_s`.
    """

    def __init__(self, store: Store, box: SecretBox, *, max_age_s: float) -> None:
        self._store = store
        self._box = box
        self._max_age_s = max_age_s
        # The keys asked with, when, and the answer: one reference, replaced whole, so page runs of several sessions
        # (threads) need no lock; at worst two of them ask at the same moment.
        self._kept: tuple[KeyState, float, str | None] | None = None

    def notice(self, *, timeout_s: float | None = None) -> str | None:
        # The keys before asking: keys that change while the answer is computed make the next call ask again.
        keys = self._box.state()
        now = time.monotonic()
        kept = self._kept
        if kept is not None and kept[0] == keys and now - kept[1] < self._max_age_s:
            return kept[2]
        answer = key_notice(self._store, self._box, timeout_s=timeout_s)  # a failure (held database) is not kept
        self._kept = (keys, now, answer)
        return answer


def forget_undecryptable(store: Store, box: SecretBox, *, dry_run: bool) -> list[LostCredential]:
    """Delete the stored credentials that the configured keys cannot decrypt, and only those, in one transaction;
    returns them (with `dry_run`, only lists them). Refused while the keys are unreadable or not keys
    (`SecretsError`): which credentials they would decrypt cannot be known then."""
    if box.state().broken:
        raise SecretsError(f"{box.notice(0)} Nothing was deleted.")
    if dry_run:
        with store.connect(read_only=True) as con:
            return [credential for credential, _ in _undecryptable(con, box)]
    actor = require(Permission.CREDENTIALS)
    with store.transaction() as con:
        lost = _undecryptable(con, box)
        audit_log.record(
            con,
            actor,
            [
                AuditEntry(
                    "delete",
                    "credential",
                    c.source_id,
                    c.source or "",
                    f"{c.name} forgotten: no configured key reads it",
                )
                for c, _ in lost
            ],
            datetime.now(UTC),
        )
        for credential, token in lost:
            con.execute(
                "DELETE FROM source_secrets WHERE source_id = ? AND name = ? AND ciphertext = ?",
                [credential.source_id, credential.name, token],
            )
    return [credential for credential, _ in lost]
