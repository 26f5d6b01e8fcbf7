"""Changes to the configuration, checked against the actor's role and written to the audit log in their own
transaction (docs/access.md).

`audited_change` wraps a write transaction: it reads the configuration (sites, meters, sources, which credentials
and push tokens each source has) before the caller's change and again after it, and turns the difference into
audit entries, one per object. Reading the difference rather than trusting each caller to describe its change means
that no write path (a page, the API, `config import`, Import Sites, the CLI) can change something without a record,
and that the permission is judged on what really changed: a save that replaces an API key needs the admin role even
if it came through a form an editor may use, and a save that deletes a source needs it too. A refusal raises
`Forbidden` inside the transaction, so nothing of the change lands.

Credentials are compared by their ciphertext and shown only as "API Key entered / replaced / removed": never a
value. OAuth grants (refreshed by the collector all the time) count only as present or absent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from core.actors import Actor, Permission, current_actor, require
from core.catalog.field_labels import METER_LABELS, SITE_LABELS, SOURCE_LABELS
from core.models import ApiSettings
from core.providers.registry import CREDENTIAL_LABELS, OBTAINED_SECRETS
from core.store import audit_log
from core.store.audit_log import SECRET_MARK, AuditEntry
from core.store.store import Store

Row = dict[str, Any]


@dataclass
class Snapshot:
    """The configuration as the audit compares it: each object's fields by id."""

    sites: dict[int, Row]
    meters: dict[int, Row]
    sources: dict[int, Row]
    secrets: dict[tuple[int, str], str]  # (source id, name) -> a digest of the ciphertext ('' for OAuth grants)
    push_tokens: dict[int, str]  # source id -> a digest of the token's hash and mode


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def snapshot(con: duckdb.DuckDBPyConnection) -> Snapshot:
    sites = {
        int(r[0]): {"name": r[1], "latitude": r[2], "longitude": r[3], "timezone": r[4]}
        for r in con.sql("SELECT id, name, latitude, longitude, timezone FROM sites").fetchall()
    }
    meters = {
        int(r[0]): {"site_id": int(r[1]), "name": r[2], "category": r[3]}
        for r in con.sql("SELECT id, site_id, name, category FROM meters").fetchall()
    }
    sources: dict[int, Row] = {}
    for r in con.sql(
        "SELECT id, meter_id, name, source_type, capacity_kw, carbon_intensity_g_per_kwh, cost_per_mwh, metadata"
        " FROM energy_sources"
    ).fetchall():
        sources[int(r[0])] = {
            "meter_id": int(r[1]),
            "name": r[2],
            "source_type": r[3],
            "capacity_kw": r[4],
            "carbon_intensity_g_per_kwh": r[5],
            "cost_per_mwh": r[6],
            _METADATA: r[7],  # as stored: read into fields only for a source that changed (`_expanded`)
        }
    secrets = {
        (int(r[0]), str(r[1])): "" if r[1] in OBTAINED_SECRETS else _digest(str(r[2]))
        for r in con.sql("SELECT source_id, name, ciphertext FROM source_secrets").fetchall()
    }
    push_tokens = {
        int(r[0]): _digest(f"{r[1]}/{r[2]}")
        for r in con.sql("SELECT source_id, token_hash, signed FROM push_tokens").fetchall()
    }
    return Snapshot(sites, meters, sources, secrets, push_tokens)


_METADATA = "_metadata"


def _expanded(row: Row) -> Row:
    """A source's row with its stored metadata read into the settings' fields (use_api, api_provider, ...). Done
    only for the sources a change touched: reading 30,000 sources' settings through their model took most of a
    second, comparing the stored text a few milliseconds."""
    if _METADATA not in row:
        return row
    out = {key: value for key, value in row.items() if key != _METADATA}
    return out | _api_fields(row[_METADATA])


def _api_fields(metadata: str | dict[str, Any]) -> Row:
    raw = json.loads(metadata) if isinstance(metadata, str) else dict(metadata)
    try:
        return ApiSettings.from_metadata(raw).model_dump(mode="json")
    except ValueError:  # a row written by hand in SQL that no longer validates: compared as stored
        return {f"metadata.{key}": value for key, value in raw.items()}


def _changed(before: Row, after: Row) -> list[str]:
    return [key for key in after if before.get(key) != after.get(key)] + [k for k in before if k not in after]


def _describe(fields: list[str], before: Row, after: Row, labels: dict[str, str]) -> str:
    parts = [f"{labels.get(f, f)} {before.get(f)!r} -> {after.get(f)!r}" for f in fields[:6]]
    more = f" and {len(fields) - 6} more" if len(fields) > 6 else ""
    return "; ".join(parts) + more


def _objects(kind: str, before: dict[int, Row], after: dict[int, Row], labels: dict[str, str]) -> list[AuditEntry]:
    entries = []
    for object_id, stored in after.items():
        old = before.get(object_id)
        if old == stored:
            continue
        row = _expanded(stored)
        if old is None:
            entries.append(AuditEntry("create", kind, object_id, str(row["name"]), f"{kind} created", after=row))
            continue
        old = _expanded(old)
        if fields := _changed(old, row):
            entries.append(
                AuditEntry(
                    "update",
                    kind,
                    object_id,
                    str(row["name"]),
                    _describe(fields, old, row, labels),
                    fields=tuple(fields),
                    before={f: old.get(f) for f in fields},
                    after={f: row.get(f) for f in fields},
                )
            )
    for object_id, old in before.items():
        if object_id not in after:
            gone = _expanded(old)
            entries.append(AuditEntry("delete", kind, object_id, str(gone["name"]), f"{kind} deleted", before=gone))
    return entries


def _credentials(before: Snapshot, after: Snapshot) -> list[AuditEntry]:
    names = {i: str(r["name"]) for i, r in (before.sources | after.sources).items()}
    entries = []
    for key in sorted(set(before.secrets) | set(after.secrets)):
        source_id, name = key
        old, new = before.secrets.get(key), after.secrets.get(key)
        if old == new:
            continue
        if new is None and source_id not in after.sources:
            continue  # went with its source, whose deletion is its own entry
        label = CREDENTIAL_LABELS.get(name, name)
        verb = "entered" if old is None else "removed" if new is None else "replaced"
        action = {"entered": "create", "removed": "delete", "replaced": "update"}[verb]
        entries.append(
            AuditEntry(
                action,
                "credential",
                source_id,
                names.get(source_id, ""),
                f"{label} {verb}",
                fields=(name,),
                before={name: SECRET_MARK} if old is not None else {},
                after={name: SECRET_MARK} if new is not None else {},
            )
        )
    for source_id in sorted(set(before.push_tokens) | set(after.push_tokens)):
        old, new = before.push_tokens.get(source_id), after.push_tokens.get(source_id)
        if old == new or (new is None and source_id not in after.sources):
            continue
        verb = "issued" if old is None else "revoked" if new is None else "replaced"
        action = {"issued": "create", "revoked": "delete", "replaced": "update"}[verb]
        entries.append(AuditEntry(action, "push token", source_id, names.get(source_id, ""), f"push token {verb}"))
    return entries


# A saved Test Connection result is part of a source's settings, though no form field shows it as such.
_TEST_RESULT_LABELS = {"connection_status": "Connection Status", "last_tested": "Last Tested"}


def differences(before: Snapshot, after: Snapshot) -> list[AuditEntry]:
    """The audit entries that turn `before` into `after`: sites, meters, sources, then credentials."""
    return [
        *_objects("site", before.sites, after.sites, dict(SITE_LABELS)),
        *_objects("meter", before.meters, after.meters, dict(METER_LABELS)),
        *_objects("source", before.sources, after.sources, dict(SOURCE_LABELS) | _TEST_RESULT_LABELS),
        *_credentials(before, after),
    ]


def permission_needed(entries: list[AuditEntry]) -> list[Permission]:
    """What the change takes, judged by what it did: credentials and deletions need more than edits."""
    needed = []
    if any(e.object_type in ("credential", "push token") for e in entries):
        needed.append(Permission.CREDENTIALS)
    if any(e.action == "delete" and e.object_type in ("site", "meter", "source") for e in entries):
        needed.append(Permission.DELETE)
    if entries:
        needed.append(Permission.EDIT_CONFIG)
    return needed


def _has_audit_log(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'audit_log'").fetchall()[0][0])


@contextmanager
def audited_change(
    store: Store,
    permission: Permission = Permission.EDIT_CONFIG,
    *,
    origin: str = "",
    timeout_s: float | None = None,
    extra: list[AuditEntry] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A write transaction on the configuration on behalf of the current actor.

    `permission` is checked before anything is read (the page's refusal comes before validation); what the change
    really did is checked again before commit (`permission_needed`). `extra` entries (appended to by the caller
    inside the block) are recorded with the differences: actions the configuration tables do not show.
    """
    actor = require(permission)
    with store.transaction(timeout_s=timeout_s) as con:
        if not _has_audit_log(con):  # a file from before migration 15, being migrated (runtimes migrate first)
            yield con
            return
        before = snapshot(con)
        yield con
        entries = differences(before, snapshot(con)) + list(extra or [])
        for needed in permission_needed(entries):
            require(needed)  # Forbidden rolls the transaction back
        audit_log.record(con, actor, entries, datetime.now(UTC), origin=origin)


def record_now(
    store: Store,
    entries: list[AuditEntry],
    *,
    actor: Actor | None = None,
    origin: str = "",
    timeout_s: float | None = None,
) -> None:
    """Record entries in a transaction of their own (an action whose change is not in the file, e.g. a sign-in)."""
    with store.transaction(timeout_s=timeout_s) as con:
        audit_log.record(con, actor or current_actor(), entries, datetime.now(UTC), origin=origin)
