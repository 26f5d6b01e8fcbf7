"""A Push source's endpoint and token, as the Data Connections page and `jobs.cli push-token` handle them
(docs/real-time.md, "The push endpoint"); the token's storage is `core.store.push_tokens`."""

from __future__ import annotations

from datetime import datetime, timedelta

from core.actors import Permission
from core.catalog import catalog as cat
from core.catalog.audited import audited_change
from core.config import Settings, ingest_url
from core.models import Provider, Source
from core.store import push_tokens
from core.store.crypto import SecretBox
from core.store.push_tokens import TokenInfo
from core.store.store import Store


class NotAPushSource(ValueError):
    """The source does not exist or does not take pushed readings: said in the user's terms."""


def endpoint_url(settings: Settings, source_id: int) -> str:
    return f"{ingest_url(settings)}/api/v1/sources/{source_id}/readings"


def _push_source(store: Store, source_id: int) -> Source:
    try:
        source = cat.load_catalog(store).source(source_id)
    except cat.NotFound:
        raise NotAPushSource(f"No source with id {source_id}: see `SELECT id, name FROM energy_sources`.") from None
    if source.api.api_provider is not Provider.PUSH:
        raise NotAPushSource(
            f"{source.name} (source {source_id}) is not a Push (HTTP) source: choose that provider for it in Data"
            " Connections first."
        )
    return source


def make_token(store: Store, box: SecretBox, source_id: int, now: datetime, *, signed: bool = False) -> str:
    """A new token for the source (any older one stops working at once); shown once, never stored in the clear."""
    _push_source(store, source_id)
    with audited_change(store, Permission.CREDENTIALS) as con:
        return push_tokens.issue(con, box, source_id, now, signed=signed)


def revoke_token(store: Store, source_id: int) -> bool:
    """Requests with the source's token are refused from now on; False when it had none."""
    _push_source(store, source_id)
    with audited_change(store, Permission.CREDENTIALS) as con:
        return push_tokens.revoke(con, source_id)


def token_of(store: Store, source_id: int) -> TokenInfo | None:
    with store.connect(read_only=True) as con:
        return push_tokens.token_info(con, source_id)


def tokens_for_new(store: Store, box: SecretBox, site_id: int, now: datetime) -> dict[int, tuple[str, str]]:
    """A token for every Push source of the site that has none (just saved as Push): {source id: (name, token)},
    for the page to show once."""
    catalog = cat.load_catalog(store)
    meters = {m.id for m in catalog.meters if m.site_id == site_id}
    made: dict[int, tuple[str, str]] = {}
    with audited_change(store, Permission.CREDENTIALS) as con:
        have = {int(r[0]) for r in con.sql("SELECT source_id FROM push_tokens").fetchall()}
        for source in catalog.sources:
            if source.meter_id in meters and source.api.api_provider is Provider.PUSH and source.id not in have:
                made[source.id] = (source.name, push_tokens.issue(con, box, source.id, now, signed=False))
    return made


def last_received(store: Store, source_id: int, now: datetime) -> datetime | None:
    """When the newest reading of the source was stored (the last week looked at: a sender quiet for longer has
    stopped anyway)."""
    with store.connect(read_only=True) as con:
        since = now - timedelta(days=7)
        query = "SELECT max(received_at) FROM readings WHERE source_id = ? AND ts >= ?"
        rows = con.execute(query, [source_id, since]).fetchall()
    return rows[0][0] if rows and rows[0][0] is not None else None
