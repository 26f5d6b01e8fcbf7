"""Data Connections: editing a site's energy sources and their API settings as one draft.

The page keeps a draft per source (what the user typed), tests connections from it and finally saves every
draft of the site at once: `save_connections` validates all of them first and writes all-or-nothing in one
transaction. Secrets typed by the user are encrypted on save; a secret shown as `MASKED` keeps the stored value.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
from pydantic import SecretStr, ValidationError

from core import catalog as cat
from core import quota_plan
from core.crypto import SecretBox, SecretsError
from core.models import (
    PROVIDER_SECRETS,
    TOKEN_SECRETS,
    Category,
    ConnectionStatus,
    Provider,
    Source,
    SourceIn,
    UpdateFrequency,
    check_source_type,
    missing_credentials,
    secret_problem,
)
from core.providers.base import NeedsReauthorization, ProviderError
from core.providers.channels import channel_for
from core.providers.context import ProviderContext
from core.providers.exchange import Exchange
from core.providers.registry import ConnectionRequest, build_client
from core.response_cache import CachedTest, cached_test, store_test, write_exchanges
from core.secret_store import delete_secret, load_secrets, put_secret, read_secrets
from core.store import Store, StoreError
from core.validation import field_errors

log = logging.getLogger(__name__)

MASKED = "\u2022" * 8  # what a stored secret looks like on the page; never the secret itself
FIELDS = ("name", "source_type", "capacity_kw", "carbon_intensity_g_per_kwh", "cost_per_mwh")
API_FIELDS = ("use_api", "api_provider", "system_id", "client_id", "update_frequency")


@dataclass(frozen=True)
class TestOutcome:
    status: ConnectionStatus
    message: str
    tested_at: datetime
    power_w: float | None = None


@dataclass
class SourceDraft:
    """One source as edited on the page. `key` names it in error messages: `s<ID>` stored, `new-...` unsaved."""

    key: str
    meter_id: int
    source_id: int | None
    values: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)
    test: TestOutcome | None = None


@dataclass(frozen=True)
class SaveReport:
    created: int
    updated: int
    removed: int
    unchanged: int


class SaveRejected(cat.InvalidInput):
    """Nothing was saved; `errors` maps draft key -> field -> message."""

    def __init__(self, errors: dict[str, dict[str, str]]) -> None:
        super().__init__({})
        self.errors = errors  # type: ignore[assignment]
        count = sum(len(v) for v in errors.values())
        self.args = (f"{count} problem(s) to fix before saving; nothing was saved",)


def draft_from_source(source: Source) -> SourceDraft:
    values: dict[str, Any] = {
        "name": source.name,
        "source_type": source.source_type,
        "capacity_kw": _plain(source.capacity_kw),
        "carbon_intensity_g_per_kwh": _plain(source.carbon_intensity_g_per_kwh),
        "cost_per_mwh": _plain(source.cost_per_mwh),
        "use_api": source.api.use_api,
        "api_provider": source.api.api_provider.value,
        "system_id": source.api.system_id,
        "client_id": source.api.client_id,
        "update_frequency": source.api.update_frequency.value,
    }
    return SourceDraft(
        key=f"s{source.id}",
        meter_id=source.meter_id,
        source_id=source.id,
        values=values,
        secrets={name: MASKED for name in source.secret_names},
    )


def _plain(number: float) -> str:
    """500.0 -> '500', 0.25 -> '0.25': how a person would type it."""
    return f"{number:.10g}"


def new_draft(key: str, meter_id: int, category: Category) -> SourceDraft:
    first_type = {"PROD": "solar", "CONS": "load", "STOR": "battery", "INJ": "grid"}[category.value]
    values = {
        "name": "",
        "source_type": first_type,
        "capacity_kw": "",
        "carbon_intensity_g_per_kwh": "0",
        "cost_per_mwh": "0",
        "use_api": False,
        "api_provider": Provider.SIMULATOR.value,
        "system_id": "",
        "client_id": "",
        "update_frequency": "15min",
    }
    return SourceDraft(key=key, meter_id=meter_id, source_id=None, values=values)


# --- validation ----------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    draft: SourceDraft
    source: SourceIn
    secrets_to_set: dict[str, str]
    secrets_to_delete: set[str]


def _secret_changes(draft: SourceDraft, stored: frozenset[str], provider: Provider) -> tuple[dict[str, str], set[str]]:
    wanted = {name for name, _ in PROVIDER_SECRETS[provider]}
    to_set: dict[str, str] = {}
    to_delete: set[str] = set()
    for name in wanted:
        typed = draft.secrets.get(name, MASKED if name in stored else "")
        if typed == MASKED:
            continue
        typed = typed.strip()
        if typed:
            to_set[name] = typed
        elif name in stored:
            to_delete.add(name)
    # Credentials of a provider no longer selected are dropped; OAuth tokens stay with Enphase only.
    keep = wanted | (set(TOKEN_SECRETS) if provider is Provider.ENPHASE else set())
    to_delete |= {name for name in stored if name not in keep}
    return to_set, to_delete


def _status_after_edit(draft: SourceDraft, stored: Source | None, api: dict[str, Any], secrets_changed: bool) -> dict:
    """A connection test applies only to the settings it tested: edits without a new test reset the status."""
    if draft.test is not None:
        return {
            "connection_status": draft.test.status,
            "last_tested": draft.test.tested_at,
            "last_error": None if draft.test.status is ConnectionStatus.CONNECTED else draft.test.message,
            "last_power_w": draft.test.power_w,
        }
    if stored is None:
        return {}
    old = stored.api
    same = (
        not secrets_changed
        and api["use_api"] == old.use_api
        and api["api_provider"] == old.api_provider.value
        and api["system_id"].strip() == old.system_id
        and api["client_id"].strip() == old.client_id
    )
    if not same:
        return {}
    return {
        "connection_status": old.connection_status,
        "last_tested": old.last_tested,
        "last_error": old.last_error,
        "last_power_w": old.last_power_w,
    }


def _validate_one(draft: SourceDraft, category: Category, stored: Source | None) -> tuple[_Plan | None, dict[str, str]]:
    errors: dict[str, str] = {}
    values = draft.values
    api_values = {k: values.get(k) for k in API_FIELDS}
    for key in ("system_id", "client_id"):
        api_values[key] = str(api_values[key] or "")
    try:
        provider = Provider(str(api_values["api_provider"]))
    except ValueError:
        return None, {"api_provider": "choose SolarEdge, Enphase or Simulator"}
    stored_names = stored.secret_names if stored else frozenset()
    to_set, to_delete = _secret_changes(draft, stored_names, provider)
    for name, value in to_set.items():
        problem = secret_problem(value)
        if problem:
            errors[name] = problem
    status = _status_after_edit(draft, stored, api_values, bool(to_set or to_delete))
    payload = {k: values.get(k) for k in FIELDS} | {"api": api_values | status}
    try:
        source = SourceIn.model_validate(payload)
    except ValidationError as exc:
        for path, message in field_errors(exc).items():
            errors.setdefault(path.removeprefix("api."), message)
        return None, errors
    type_error = check_source_type(category, source.source_type)
    if type_error:
        errors["source_type"] = type_error
    names_after = (set(stored_names) - to_delete) | set(to_set)
    for key, message in missing_credentials(source.api, names_after).items():
        errors.setdefault(key, message)
    if errors:
        return None, errors
    return _Plan(draft, source, to_set, to_delete), {}


def validate_drafts(
    catalog: cat.Catalog,
    site_id: int,
    drafts: list[SourceDraft],
    removed_ids: set[int],
    *,
    accounts: Mapping[int, str] | None = None,
    enphase_plan: str = quota_plan.DEFAULT_ENPHASE_PLAN,
) -> tuple[list[_Plan], dict[str, dict[str, str]]]:
    """Every draft checked (fields, names, credentials, then the quota plan); valid drafts come back as plans.

    `accounts` are the fingerprints of stored API keys by source id (`_stored_accounts`): without them each stored
    key counts as an account of its own, so keys shared across sites are not added up.
    """
    site_meters = {m.id: m for m in catalog.meters_of(site_id)}
    plans: list[_Plan] = []
    errors: dict[str, dict[str, str]] = {}
    seen: dict[tuple[int, str], str] = {}
    for draft in drafts:
        if draft.source_id in removed_ids:
            continue
        meter = site_meters.get(draft.meter_id)
        if meter is None:
            errors[draft.key] = {"meter": "this meter was deleted meanwhile; reload the page"}
            continue
        stored = None
        if draft.source_id is not None:
            stored = next((s for s in catalog.sources if s.id == draft.source_id), None)
            if stored is None:
                errors[draft.key] = {"name": "this source was deleted meanwhile; reload the page"}
                continue
        plan, problems = _validate_one(draft, meter.category, stored)
        if plan is not None:
            name_key = (draft.meter_id, plan.source.name.casefold())
            if name_key in seen:
                problems = {"name": f"another source of this meter is already named {plan.source.name!r}"}
            seen[name_key] = draft.key
        if problems:
            errors[draft.key] = problems
        elif plan is not None:
            plans.append(plan)
    # Stored sources of the site that the page did not send keep their names: check against them too.
    sent = {d.source_id for d in drafts if d.source_id is not None} | removed_ids
    for source in catalog.sources_of_site(site_id):
        if source.id not in sent and (source.meter_id, source.name.casefold()) in seen:
            key = seen[(source.meter_id, source.name.casefold())]
            errors.setdefault(key, {})["name"] = f"another source of this meter is already named {source.name!r}"
    # The schedule must fit the vendors' budgets, with the saved sources of other sites on the same keys.
    entries = [(plan.draft, plan.source.api.model_dump(), plan.source.source_type) for plan in plans]
    planned = _planned_sources(catalog, entries, sent, accounts or {})
    for key, message in quota_plan.refusals(quota_plan.check(planned, enphase_plan=enphase_plan)).items():
        errors.setdefault(key, {}).setdefault("update_frequency", message)
    return plans, errors


# --- the quota plan: a schedule the vendors' budgets cannot carry is refused like any invalid field ----------


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

    What the page shows under each Update Frequency: the figures `save_connections` refuses on, computed leniently
    (a draft with other problems still counts). Reads the store only when a SolarEdge key must be compared.
    """
    meters = {m.id: m for m in catalog.meters}
    entries = [
        (d, d.values, str(d.values.get("source_type") or ""))
        for d in drafts
        if d.source_id not in removed_ids and d.meter_id in meters
    ]
    accounts: dict[int, str] = {}
    to_read = _keys_to_compare(catalog, drafts, removed_ids)
    if to_read:
        with store.connect(read_only=True) as con:
            accounts = _stored_accounts(con, box, to_read)
    sent = {d.source_id for d in drafts if d.source_id is not None} | removed_ids
    checks = quota_plan.check(_planned_sources(catalog, entries, sent, accounts), enphase_plan=enphase_plan)
    return quota_plan.by_member(checks)


def _planned_sources(
    catalog: cat.Catalog,
    entries: Sequence[tuple[SourceDraft, Mapping[str, Any], str]],
    sent: set[int],
    accounts: Mapping[int, str],
) -> list[quota_plan.PlannedSource]:
    """The drafts (editable) and every saved source the page did not send (fixed), as the planner sees them.

    Ordered by source id, new drafts last, as the collector reads them (a vendor site is charged to its first
    source's key).
    """
    meters = {m.id: m for m in catalog.meters}
    found: list[tuple[float, quota_plan.PlannedSource | None]] = []
    for draft, api, source_type in entries:
        stored_key = accounts.get(draft.source_id) if draft.source_id is not None else None
        account = _account(api, draft.secrets, stored_key)
        planned = _planned(draft.key, api, source_type, meters[draft.meter_id].category, account, editable=True)
        found.append((draft.source_id if draft.source_id is not None else float("inf"), planned))
    for source in catalog.sources:
        if source.id not in sent and source.meter_id in meters:
            api = source.api.model_dump()
            account = _account(api, {}, accounts.get(source.id))
            category = meters[source.meter_id].category
            found.append(
                (source.id, _planned(f"s{source.id}", api, source.source_type, category, account, editable=False))
            )
    return [planned for _, planned in sorted(found, key=lambda item: item[0]) if planned is not None]


def _planned(
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


def _account(api: Mapping[str, Any], typed: Mapping[str, str], stored: str | None) -> str | None:
    """The fingerprint naming the source's account: its SolarEdge API key (typed, else stored) or Enphase Client ID."""
    if str(api.get("api_provider")) == Provider.ENPHASE.value:
        client_id = str(api.get("client_id") or "").strip()
        return quota_plan.account_fingerprint(client_id) if client_id else None
    key = typed.get("api_key", MASKED)
    if key == MASKED:
        return stored
    return quota_plan.account_fingerprint(key) if key.strip() else None


_KEYED = frozenset({Provider.SOLAREDGE, Provider.SOLAREDGE_V1})


def _keys_to_compare(catalog: cat.Catalog, drafts: list[SourceDraft], removed_ids: set[int]) -> list[Source]:
    """Saved sources whose stored SolarEdge key matters to the drafts' plan: none unless a draft uses SolarEdge."""
    providers = {str(d.values.get("api_provider")) for d in drafts if d.values.get("use_api")}
    if not providers & {p.value for p in _KEYED}:
        return []
    draft_ids = {d.source_id for d in drafts}
    return [
        s
        for s in catalog.sources
        if "api_key" in s.secret_names
        and s.id not in removed_ids
        and (s.id in draft_ids or (s.api.use_api and s.api.api_provider.value in providers))
    ]


def _stored_accounts(con: duckdb.DuckDBPyConnection, box: SecretBox, sources: Iterable[Source]) -> dict[int, str]:
    """Fingerprints of these sources' stored API keys, by source id. The keys are decrypted here and dropped."""
    found: dict[int, str] = {}
    for source in sources:
        try:
            key = read_secrets(con, box, source.id).get("api_key")
        except SecretsError:  # unreadable: the collector cannot use it either; it counts as an account of its own
            continue
        if key is not None:
            found[source.id] = quota_plan.account_fingerprint(key.get_secret_value())
    return found


# --- saving --------------------------------------------------------------------------------------------------


def save_connections(
    store: Store,
    box: SecretBox,
    site_id: int,
    drafts: list[SourceDraft],
    removed_ids: set[int],
    *,
    enphase_plan: str = quota_plan.DEFAULT_ENPHASE_PLAN,
) -> SaveReport:
    """Validate every draft, then write all of them in one transaction, or nothing (raises `SaveRejected`).

    A schedule whose vendor calls do not fit a provider's budget (`core.quota_plan`) is refused on the drafts'
    Update Frequency; `enphase_plan` is the `DATACONN_ENPHASE_PLAN` setting (default: the smallest plan).
    """
    with store.transaction() as con:
        catalog = cat.read_catalog(con)
        catalog.site(site_id)
        accounts = _stored_accounts(con, box, _keys_to_compare(catalog, drafts, removed_ids))
        plans, errors = validate_drafts(
            catalog, site_id, drafts, removed_ids, accounts=accounts, enphase_plan=enphase_plan
        )
        site_source_ids = {s.id for s in catalog.sources_of_site(site_id)}
        unknown = removed_ids - site_source_ids
        if unknown:
            errors["removed"] = {"removed": "a source marked for removal does not belong to this site"}
        if errors:
            raise SaveRejected(errors)
        return _apply(con, box, catalog, plans, removed_ids)


def _apply(
    con: duckdb.DuckDBPyConnection, box: SecretBox, catalog: cat.Catalog, plans: list[_Plan], removed_ids: set[int]
) -> SaveReport:
    created = updated = unchanged = 0
    for source_id in removed_ids:
        cat.delete_source(con, source_id)
    for plan in plans:
        if plan.draft.source_id is None:
            source_id = cat.insert_source(con, plan.draft.meter_id, plan.source)
            created += 1
        else:
            source_id = plan.draft.source_id
            stored = catalog.source(source_id)
            if SourceIn.model_validate(stored.model_dump(exclude={"id", "meter_id", "secret_names"})) == plan.source:
                unchanged += not (plan.secrets_to_set or plan.secrets_to_delete)
            else:
                cat.update_source(con, source_id, plan.source)
                updated += 1
        for name, value in plan.secrets_to_set.items():
            put_secret(con, box, source_id, name, value)
        for name in plan.secrets_to_delete:
            delete_secret(con, source_id, name)
    return SaveReport(created=created, updated=updated, removed=len(removed_ids), unchanged=unchanged)


# --- testing -------------------------------------------------------------------------------------------------


def _pv_capacity(catalog: cat.Catalog, site_id: int, draft: SourceDraft, category: Category) -> float:
    """The simulator needs the site's PV size; a PROD draft brings its own, others use the stored PROD sources."""
    if category is Category.PROD:
        try:
            return max(float(str(draft.values.get("capacity_kw") or 0).replace(",", ".")), 0.0)
        except ValueError:
            return 0.0
    meters = catalog.meters_of(site_id, Category.PROD)
    return sum(s.capacity_kw for m in meters for s in catalog.sources_of(m.id)) or 10.0


def test_connection(
    store: Store, box: SecretBox, site_id: int, draft: SourceDraft, now: datetime, context: ProviderContext
) -> TestOutcome:
    """Test the connection the draft describes (typed secrets, else the stored ones). Never raises.

    For a saved vendor source, a repeat within `settings.test_cache_ttl_s` with the same settings and credentials
    (same fingerprint) returns the stored outcome and calls nobody; otherwise the vendor is called and the outcome
    (unless it is "re-authorise") is stored with the exchanges the test made, in `api_data_cache`.
    """
    catalog = cat.load_catalog(store)
    site = catalog.site(site_id)
    meter = catalog.meter(draft.meter_id)
    stored = catalog.source(draft.source_id) if draft.source_id is not None else None
    plan, errors = _validate_one(draft, meter.category, stored)
    relevant = {k: v for k, v in errors.items() if k not in {"name"} or plan is None}
    if not draft.values.get("use_api"):
        return TestOutcome(ConnectionStatus.UNTESTED, "Enable API to test this connection.", now)
    if relevant:
        field_name, message = next(iter(relevant.items()))
        return TestOutcome(ConnectionStatus.FAILED, f"{field_name.replace('_', ' ')}: {message}", now)
    assert plan is not None
    secrets: dict[str, SecretStr] = {}
    if draft.source_id is not None:
        secrets = load_secrets(store, box, draft.source_id)
    secrets |= {name: SecretStr(value) for name, value in plan.secrets_to_set.items()}
    request = ConnectionRequest(
        provider=plan.source.api.api_provider,
        site=site,
        pv_capacity_kw=_pv_capacity(catalog, site_id, draft, meter.category),
        system_id=plan.source.api.system_id,
        client_id=plan.source.api.client_id,
        secrets=secrets,
        source_id=draft.source_id,
    )
    channel = channel_for(meter.category, plan.source.source_type)
    fingerprint = None
    if draft.source_id is not None and request.provider is not Provider.SIMULATOR:  # the simulator costs no quota
        fingerprint = _settings_fingerprint(box, request, channel, context)
        reused = _reuse(store, draft.source_id, fingerprint, now, context.settings.test_cache_ttl_s, site.timezone)
        if reused is not None:
            return reused
    outcome, exchanges = _call_vendor(request, context, channel, now)
    _keep(store, draft.source_id, fingerprint, outcome, exchanges)
    return outcome


def _call_vendor(
    request: ConnectionRequest, context: ProviderContext, channel: str, now: datetime
) -> tuple[TestOutcome, list[Exchange]]:
    """The test itself, and the exchanges the client recorded (also when it failed)."""
    exchanges: list[Exchange] = []
    try:
        client = build_client(request, context)
        try:
            info = client.test_connection(now)
            power = info.current_power_w if channel == "pv_w" else client.current_power(now).get(channel)
        finally:
            recorded = getattr(client, "exchanges", None)  # vendor clients only; the simulator calls nobody
            if callable(recorded):
                exchanges = recorded()
            client.close()
    except NeedsReauthorization as exc:
        return TestOutcome(ConnectionStatus.REAUTHORIZE, str(exc), now), exchanges
    except ProviderError as exc:
        return TestOutcome(ConnectionStatus.FAILED, str(exc), now), exchanges
    message = f"Connected to {info.site_name}: current power {_kw(power)}"
    return TestOutcome(ConnectionStatus.CONNECTED, message, now, power_w=power), exchanges


def _settings_fingerprint(box: SecretBox, request: ConnectionRequest, channel: str, context: ProviderContext) -> str:
    """What a test result depends on, as an HMAC: provider, ids, every credential, the channel and the vendor URLs."""
    settings = context.settings
    text = json.dumps(
        {
            "provider": request.provider.value,
            "system_id": request.system_id,
            "client_id": request.client_id,
            "channel": channel,
            "secrets": {name: value.get_secret_value() for name, value in request.secrets.items()},
            "urls": [
                settings.solaredge_base_url,
                settings.solaredge_v1_base_url,
                settings.enphase_base_url,
                settings.enphase_auth_url,
            ],
        },
        sort_keys=True,
    )
    return box.fingerprint(text)


def _reuse(
    store: Store, source_id: int, fingerprint: str, now: datetime, ttl_s: int, timezone: str
) -> TestOutcome | None:
    """The cached outcome of an identical test made less than `ttl_s` ago, marked as such; None to call the vendor."""
    try:
        hit = cached_test(store, source_id, fingerprint, now, ttl_s)
    except (StoreError, duckdb.Error) as exc:
        log.warning("Test Connection cache not readable, calling the vendor (%s)", type(exc).__name__)
        return None
    if hit is None:
        return None
    local = hit.tested_at.astimezone(ZoneInfo(timezone))
    message = f"{hit.message} (cached result from {local:%H:%M:%S}; no new API call)"
    return TestOutcome(hit.status, message, hit.tested_at, hit.power_w)


def _keep(
    store: Store, source_id: int | None, fingerprint: str | None, outcome: TestOutcome, exchanges: list[Exchange]
) -> None:
    """Store the exchanges, and the outcome for `_reuse` (not "re-authorise": the owner may approve any moment)."""
    try:
        if source_id is not None and fingerprint is not None and outcome.status is not ConnectionStatus.REAUTHORIZE:
            kept = CachedTest(outcome.status, outcome.message, outcome.tested_at, outcome.power_w)
            store_test(store, source_id, fingerprint, kept, exchanges)
        elif exchanges:
            with store.transaction() as con:
                write_exchanges(con, source_id, exchanges)
    except (StoreError, duckdb.Error) as exc:
        log.warning("Test Connection result not stored (%s)", type(exc).__name__)


def _kw(power_w: float | None) -> str:
    return "unknown" if power_w is None else f"{power_w / 1000:,.1f} kW"
