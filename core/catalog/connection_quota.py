"""What the quota planner (`core.catalog.quota_plan`) is given: the sources being changed and every other saved source.

Save All Connections (`core.catalog.connections`) and the config import (`core.catalog.config_io`) refuse a schedule
the vendors' budgets cannot carry, and the Data Connections page shows the figures (`quota_checks`). All of them
describe the configuration as it will be: the sources being changed (`Edited`: the page's drafts, or a file's sources)
and every saved source they do not replace, counted as it is. A source's account is its provider spec's account
fingerprint (`ProviderSpec.account_of`) of its account credential, typed, else stored: a SolarEdge API key, an
Enphase application API key (`account`), as the quota ledger and API Health name it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from core.catalog import catalog as cat
from core.catalog import quota_plan
from core.catalog.source_drafts import SourceDraft
from core.models import Category, Provider, Source, UpdateFrequency
from core.providers.enphase.stream_schedule import calls_per_day, parse_schedule
from core.providers.quota import account_scope
from core.providers.registry import spec_of
from core.providers.spec import ProviderSpec
from core.roles import channel_for
from core.store.crypto import SecretBox, SecretsError
from core.store.secret_store import SOURCE_CREDENTIALS
from core.store.store import Store


@dataclass(frozen=True)
class Edited:
    """A source being changed, in plain values: a draft on the page or a source of an import file.

    `key` names it in the planner's answers; `source_id` is the saved source it replaces (None: a new one); `api`
    its API settings as a mapping (`ApiSettings` field names; raw page values are tolerated); `typed_key` the
    account credential given with it (its spec's `account_credential`), "" when cleared, None when the stored one
    stays.
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
    """One source for the planner; None when it costs no vendor calls (API off, simulator, a type that reads no
    channel) or is unreadable."""
    try:
        provider = Provider(str(api.get("api_provider")))
        frequency = UpdateFrequency(str(api.get("update_frequency")))
    except ValueError:
        return None
    if not api.get("use_api") or not quota_plan.is_budgeted(provider):
        return None
    channel = channel_for(category, source_type)
    if channel is None:
        return None
    vendor_site = str(api.get("system_id") or "").strip() or f"?{key}"  # no id yet: a vendor site of its own
    streams = stream_calls_per_day(str(api.get("stream_schedule") or "off")) if provider is Provider.ENPHASE else 0
    return quota_plan.PlannedSource(
        key, provider, vendor_site, account or f"?{key}", channel, frequency, editable, stream_calls_per_day=streams
    )


def account(api: Mapping[str, Any], typed_key: str | None, stored: str | None) -> str | None:
    """The fingerprint naming the source's account: its spec's account credential as typed, else as stored.

    None (an account of its own) when there is none: a cleared credential, or none stored.
    """
    if typed_key is None:
        return stored
    spec = _spec(api)
    if spec is None or spec.account_credential is None:
        return None
    return spec.account_of({spec.account_credential: typed_key})


def _spec(api: Mapping[str, Any]) -> ProviderSpec | None:
    try:
        return spec_of(str(api.get("api_provider")))
    except ValueError:
        return None


def account_credential(source: Source) -> str | None:
    """The stored name of the credential that names a saved source's account (None: its provider has none)."""
    return spec_of(source.api.api_provider).account_credential


def keys_to_compare(catalog: cat.Catalog, edited: Sequence[Edited], removed_ids: set[int]) -> list[Source]:
    """Saved sources whose stored account credential matters to the plan: none unless an edited source uses a
    provider with budgets.

    Those the edit replaces (their credential stays unless one is typed) and the enabled ones of the same providers.
    """
    providers = {
        str(e.api.get("api_provider"))
        for e in edited
        if e.api.get("use_api") and (spec := _spec(e.api)) is not None and spec.account_credential is not None
    }
    if not providers:
        return []
    edited_ids = {e.source_id for e in edited} | {e.key_of for e in edited}
    return [
        s
        for s in catalog.sources
        if account_credential(s) in s.secret_names
        and s.id not in removed_ids
        and (s.id in edited_ids or (s.api.use_api and s.api.api_provider.value in providers))
    ]


def stored_accounts(con: duckdb.DuckDBPyConnection, box: SecretBox, sources: Iterable[Source]) -> dict[int, str]:
    """Fingerprints of these sources' stored account credentials, by source id. They are decrypted here and
    dropped."""
    wanted = {source.id: name for source in sources if (name := account_credential(source)) is not None}
    if not wanted:
        return {}
    sql = f"SELECT source_id, name, ciphertext FROM {SOURCE_CREDENTIALS} WHERE source_id IN (SELECT UNNEST(?))"
    rows = con.execute(sql, [list(wanted)]).fetchall()
    return key_accounts(box, {int(sid): str(token) for sid, name, token in rows if wanted[int(sid)] == name})


def key_accounts(box: SecretBox, api_keys: Mapping[int, str]) -> dict[int, str]:
    """Fingerprints of stored account credentials given as ciphertext by source id (decrypted here and dropped). One
    that cannot be decrypted is left out: the collector cannot use it either, so it counts as an account of its
    own."""
    found: dict[int, str] = {}
    for source_id, token in api_keys.items():
        try:
            key = box.decrypt(token)
        except SecretsError:
            continue
        found[source_id] = account_scope(key.get_secret_value())
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


def stream_calls_per_day(schedule: str) -> int:
    """The calls a day a live-stream schedule costs (0 for one that does not read: the page refuses it anyway).
    Streams opened while someone watches Live are not planned: they last as long as someone watches."""
    try:
        parsed = parse_schedule(schedule)
    except ValueError:
        return 0
    return calls_per_day(parsed)
