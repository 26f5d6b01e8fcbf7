"""Data Connections: editing a site's energy sources and their API settings as one draft.

The page keeps a draft per source (what the user typed), tests connections from it and finally saves every
draft of the site at once: `save_connections` validates all of them first and writes all-or-nothing in one
transaction. Secrets typed by the user are encrypted on save; a secret shown as `MASKED` keeps the stored value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
from pydantic import SecretStr, ValidationError

from core import catalog as cat
from core.crypto import SecretBox
from core.models import (
    PROVIDER_SECRETS,
    TOKEN_SECRETS,
    Category,
    ConnectionStatus,
    Provider,
    Source,
    SourceIn,
    check_source_type,
    missing_credentials,
    secret_problem,
)
from core.providers.base import NeedsReauthorization, ProviderError
from core.providers.channels import channel_for
from core.providers.context import ProviderContext
from core.providers.registry import ConnectionRequest, build_client
from core.secret_store import delete_secret, load_secrets, put_secret
from core.store import Store
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
    catalog: cat.Catalog, site_id: int, drafts: list[SourceDraft], removed_ids: set[int]
) -> tuple[list[_Plan], dict[str, dict[str, str]]]:
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
    return plans, errors


# --- saving --------------------------------------------------------------------------------------------------


def save_connections(
    store: Store, box: SecretBox, site_id: int, drafts: list[SourceDraft], removed_ids: set[int]
) -> SaveReport:
    """Validate every draft, then write all of them in one transaction, or nothing (raises `SaveRejected`)."""
    with store.transaction() as con:
        catalog = cat.read_catalog(con)
        catalog.site(site_id)
        plans, errors = validate_drafts(catalog, site_id, drafts, removed_ids)
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
    """Test the connection the draft describes (typed secrets, else the stored ones). Never raises."""
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
    try:
        client = build_client(request, context)
        try:
            info = client.test_connection(now)
            power = info.current_power_w if channel == "pv_w" else client.current_power(now).get(channel)
        finally:
            client.close()
    except NeedsReauthorization as exc:
        return TestOutcome(ConnectionStatus.REAUTHORIZE, str(exc), now)
    except ProviderError as exc:
        return TestOutcome(ConnectionStatus.FAILED, str(exc), now)
    message = f"Connected to {info.site_name}: current power {_kw(power)}"
    return TestOutcome(ConnectionStatus.CONNECTED, message, now, power_w=power)


def _kw(power_w: float | None) -> str:
    return "unknown" if power_w is None else f"{power_w / 1000:,.1f} kW"
