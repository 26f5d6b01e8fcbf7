"""What the quota planner (`core.catalog.quota_plan`) is given: the sources being changed and every other saved source.

Save All Connections (`core.catalog.connections`) and the config import (`core.catalog.config_io`) refuse a schedule
the vendors' budgets cannot carry, and the Data Connections page shows the figures (`quota_checks`). All of them
describe the configuration as it will be: the sources being changed (`Edited`: the page's drafts, or a file's sources)
and every saved source they do not replace, counted as it is. A source's account is the fingerprint of its SolarEdge
API key (typed, else stored) or its Enphase Client ID (`account`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from core.catalog import catalog as cat
from core.catalog import quota_plan
from core.catalog.source_drafts import SourceDraft
from core.collect.channels import channel_for
from core.models import Category, Provider, Source, UpdateFrequency
from core.store.crypto import SecretBox, SecretsError
from core.store.secret_store import SOURCE_CREDENTIALS
from core.store.store import Store

_KEYED = frozenset({Provider.SOLAREDGE.value, Provider.SOLAREDGE_V1.value})


@dataclass(frozen=True)
class Edited:
    """A source being changed, in plain values: a draft on the page or a source of an import file.

    `key` names it in the planner's answers; `source_id` is the saved source it replaces (None: a new one); `api`
    its API settings as a mapping (`ApiSettings` field names; raw page values are tolerated); `typed_key` the
    SolarEdge API key given with it, "" when cleared, None when the stored key stays.
    """

    key: str
    source_id: int | None
    category: Category
    source_type: str
    api: Mapping[str, Any]
    typed_key: str | None = field(default=None, repr=False)  # a secret: never in a repr
    key_of: int | None = None  # a saved source whose stored key a new source uses (it shares its credentials)


def planned_sources(
    catalog: cat.Catalog, edited: Sequence[Edited], replaced: set[int], accounts: Mapping[int, str]
) -> list[quota_plan.PlannedSource]:
    """The edited sources (editable) and every saved source not in `replaced` (fixed), as the planner sees them.

    `replaced` are the ids of saved sources the edit replaces or removes; `accounts` the stored keys' fingerprints
    by source id (`stored_accounts`). Ordered by source id, new sources last, as the collector reads them (a vendor
    site is charged to its first source's key).
    """
    meters = {m.id: m for m in catalog.meters}
    found: list[tuple[float, quota_plan.PlannedSource | None]] = []
    for one in edited:
        stored_from = one.source_id if one.source_id is not None else one.key_of
        stored_key = accounts.get(stored_from) if stored_from is not None else None
        fingerprint = account(one.api, one.typed_key, stored_key)
        planned = planned_source(one.key, one.api, one.source_type, one.category, fingerprint, editable=True)
        found.append((one.source_id if one.source_id is not None else float("inf"), planned))
    for source in catalog.sources:
        if source.id not in replaced and source.meter_id in meters:
            api = source.api.model_dump()
            fingerprint = account(api, None, accounts.get(source.id))
            category = meters[source.meter_id].category
            planned = planned_source(f"s{source.id}", api, source.source_type, category, fingerprint, editable=False)
            found.append((source.id, planned))
    return [planned for _, planned in sorted(found, key=lambda item: item[0]) if planned is not None]


def planned_source(
    key: str, api: Mapping[str, Any], source_type: str, category: Category, account: str | None, *, editable: bool
) -> quota_plan.PlannedSource | None:
    """One source for the planner; None when it costs no vendor calls (API off, simulator) or is unreadable."""
    try:
        provider = Provider(str(api.get("api_provider")))
        frequency = UpdateFrequency(str(api.get("update_frequency")))
    except ValueError:
        return None
    if not api.get("use_api") or provider not in quota_plan.BUDGETED:
        return None
    vendor_site = str(api.get("system_id") or "").strip() or f"?{key}"  # no id yet: a vendor site of its own
    channel = channel_for(category, source_type)
    return quota_plan.PlannedSource(key, provider, vendor_site, account or f"?{key}", channel, frequency, editable)


def account(api: Mapping[str, Any], typed_key: str | None, stored: str | None) -> str | None:
    """The fingerprint naming the source's account: its SolarEdge API key (typed, else stored) or Enphase Client ID.

    None (an account of its own) when there is none: no Client ID, a cleared key, or no stored key.
    """
    if str(api.get("api_provider")) == Provider.ENPHASE.value:
        client_id = str(api.get("client_id") or "").strip()
        return quota_plan.account_fingerprint(client_id) if client_id else None
    if typed_key is None:
        return stored
    return quota_plan.account_fingerprint(typed_key) if typed_key.strip() else None


def keys_to_compare(catalog: cat.Catalog, edited: Sequence[Edited], removed_ids: set[int]) -> list[Source]:
    """Saved sources whose stored SolarEdge key matters to the plan: none unless an edited source uses SolarEdge.

    Those the edit replaces (their key stays unless one is typed) and the enabled ones of the same providers.
    """
    providers = {str(e.api.get("api_provider")) for e in edited if e.api.get("use_api")} & _KEYED
    if not providers:
        return []
    edited_ids = {e.source_id for e in edited} | {e.key_of for e in edited}
    return [
        s
        for s in catalog.sources
        if "api_key" in s.secret_names
        and s.id not in removed_ids
        and (s.id in edited_ids or (s.api.use_api and s.api.api_provider.value in providers))
    ]


def stored_accounts(con: duckdb.DuckDBPyConnection, box: SecretBox, sources: Iterable[Source]) -> dict[int, str]:
    """Fingerprints of these sources' stored API keys, by source id. The keys are decrypted here and dropped."""
    ids = [source.id for source in sources]
    if not ids:
        return {}
    sql = f"SELECT source_id, ciphertext FROM {SOURCE_CREDENTIALS} WHERE name = 'api_key'"
    sql += " AND source_id IN (SELECT UNNEST(?))"
    return key_accounts(box, {int(r[0]): str(r[1]) for r in con.execute(sql, [ids]).fetchall()})


def key_accounts(box: SecretBox, api_keys: Mapping[int, str]) -> dict[int, str]:
    """Fingerprints of stored API keys given as ciphertext by source id (decrypted here and dropped). A key that
    cannot be decrypted is left out: the collector cannot use it either, so it counts as an account of its own."""
    found: dict[int, str] = {}
    for source_id, token in api_keys.items():
        try:
            key = box.decrypt(token)
        except SecretsError:
            continue
        found[source_id] = quota_plan.account_fingerprint(key.get_secret_value())
    return found


def refusals(
    planned: Sequence[quota_plan.PlannedSource], *, enphase_plan: str = quota_plan.DEFAULT_ENPHASE_PLAN
) -> dict[str, str]:
    """Edited source key -> why its schedule does not fit (see `quota_plan.refusals`)."""
    return quota_plan.refusals(quota_plan.check(planned, enphase_plan=enphase_plan))


# --- the page's drafts -----------------------------------------------------------------------------------------


def edited_drafts(catalog: cat.Catalog, drafts: Sequence[SourceDraft], removed_ids: set[int]) -> list[Edited]:
    """The drafts as typed (unvalidated), but those removed or whose meter was deleted meanwhile."""
    categories = {m.id: m.category for m in catalog.meters}
    return [
        Edited(
            d.key, d.source_id, categories[d.meter_id], str(d.values.get("source_type") or ""), d.values, d.typed_key()
        )
        for d in drafts
        if d.source_id not in removed_ids and d.meter_id in categories
    ]


def replaced_ids(drafts: Sequence[SourceDraft], removed_ids: set[int]) -> set[int]:
    """The saved sources a site's drafts stand for: the ones edited and the ones removed."""
    return {d.source_id for d in drafts if d.source_id is not None} | removed_ids


def quota_checks(
    store: Store,
    box: SecretBox,
    catalog: cat.Catalog,
    drafts: list[SourceDraft],
    removed_ids: set[int],
    *,
    enphase_plan: str = quota_plan.DEFAULT_ENPHASE_PLAN,
) -> dict[str, list[quota_plan.ScopeCheck]]:
    """The budgets the drafts (as typed, unsaved) share with every other saved source, by draft key.

    What the page shows under each Update Frequency: the figures Save All Connections refuses on, computed leniently
    (a draft with other problems still counts). Reads the store only when a SolarEdge key must be compared.
    """
    edited = edited_drafts(catalog, drafts, removed_ids)
    accounts: dict[int, str] = {}
    to_read = keys_to_compare(catalog, edited, removed_ids)
    if to_read:
        with store.connect(read_only=True) as con:
            accounts = stored_accounts(con, box, to_read)
    planned = planned_sources(catalog, edited, replaced_ids(drafts, removed_ids), accounts)
    return quota_plan.by_member(quota_plan.check(planned, enphase_plan=enphase_plan))
