"""A source as edited on the Data Connections page (a draft), and the check of one draft against the rules.

The page keeps a draft per source: what the user typed, secrets included (a secret shown as `MASKED` keeps the
stored value). `validate_draft` turns one draft into the source to store and the secret changes, or into
{field: message}; `core.catalog.connections` checks all drafts of a site together and saves them,
`core.catalog.connection_testing` tests one. `tested_settings` fingerprints what a test depends on, so a result is
shown only for the settings it tested.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets as token_gen
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from core.models import (
    MQTT_CONNECTION_FIELDS,
    STREAM_FIELDS,
    ApiSettings,
    Category,
    ConnectionStatus,
    Provider,
    Source,
    SourceIn,
    check_source_type,
    secret_problem,
)
from core.providers.registry import (
    SPECS,
    credential_names,
    credentials_still_apply,
    kept_secrets,
    missing_credentials,
    spec_of,
)
from core.validation import field_errors

MASKED = "\u2022" * 8  # what a stored secret looks like on the page; never the secret itself
FIELDS = ("name", "source_type", "capacity_kw", "carbon_intensity_g_per_kwh", "cost_per_mwh")
API_FIELDS = (
    "use_api", "api_provider", "system_id", "client_id", "update_frequency", *MQTT_CONNECTION_FIELDS, *STREAM_FIELDS
)  # fmt: skip
MQTT_DEFAULTS: dict[str, Any] = {name: ApiSettings.model_fields[name].default for name in MQTT_CONNECTION_FIELDS}
STREAM_DEFAULTS: dict[str, Any] = {name: ApiSettings.model_fields[name].default for name in STREAM_FIELDS}
OPTION_DEFAULTS = MQTT_DEFAULTS | STREAM_DEFAULTS  # the provider-specific settings a new draft starts from


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

    def typed_key(self) -> str | None:
        """The credential naming the provider's account (its spec's `account_credential`: a SolarEdge API key, an
        Enphase application API key) as typed, "" when cleared; None when the stored one stays (masked or absent)."""
        try:
            name = spec_of(str(self.values.get("api_provider"))).account_credential
        except ValueError:
            return None
        typed = self.secrets.get(name, MASKED) if name else MASKED
        return None if typed == MASKED else typed


# Fingerprints of tested settings live only in this process's session state: a key made at start-up is enough, and
# without it a fingerprint tells nothing of the credentials it covers.
_FINGERPRINT_KEY = token_gen.token_bytes(32)


def tested_settings(draft: SourceDraft) -> str:
    """A fingerprint (HMAC) of what a connection test depends on among what the user edits: the API switch, the
    provider, its ids, an MQTT source's broker and topic settings, and its credentials as typed (a masked one stands
    for the stored value). Two drafts with equal fingerprints would be tested alike; the name, numbers and update
    frequency do not count."""
    values = draft.values
    try:
        names = credential_names(str(values.get("api_provider")))
    except ValueError:
        names = []
    text = json.dumps(
        {
            "use_api": bool(values.get("use_api")),
            "provider": str(values.get("api_provider")),
            "system_id": str(values.get("system_id") or "").strip(),
            "client_id": str(values.get("client_id") or "").strip(),
            "mqtt": {name: values.get(name, MQTT_DEFAULTS[name]) for name in MQTT_CONNECTION_FIELDS},
            "secrets": {name: str(draft.secrets.get(name) or "").strip() for name in names},
        },
        sort_keys=True,
    )
    return hmac.new(_FINGERPRINT_KEY, text.encode("utf-8"), hashlib.sha256).hexdigest()


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
    } | {name: getattr(source.api, name) for name in (*MQTT_CONNECTION_FIELDS, *STREAM_FIELDS)}
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
    } | OPTION_DEFAULTS
    return SourceDraft(key=key, meter_id=meter_id, source_id=None, values=values)


# --- one draft against the rules ------------------------------------------------------------------------------


@dataclass
class ValidDraft:
    """A draft that passed `validate_draft`: the source to store and what changes in its stored secrets."""

    draft: SourceDraft
    source: SourceIn
    secrets_to_set: dict[str, str]
    secrets_to_delete: set[str]
    secrets_to_copy: frozenset[str] = frozenset()  # shared ones it keeps as its own copy, once it stops sharing


def secret_changes(draft: SourceDraft, stored: frozenset[str], provider: Provider) -> tuple[dict[str, str], set[str]]:
    wanted = set(credential_names(provider))
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
    # Credentials of a provider no longer selected are dropped; what a provider obtained (Enphase's OAuth tokens)
    # stays only with that provider.
    keep = kept_secrets(provider)
    to_delete |= {name for name in stored if name not in keep}
    return to_set, to_delete


def _test_result(test: TestOutcome | None) -> dict[str, Any]:
    """The status fields a new test sets; none without a test."""
    if test is None:
        return {}
    return {
        "connection_status": test.status,
        "last_tested": test.tested_at,
        "last_error": None if test.status is ConnectionStatus.CONNECTED else test.message,
        "last_power_w": test.power_w,
    }


def validate_draft(
    draft: SourceDraft, category: Category, stored: Source | None
) -> tuple[ValidDraft | None, dict[str, str]]:
    """The draft checked alone (fields, source type, credentials): a `ValidDraft`, or {field: message}.

    The status is the draft's new test if it has one, else the stored source's test while the tested settings stay
    the same (`ApiSettings.with_test_result_of`), else untested.
    """
    errors: dict[str, str] = {}
    values = draft.values
    api_values = {k: values.get(k, OPTION_DEFAULTS.get(k)) for k in API_FIELDS}
    for key in ("system_id", "client_id"):
        api_values[key] = str(api_values[key] or "")
    try:
        provider = Provider(str(api_values["api_provider"]))
    except ValueError:
        return None, {"api_provider": f"choose one of {', '.join(spec.label for spec in SPECS.values())}"}
    stored_names = stored.secret_names if stored else frozenset()  # shared ones included
    to_set, to_delete = secret_changes(draft, stored_names, provider)
    shared = stored.api.credentials_source_id if stored is not None else None
    same_account = stored is not None and credentials_still_apply(provider, str(api_values["client_id"]), stored.api)
    # Shared credentials (an account's, set up by Import Sites) stay shared while the source keeps that account and
    # no credential is typed; otherwise the source gets its own: what was typed, plus a copy of the rest.
    keeps_shared = shared is not None and same_account and not to_set and not to_delete
    api_values["credentials_source_id"] = shared if keeps_shared else None
    to_copy = set()
    if shared is not None and not keeps_shared and same_account:
        to_copy = set(credential_names(provider)) & set(stored_names) - set(to_set) - to_delete
    for name, value in to_set.items():
        problem = secret_problem(value)
        if problem:
            errors[name] = problem
    payload = {k: values.get(k) for k in FIELDS} | {"api": api_values | _test_result(draft.test)}
    try:
        source = SourceIn.model_validate(payload)
    except ValidationError as exc:
        for path, message in field_errors(exc).items():
            errors.setdefault(path.removeprefix("api."), message)
        return None, errors
    if draft.test is None and stored is not None:
        api = source.api.with_test_result_of(stored.api, credentials_changed=bool(to_set or to_delete))
        source = source.model_copy(update={"api": api})
    type_error = check_source_type(category, source.source_type)
    if type_error:
        errors["source_type"] = type_error
    names_after = (set(stored_names) - to_delete) | set(to_set)
    for key, message in missing_credentials(source.api, names_after).items():
        errors.setdefault(key, message)
    if errors:
        return None, errors
    return ValidDraft(draft, source, to_set, to_delete, frozenset(to_copy)), {}
