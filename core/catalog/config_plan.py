"""The plan of a configuration import's writes, worked out before the write transaction, and its writing.

A validated file is matched against the same snapshot it was validated with (`core.catalog.config_snapshot`): each row
is new, changed or unchanged; a source keeps the stored credentials the file does not mention, except those of a
provider it no longer uses (the page's rule), and its stored connection test result only if the settings it tested
are unchanged. All of that, and the counts the import reports, are known before the database is held,
so the write transaction only runs SQL: per level (sites, meters, sources) one statement for the changed rows and
one for the new ones (`core.catalog.catalog`'s batched writes), and one for the credentials set and one for those
removed (`core.store.secret_store`), since a statement per row held the file for seconds (1,000 sites with every site,
meter and source changed: 4.5 s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
from pydantic import SecretStr

from core import models as m
from core.catalog import catalog as cat
from core.catalog.config_file import ConfigFile, SourceFile
from core.catalog.config_snapshot import Snapshot, StoredNames
from core.providers.registry import credential_names, credentials_still_apply, kept_secrets
from core.store.crypto import SecretBox, SecretsError
from core.store.secret_store import delete_secrets, put_secrets


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def __str__(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"


@dataclass
class ImportReport:
    """What an import changed (or, with `dry_run`, would change): counts only, never values."""

    sites: Counts = field(default_factory=Counts)
    meters: Counts = field(default_factory=Counts)
    sources: Counts = field(default_factory=Counts)
    secrets_set: int = 0
    secrets_removed: int = 0
    dry_run: bool = False

    def lines(self) -> list[str]:
        return [
            "Dry run, nothing was written. The import would change:" if self.dry_run else "Imported:",
            f"  sites:   {self.sites}",
            f"  meters:  {self.meters}",
            f"  sources: {self.sources}",
            f"  secrets: {self.secrets_set} set, {self.secrets_removed} removed",
        ]


@dataclass(frozen=True)
class _Row:
    """One row of the file at one level: the stored row it matches (None: a new row), whether it differs from it,
    the row as it will be, and its parent's index in the level above (None for a site)."""

    stored_id: int | None
    changed: bool
    new: Any
    parent: int | None = None


Credentials = tuple[dict[str, SecretStr], set[str]]  # of one source: values to set by name, names to delete


@dataclass
class Plan:
    """What an import writes. Each level's new rows go in together; their ids, and so their children's parent ids,
    are known only then."""

    report: ImportReport
    sites: list[_Row] = field(default_factory=list)
    meters: list[_Row] = field(default_factory=list)
    sources: list[_Row] = field(default_factory=list)
    credentials: list[Credentials] = field(default_factory=list)  # one per source, in the order of `sources`
    # (source, holder) indexes in `sources`: sources sharing the credentials of a source the import creates, whose
    # id is known only once it is written
    credentials_to_link: list[tuple[int, int]] = field(default_factory=list)
    # (stored source id, names): sources that stop sharing keep a copy of the shared credentials the file omits
    credentials_to_copy: list[tuple[int, list[str]]] = field(default_factory=list)

    def write(self, con: duckdb.DuckDBPyConnection, box: SecretBox) -> None:
        site_ids = _write_level(con, self.sites, [], cat.update_sites, _insert_sites)
        meter_ids = _write_level(con, self.meters, site_ids, cat.update_meters, cat.insert_meters)
        for source_id, names in self.credentials_to_copy:  # while the stored rows still name their holder
            cat.copy_credentials(con, source_id, names)
        source_ids = _write_level(con, self.sources, meter_ids, cat.update_sources, cat.insert_sources)
        if self.credentials_to_link:
            linked = []
            for index, holder in self.credentials_to_link:
                new = self.sources[index].new
                api = new.api.model_copy(update={"credentials_source_id": source_ids[holder]})
                linked.append((source_ids[index], new.model_copy(update={"api": api})))
            cat.update_sources(con, linked)
        pairs = list(zip(source_ids, self.credentials, strict=True))
        to_set = [(i, name, value.get_secret_value()) for i, (values, _) in pairs for name, value in values.items()]
        put_secrets(con, box, to_set)
        delete_secrets(con, [(i, name) for i, (_, names) in pairs for name in sorted(names)])


def plan_import(box: SecretBox, snapshot: Snapshot, config: ConfigFile, *, dry_run: bool) -> Plan:
    """The writes that merge the validated `config` into the `snapshot` it was validated against."""
    return _Planner(box, snapshot, dry_run).apply(config)


def _write_level(
    con: duckdb.DuckDBPyConnection,
    rows: list[_Row],
    parent_ids: list[int],
    update: Callable[[duckdb.DuckDBPyConnection, Sequence[tuple[int, Any]]], None],
    insert: Callable[[duckdb.DuckDBPyConnection, Sequence[tuple[int, Any]]], list[int]],
) -> list[int]:
    """Update the rows that differ, then insert the new ones, a statement each; every row's id, in order."""
    changed = [(row.stored_id, row.new) for row in rows if row.stored_id is not None and row.changed]
    if changed:
        update(con, changed)
    new = [(index, row) for index, row in enumerate(rows) if row.stored_id is None]
    pairs = [(parent_ids[row.parent] if row.parent is not None else 0, row.new) for _, row in new]
    new_ids = dict(zip((index for index, _ in new), insert(con, pairs) if pairs else [], strict=True))
    return [row.stored_id if row.stored_id is not None else new_ids[index] for index, row in enumerate(rows)]


def _insert_sites(con: duckdb.DuckDBPyConnection, rows: Sequence[tuple[int, m.SiteIn]]) -> list[int]:
    return cat.insert_sites(con, [site for _, site in rows])


class _Planner:
    """Matches a validated file with the snapshot: what to insert, what to update, what is unchanged, and counts.
    Validation refused any row matching several stored rows, so each lookup finds one row or none."""

    def __init__(self, box: SecretBox, snapshot: Snapshot, dry_run: bool) -> None:
        self.stored = StoredNames(snapshot.catalog)
        self.box, self.secrets = box, snapshot.secrets
        self.plan = Plan(ImportReport(dry_run=dry_run))
        self.positions: dict[tuple[str, str, str], int] = {}  # the file's sources by names, to their row index
        self.unlinked: list[tuple[int, tuple[str, str, str]]] = []  # sharing a source not yet stored

    def apply(self, config: ConfigFile) -> Plan:
        plan, report = self.plan, self.plan.report
        for site in config.sites:
            stored_site = self.stored.site(site.name)
            plan.sites.append(self.row(report.sites, stored_site, m.SiteIn(**site.model_dump(exclude={"meters"}))))
            site_number = len(plan.sites) - 1
            for meter in site.meters:
                stored_meter = self.stored.meter(stored_site.id, meter.name) if stored_site else None
                new_meter = m.MeterIn(**meter.model_dump(exclude={"sources"}))
                plan.meters.append(self.row(report.meters, stored_meter, new_meter, site_number))
                meter_number = len(plan.meters) - 1
                for source in meter.sources:
                    stored = self.stored.source(stored_meter.id, source.name) if stored_meter else None
                    self.positions[(m.name_key(site.name), m.name_key(meter.name), m.name_key(source.name))] = len(
                        plan.sources
                    )
                    self.source(source, stored, meter_number)
        plan.credentials_to_link = [(index, self.positions[key]) for index, key in self.unlinked]
        return plan

    def shared_source(self, source: SourceFile) -> int | None:
        """The stored id of the source whose credentials `source` uses; None when it has its own, or when that
        source is new in the file (linked once written: `Plan.credentials_to_link`). Validation found it."""
        through = source.api.credentials_from
        if through is None:
            return None
        site = self.stored.site(through.site)
        meter = self.stored.meter(site.id, through.meter) if site else None
        holder = self.stored.source(meter.id, through.source) if meter else None
        if holder is None:
            self.unlinked.append((len(self.plan.sources), through.key()))
        return holder.id if holder else None

    def row(self, counts: Counts, stored: Any, new: Any, parent: int | None = None) -> _Row:
        if stored is None:
            counts.created += 1
            return _Row(None, False, new, parent)
        changed = type(new).model_validate(stored.model_dump(include=set(type(new).model_fields))) != new
        counts.updated += changed
        counts.unchanged += not changed
        return _Row(stored.id, changed, new, parent)

    def source(self, source: SourceFile, stored: m.Source | None, meter_number: int) -> None:
        """The source's row and the credentials to set and to delete (the page's rule: its provider's own only)."""
        to_set = {
            name: given.value
            for name, given in source.credentials.items()
            if given.value and not (stored and self.same_secret(stored.id, name, given.value))
        }
        keep = kept_secrets(source.api.provider)
        to_delete = {name for name in (stored.secret_names if stored else ()) if name not in keep}
        if stored and stored.api.credentials_source_id is None and source.api.credentials_from is not None:
            to_delete = set(stored.secret_names)  # it starts sharing another's: its own go (stored once)
        api = source.api.settings().model_copy(update={"credentials_source_id": self.shared_source(source)})
        shared = stored.api.credentials_source_id if stored else None
        if stored and shared is not None and source.api.credentials_from is None:  # it stops sharing
            same = credentials_still_apply(api.api_provider, api.client_id, stored.api)
            names = sorted(set(credential_names(api.api_provider)) - set(to_set)) if same else []
            if names:
                self.plan.credentials_to_copy.append((stored.id, names))
        if stored:
            api = api.with_test_result_of(stored.api, credentials_changed=bool(to_set or to_delete))
        new = m.SourceIn(**source.model_dump(exclude={"api", "credentials"}), api=api)
        report = self.plan.report
        if stored is None:
            report.sources.created += 1
            row = _Row(None, False, new, meter_number)
        else:
            changed = m.SourceIn.model_validate(stored.model_dump(exclude={"id", "meter_id", "secret_names"})) != new
            report.sources.updated += changed
            report.sources.unchanged += not changed
            row = _Row(stored.id, changed, new, meter_number)
        report.secrets_set += len(to_set)
        report.secrets_removed += len(to_delete)
        self.plan.sources.append(row)
        self.plan.credentials.append((to_set, to_delete))

    def same_secret(self, source_id: int, name: str, value: SecretStr) -> bool:
        """Whether the stored secret already holds this value; an unreadable one (lost key) gets replaced."""
        token = self.secrets.get((source_id, name))
        try:
            return token is not None and self.box.decrypt(token).get_secret_value() == value.get_secret_value()
        except SecretsError:
            return False
