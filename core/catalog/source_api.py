"""The seed's backend in its own shape: meters with their sites, and energy sources with their `metadata`, as the HTTP
API (`jobs/api.py`) reads and writes them (README, "HTTP API").

Nothing here validates a source: a request becomes a Data Connections draft (`core.catalog.source_drafts`) and is
saved through `save_connections`, the page's all-or-nothing save, so the rules, the quota plan, the messages, the
role checks (`core.catalog.audited`) and the audit log are the page's. This module only maps shapes:
- a request body to a draft: the five fields by their column names, the connection settings in the `metadata` keys
  the `energy_sources.metadata` column stores (useAPI, apiProvider, ...), credentials by the names config import
  uses (`api_key`, ...) in a write-only `credentials` object;
- the draft's problems back to JSON pointers into that body, each message naming its field by the page's label
  (`core.catalog.field_labels`);
- a stored source to its answer, which says which credentials are set and never their values.

A POST starts from the draft the page starts a new source from (`new_draft`: the meter's first source type,
carbon intensity and cost 0, API off), a PUT likewise (whatever it leaves out takes those values), a PATCH from the
stored source. Credentials a PUT or PATCH does not name stay as they are; `null` or "" removes one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field

from core.actors import Forbidden, Permission, require
from core.catalog import catalog as cat
from core.catalog.config_validation import credential_name_problem
from core.catalog.connection_testing import test_connection
from core.catalog.connections import ChangedMeanwhile, SaveRejected, save_connections
from core.catalog.field_labels import labelled, source_label
from core.catalog.source_drafts import API_FIELDS, FIELDS, SourceDraft, draft_from_source, new_draft, validate_draft
from core.models import SOURCE_TYPES, ApiSettings, Category, ConnectionStatus, Provider, Source, name_key
from core.providers.context import ProviderContext
from core.providers.registry import CREDENTIAL_LABELS, credential_names
from core.store.crypto import SecretBox
from core.store.store import Store, StoreUnavailable

# --- the answers -----------------------------------------------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


SOURCE_TYPES_TEXT = "; ".join(f"{', '.join(types)} ({category.value})" for category, types in SOURCE_TYPES.items())


class SiteOut(_Answer):
    id: int
    name: str
    latitude: float
    longitude: float
    timezone: str = Field(description="IANA time zone, e.g. Europe/Brussels")


class MeterOut(_Answer):
    id: int
    name: str
    category: Category = Field(description="PROD, CONS, STOR or INJ")
    site: SiteOut


class SourceOut(_Answer):
    id: int
    meter_id: int
    name: str
    source_type: str = Field(description=SOURCE_TYPES_TEXT)
    capacity_kw: float = Field(description="Capacity (kW)")
    carbon_intensity_g_per_kwh: float = Field(description="Carbon Intensity (g/kWh)")
    cost_per_mwh: float = Field(description="Cost (per MWh), in the installation's currency")
    metadata: ApiSettings = Field(
        description="The connection settings as the energy_sources.metadata column stores them"
    )
    credentials_set: dict[str, bool] = Field(
        description="Each credential the provider takes, by its name in `credentials`: whether one is stored (the"
        " source's own or one it shares). Never a value."
    )


class TestResultOut(_Answer):
    status: ConnectionStatus
    message: str
    tested_at: datetime
    power_w: float | None = Field(description="Power seen by the test, W (null: none)")
    saved: bool = Field(description="Whether the result was stored on the source (metadata.connectionStatus, ...)")


def dump(answer: BaseModel) -> Any:
    """An answer as JSON values, `metadata` keys as stored (useAPI, ...)."""
    return answer.model_dump(mode="json", by_alias=True)


def source_out(source: Source) -> SourceOut:
    try:
        names = credential_names(source.api.api_provider)
    except ValueError:
        names = []
    return SourceOut(
        id=source.id,
        meter_id=source.meter_id,
        name=source.name,
        source_type=source.source_type,
        capacity_kw=source.capacity_kw,
        carbon_intensity_g_per_kwh=source.carbon_intensity_g_per_kwh,
        cost_per_mwh=source.cost_per_mwh,
        metadata=source.api,
        credentials_set={name: name in source.secret_names for name in names},
    )


# --- what is wrong with a request ----------------------------------------------------------------------------


@dataclass
class SourceRefused(Exception):
    """The request cannot be saved; nothing was. `errors` are (JSON pointer into the body, message naming the
    field); `conflict` when it is only the name being taken, or the source having changed meanwhile."""

    detail: str
    errors: list[tuple[str, str]]
    conflict: bool = False

    def __str__(self) -> str:
        return self.detail


TOP_FIELDS = ("meter_id", *FIELDS, "metadata", "credentials")
IGNORED_FIELDS = ("id", "credentials_set")  # read-only parts of an answer: a GET's body can be sent back as a PUT
METADATA_KEYS = {field.alias or name: name for name, field in ApiSettings.model_fields.items()}
WRITABLE_METADATA = {alias for alias, name in METADATA_KEYS.items() if name in API_FIELDS}
# The test result and the shared-credentials link: set by Test Connection and Import Sites, not by a request. Sent
# back (a GET's body as a PUT), they are ignored.
READ_ONLY_METADATA = set(METADATA_KEYS) - WRITABLE_METADATA


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")  # RFC 6901


def pointer(field: str) -> str:
    """Where a draft field's problem is in the request body."""
    if field in FIELDS:
        return f"/{field}"
    if field == "meter":
        return "/meter_id"
    if field in ApiSettings.model_fields:
        return f"/metadata/{_escape(ApiSettings.model_fields[field].alias or field)}"
    if field in CREDENTIAL_LABELS:
        return f"/credentials/{_escape(field)}"
    return ""


@dataclass
class _Request:
    """A body split into the draft's values, its metadata and its credentials, with what was not understood."""

    values: dict[str, Any]
    credentials: dict[str, str]
    meter_id: Any
    errors: list[tuple[str, str]]


def _split(body: Any) -> _Request:
    if not isinstance(body, dict):
        raise SourceRefused("The body must be a JSON object of the source's fields.", [("", "must be a JSON object")])
    errors: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    for key, value in body.items():
        if key in FIELDS:
            values[key] = value
        elif key not in (*TOP_FIELDS, *IGNORED_FIELDS):
            errors.append((f"/{_escape(key)}", "is not a known field"))
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):
        errors.append(("/metadata", "must be a mapping of fields"))
        metadata = {}
    for key, value in metadata.items():
        if key in WRITABLE_METADATA:
            values[METADATA_KEYS[key]] = value
        elif key not in READ_ONLY_METADATA:
            errors.append((f"/metadata/{_escape(key)}", "is not a known field"))
    credentials: dict[str, str] = {}
    given = body.get("credentials", {})
    if not isinstance(given, dict):
        errors.append(("/credentials", "must be a mapping of fields"))
        given = {}
    for key, value in given.items():
        if value is not None and not isinstance(value, str):
            errors.append((f"/credentials/{_escape(key)}", "must be text"))  # never echo what was given
        else:
            credentials[key] = value or ""
    return _Request(values, credentials, body.get("meter_id"), errors)


def _credential_errors(draft: SourceDraft, credentials: Mapping[str, str]) -> list[tuple[str, str]]:
    """Credentials the draft's provider does not take, in config import's words; the rest go into the draft."""
    try:
        provider = Provider(str(draft.values.get("api_provider")))
    except ValueError:
        return []  # the draft's own check names the provider
    errors = []
    for name, value in credentials.items():
        if problem := credential_name_problem(name, provider):
            errors.append((f"/credentials/{_escape(name)}", labelled(problem, CREDENTIAL_LABELS.get(name))))
        else:
            draft.secrets[name] = value
    return errors


def _by_draft(exc: SaveRejected) -> dict[str, dict[str, str]]:
    return cast(dict[str, dict[str, str]], exc.errors)  # SaveRejected keeps them by draft, then by field


def _located(draft: SourceDraft, problems: Mapping[str, str]) -> list[tuple[str, str]]:
    """A draft's {field: message} as (pointer, message naming the field as the page labels it)."""
    provider = str(draft.values.get("api_provider"))
    return [(pointer(field), labelled(message, source_label(field, provider))) for field, message in problems.items()]


def _refused(draft: SourceDraft, exc: SaveRejected, catalog: cat.Catalog) -> SourceRefused:
    errors = [error for problems in _by_draft(exc).values() for error in _located(draft, problems)]
    fields = {field for problems in _by_draft(exc).values() for field in problems}
    name = str(draft.values.get("name") or "")
    taken = fields == {"name"} and any(
        s.meter_id == draft.meter_id and s.id != draft.source_id and name_key(s.name) == name_key(name)
        for s in catalog.sources
    )
    return SourceRefused(errors[0][1] if taken else str(exc), errors, conflict=taken)


# --- reads ---------------------------------------------------------------------------------------------------


def list_meters(store: Store) -> list[MeterOut]:
    require(Permission.VIEW)
    catalog = cat.load_catalog(store)
    sites = {s.id: s for s in catalog.sites}
    return [
        MeterOut(id=m.id, name=m.name, category=m.category, site=SiteOut(**sites[m.site_id].model_dump()))
        for m in sorted(catalog.meters, key=lambda m: m.id)
        if m.site_id in sites
    ]


def list_sources(store: Store, meter_id: int | None = None) -> list[SourceOut]:
    """Every source, or a meter's (`cat.NotFound` for a meter that does not exist), by id."""
    require(Permission.VIEW)
    catalog = cat.load_catalog(store)
    if meter_id is not None:
        catalog.meter(meter_id)
    return [source_out(s) for s in catalog.sources if meter_id is None or s.meter_id == meter_id]


def get_source(store: Store, source_id: int) -> SourceOut:
    require(Permission.VIEW)
    return source_out(cat.load_catalog(store).source(source_id))


# --- writes: through the page's save -------------------------------------------------------------------------


def _permissions(request: _Request) -> None:
    """The page's refusal comes before validation (`audited_change`): so does the API's. What the save really
    changes is judged again inside its transaction."""
    require(Permission.EDIT_CONFIG)
    if request.credentials:
        require(Permission.CREDENTIALS)


def _save(
    store: Store,
    box: SecretBox,
    catalog: cat.Catalog,
    draft: SourceDraft,
    errors: list[tuple[str, str]],
    enphase_plan: str,
    unchanged_since: Mapping[int, Source] | None = None,
) -> Source:
    meter = catalog.meter(draft.meter_id)
    if errors:  # not saved: still, every problem of the draft is said at once, as the page does
        stored = catalog.source(draft.source_id) if draft.source_id is not None else None
        _, problems = validate_draft(draft, meter.category, stored)
        errors += _located(draft, problems)
        raise SourceRefused(f"{len(errors)} problem(s) to fix before saving; nothing was saved", errors)
    site_id = meter.site_id
    try:
        report = save_connections(
            store, box, site_id, [draft], set(), enphase_plan=enphase_plan, unchanged_since=unchanged_since
        )
    except ChangedMeanwhile as exc:
        raise SourceRefused(str(exc), [("", exc.errors["_form"])], conflict=True) from None
    except SaveRejected as exc:
        raise _refused(draft, exc, catalog) from None
    source_id = report.added_ids[0] if report.added_ids else draft.source_id
    assert source_id is not None
    return cat.load_catalog(store).source(source_id)


def create_source(store: Store, box: SecretBox, body: Any, *, enphase_plan: str) -> SourceOut:
    request = _split(body)
    _permissions(request)
    catalog = cat.load_catalog(store)
    meter_id = request.meter_id
    if isinstance(meter_id, bool) or not isinstance(meter_id, int):
        problem = "is required" if meter_id is None else "must be a meter's id (a whole number)"
        raise SourceRefused("Name the source's meter.", [*request.errors, ("/meter_id", problem)])
    meter = next((m for m in catalog.meters if m.id == meter_id), None)
    if meter is None:
        raise SourceRefused(
            f"No meter {meter_id}: GET /api/v1/meters lists them.",
            [*request.errors, ("/meter_id", f"no meter has the id {meter_id}")],
        )
    draft = new_draft("new", meter.id, meter.category)
    draft.values |= request.values
    errors = request.errors + _credential_errors(draft, request.credentials)
    return source_out(_save(store, box, catalog, draft, errors, enphase_plan))


def update_source(
    store: Store, box: SecretBox, source_id: int, body: Any, *, enphase_plan: str, replace: bool
) -> SourceOut:
    """PUT (`replace`: what the body leaves out takes a new source's values) or PATCH (it stays as stored)."""
    request = _split(body)
    _permissions(request)
    catalog = cat.load_catalog(store)
    stored = catalog.source(source_id)
    errors = list(request.errors)
    if request.meter_id is not None and request.meter_id != stored.meter_id:
        errors.append(("/meter_id", "cannot change: a source stays on its meter (delete it and create it there)"))
    draft = draft_from_source(stored)
    if replace:
        draft.values = new_draft(draft.key, stored.meter_id, catalog.meter(stored.meter_id).category).values
    draft.values |= request.values
    errors += _credential_errors(draft, request.credentials)
    # PATCH keeps what it did not name as it was read here: a change made meanwhile must not be overwritten by it.
    unchanged = None if replace else {source_id: stored}
    return source_out(_save(store, box, catalog, draft, errors, enphase_plan, unchanged))


def delete_source(store: Store, box: SecretBox, source_id: int, *, enphase_plan: str) -> None:
    """The source and everything of it, as the page's Remove and Save do (admins only)."""
    require(Permission.DELETE)
    catalog = cat.load_catalog(store)
    stored = catalog.source(source_id)
    site_id = catalog.meter(stored.meter_id).site_id
    try:
        save_connections(store, box, site_id, [], {source_id}, enphase_plan=enphase_plan)
    except SaveRejected as exc:  # only a deletion made meanwhile by someone else
        raise SourceRefused(
            str(exc), [("", m) for problems in _by_draft(exc).values() for m in problems.values()]
        ) from None


def test_source(
    store: Store, box: SecretBox, source_id: int, now: datetime, context: ProviderContext, *, enphase_plan: str
) -> TestResultOut:
    """The page's Test Connection of the stored source (same code, same cached results, same quota), its result then
    stored as the page's Save stores a test; a save that cannot happen now leaves the source as it was."""
    require(Permission.TEST_CONNECTION)
    catalog = cat.load_catalog(store)
    stored = catalog.source(source_id)
    site_id = catalog.meter(stored.meter_id).site_id
    draft = draft_from_source(stored)
    outcome = test_connection(store, box, site_id, draft, now, context)
    saved = False
    if outcome.status is not ConnectionStatus.UNTESTED:  # nothing was tested: nothing to keep
        draft.test = outcome
        try:
            save_connections(
                store, box, site_id, [draft], set(), enphase_plan=enphase_plan, unchanged_since={source_id: stored}
            )
            saved = True
        except (cat.InvalidInput, Forbidden, StoreUnavailable):  # changed meanwhile, refused, or the file is held
            pass
    return TestResultOut(
        status=outcome.status,
        message=outcome.message,
        tested_at=outcome.tested_at,
        power_w=outcome.power_w,
        saved=saved,
    )


__all__ = [
    "MeterOut",
    "SiteOut",
    "SourceOut",
    "SourceRefused",
    "TestResultOut",
    "create_source",
    "delete_source",
    "dump",
    "get_source",
    "list_meters",
    "list_sources",
    "test_source",
    "update_source",
]
