"""Data Connections: saving a site's energy sources and their API settings, all drafts at once.

The page keeps a draft per source (`core.catalog.source_drafts`), tests connections from it
(`core.catalog.connection_testing`), shows the quota plan (`core.catalog.connection_quota`) and finally saves every
draft of the site at once: `save_connections` validates all of them first and writes all-or-nothing in one transaction.
Secrets typed by the user are encrypted on save; a secret shown as `MASKED` keeps the stored value. The page's names
are all importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import duckdb

from core.catalog import catalog as cat
from core.catalog import quota_plan
from core.catalog.audited import audited_change
from core.catalog.connection_quota import (
    Edited,
    edited_drafts,
    keys_to_compare,
    planned_sources,
    quota_checks,
    refusals,
    replaced_ids,
    stored_accounts,
)
from core.catalog.connection_testing import test_connection
from core.catalog.source_drafts import (
    MASKED,
    SourceDraft,
    TestOutcome,
    ValidDraft,
    draft_from_source,
    new_draft,
    tested_settings,
    validate_draft,
)
from core.models import Source, SourceIn
from core.store.crypto import SecretBox
from core.store.secret_store import credentials_holder, delete_secret, put_secret
from core.store.store import Store

__all__ = [
    "MASKED",
    "ChangedMeanwhile",
    "SaveRejected",
    "SaveReport",
    "SourceDraft",
    "TestOutcome",
    "draft_from_source",
    "new_draft",
    "quota_checks",
    "save_connections",
    "test_connection",
    "tested_settings",
    "validate_drafts",
]


@dataclass(frozen=True)
class SaveReport:
    """What one Save wrote, by source name (the page lists them)."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()  # settings or credentials
    removed_names: tuple[str, ...] = ()
    unchanged: int = 0
    added_ids: tuple[int, ...] = ()  # the new sources' ids, in the order of `added` (the HTTP API answers with them)

    @property
    def created(self) -> int:
        return len(self.added)

    @property
    def updated(self) -> int:
        return len(self.changed)

    @property
    def removed(self) -> int:
        return len(self.removed_names)


class ChangedMeanwhile(cat.InvalidInput):
    """A source the caller built its drafts from was changed or deleted by someone else meanwhile; nothing was saved
    (`save_connections(..., unchanged_since=...)`)."""

    def __init__(self, name: str) -> None:
        super().__init__({"_form": f"{name} was changed or deleted meanwhile: read it again and repeat the change"})


class SaveRejected(cat.InvalidInput):
    """Nothing was saved; `errors` maps draft key -> field -> message."""

    def __init__(self, errors: dict[str, dict[str, str]]) -> None:
        super().__init__({})
        self.errors = errors  # type: ignore[assignment]
        count = sum(len(v) for v in errors.values())
        self.args = (f"{count} problem(s) to fix before saving; nothing was saved",)


def validate_drafts(
    catalog: cat.Catalog,
    site_id: int,
    drafts: list[SourceDraft],
    removed_ids: set[int],
    *,
    accounts: Mapping[int, str] | None = None,
    enphase_plan: str = quota_plan.DEFAULT_ENPHASE_PLAN,
) -> tuple[list[ValidDraft], dict[str, dict[str, str]]]:
    """Every draft checked (fields, names, credentials, then the quota plan); valid drafts come back as plans.

    `accounts` are the fingerprints of stored API keys by source id (`connection_quota.stored_accounts`): without
    them each stored key counts as an account of its own, so keys shared across sites are not added up.
    """
    site_meters = {m.id: m for m in catalog.meters_of(site_id)}
    valid: list[ValidDraft] = []
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
        one, problems = validate_draft(draft, meter.category, stored)
        if one is not None:
            name_key = (draft.meter_id, one.source.name.casefold())
            if name_key in seen:
                problems = {"name": f"another source of this meter is already named {one.source.name!r}"}
            seen[name_key] = draft.key
        if problems:
            errors[draft.key] = problems
        elif one is not None:
            valid.append(one)
    # Stored sources of the site that the page did not send keep their names: check against them too.
    sent = replaced_ids(drafts, removed_ids)
    for source in catalog.sources_of_site(site_id):
        if source.id not in sent and (source.meter_id, source.name.casefold()) in seen:
            key = seen[(source.meter_id, source.name.casefold())]
            errors.setdefault(key, {})["name"] = f"another source of this meter is already named {source.name!r}"
    # The schedule must fit the vendors' budgets, with the saved sources of other sites on the same keys.
    edited = [
        Edited(
            one.draft.key,
            one.draft.source_id,
            site_meters[one.draft.meter_id].category,
            one.source.source_type,
            one.source.api.model_dump(),
            one.draft.typed_key(),
        )
        for one in valid
    ]
    planned = planned_sources(catalog, edited, sent, accounts or {})
    for key, message in refusals(planned, enphase_plan=enphase_plan).items():
        errors.setdefault(key, {}).setdefault("update_frequency", message)
    return valid, errors


def save_connections(
    store: Store,
    box: SecretBox,
    site_id: int,
    drafts: list[SourceDraft],
    removed_ids: set[int],
    *,
    enphase_plan: str = quota_plan.DEFAULT_ENPHASE_PLAN,
    unchanged_since: Mapping[int, Source] | None = None,
) -> SaveReport:
    """Validate every draft, then write all of them in one transaction, or nothing (raises `SaveRejected`).

    A schedule whose vendor calls do not fit a provider's budget (`core.catalog.quota_plan`) is refused on the drafts'
    Update Frequency; `enphase_plan` is the `DATACONN_ENPHASE_PLAN` setting (default: the smallest plan).
    `unchanged_since` are the stored sources a caller built drafts from (the HTTP API's PATCH): if one of them is
    stored otherwise now, `ChangedMeanwhile` is raised, checked inside the transaction, so a change made between the
    caller's read and this save is never overwritten with what the caller read.
    """
    with audited_change(store) as con:
        catalog = cat.read_catalog(con)
        catalog.site(site_id)
        for source_id, seen in (unchanged_since or {}).items():
            if next((s for s in catalog.sources if s.id == source_id), None) != seen:
                raise ChangedMeanwhile(seen.name)
        to_read = keys_to_compare(catalog, edited_drafts(catalog, drafts, removed_ids), removed_ids)
        accounts = stored_accounts(con, box, to_read)
        valid, errors = validate_drafts(
            catalog, site_id, drafts, removed_ids, accounts=accounts, enphase_plan=enphase_plan
        )
        site_source_ids = {s.id for s in catalog.sources_of_site(site_id)}
        unknown = removed_ids - site_source_ids
        if unknown:
            errors["removed"] = {"removed": "a source marked for removal does not belong to this site"}
        if errors:
            raise SaveRejected(errors)
        return _apply(con, box, catalog, valid, removed_ids)


def _apply(
    con: duckdb.DuckDBPyConnection, box: SecretBox, catalog: cat.Catalog, valid: list[ValidDraft], removed_ids: set[int]
) -> SaveReport:
    added: list[str] = []
    added_ids: list[int] = []
    changed: list[str] = []
    unchanged = 0
    for source_id in removed_ids:  # a removed source that held shared credentials hands them over (catalog)
        cat.delete_source(con, source_id)
    for one in valid:
        if one.draft.source_id is not None and one.source.api.credentials_source_id in removed_ids:
            holder = credentials_holder(con, one.draft.source_id)  # after the hand-over just made
            shared = holder if holder != one.draft.source_id else None  # None: it is the new holder
            api = one.source.api.model_copy(update={"credentials_source_id": shared})
            one.source = one.source.model_copy(update={"api": api})
        if one.secrets_to_copy and one.draft.source_id is not None:  # while the stored row still names the holder
            cat.copy_credentials(con, one.draft.source_id, sorted(one.secrets_to_copy))
        secrets_changed = bool(one.secrets_to_set or one.secrets_to_delete)
        if one.draft.source_id is None:
            source_id = cat.insert_source(con, one.draft.meter_id, one.source)
            added.append(one.source.name)
            added_ids.append(source_id)
        else:
            source_id = one.draft.source_id
            stored = catalog.source(source_id)
            if SourceIn.model_validate(stored.model_dump(exclude={"id", "meter_id", "secret_names"})) != one.source:
                cat.update_source(con, source_id, one.source)
                changed.append(one.source.name)
            elif secrets_changed:  # a new key alone is a change too
                changed.append(one.source.name)
            else:
                unchanged += 1
        for name, value in one.secrets_to_set.items():
            put_secret(con, box, source_id, name, value)
        for name in one.secrets_to_delete:
            delete_secret(con, source_id, name)
    removed = tuple(catalog.source(i).name for i in sorted(removed_ids))
    return SaveReport(tuple(added), tuple(changed), removed, unchanged, tuple(added_ids))
