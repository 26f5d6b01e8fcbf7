"""Configuration as code: export sites, meters and sources to YAML or JSON, and import such a file back.

Operators keep a fleet's configuration under version control and review changes as diffs, so an export is
deterministic (sorted by name) and holds neither secrets (not even ciphertext) nor runtime state such as the
connection status. An import *merges*: rows are matched by name (as people read them, like the page:
`models.name_key`), what is missing is created, what differs is updated, and sites, meters or sources absent from
the file are never deleted. The whole file is validated first, with the page's rules and messages, then written in
one transaction, or not at all.

The database is held only for the writes. Validation, the quota plan included, runs against a snapshot of the
stored configuration read in one short read-only connection; the write transaction then checks that the stored
configuration is still the one validated (`catalog.fingerprint`, a few ms) and writes, new rows in multi-row
statements. If something changed meanwhile (another tab, another import), the import
validates again against the new state, up to `MAX_ATTEMPTS` times, so a change cannot slip between the checks and
the writes. Credentials come inline or, better, as {"env": "VARIABLE"} so that the file itself can be committed; a
source keeps stored credentials the file does not mention, except those of a provider it no longer uses (the page's
rule), and a stored connection test result survives only if the settings it tested are unchanged. A file whose
schedules the vendors' budgets cannot carry is refused like Save All Connections refuses it (`core.quota_plan`),
counting the configuration as it will be after the import.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
from pydantic import (
    SecretStr,
    ValidationError,
)

from core import catalog as cat
from core import models as m
from core.config import Settings
from core.config_file import (
    DEFAULT_LIMITS,
    FORMAT_VERSION,
    FORMATS,
    NAME,
    ConfigFile,
    ConfigFileError,
    Credential,
    FileModel,
    ImportLimits,
    MeterFile,
    SiteFile,
    SourceFile,
    dump,
    parse,
    read_text,
    screen,
)
from core.connection_quota import Edited, key_accounts, keys_to_compare, planned_sources, refusals
from core.crypto import SecretBox, SecretsError
from core.models import name_key
from core.secret_store import delete_secret, put_secret
from core.store import Store
from core.validation import field_errors, format_path

PLAN_VARIABLE = "DATACONN_ENPHASE_PLAN"  # the setting `Settings.enphase_plan`, read from `environ` when not given

log = logging.getLogger(__name__)
__all__ = [
    "FORMATS",
    "ConfigFileError",
    "ConfigImportError",
    "ImportLimits",
    "dump",
    "export_config",
    "import_config",
    "parse",
    "read_text",
]
MAX_SHOWN = 100  # problems listed; the rest are counted ("and N more")
MAX_ATTEMPTS = 3  # validations against a stored configuration that keeps changing before the import gives up

CREDENTIAL_NAMES = tuple(dict.fromkeys(name for names in m.PROVIDER_SECRETS.values() for name, _ in names))
Loc = list[str | int]


class ConfigImportError(Exception):
    """The file breaks the rules; nothing was written. `errors` lists the problems as "path: message", the first
    `MAX_SHOWN` of them and then a line counting the rest, so that a file of a million bad rows prints a screenful;
    `count` is the number of problems."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{len(errors)} problem(s) in the configuration; nothing was imported")
        self.count = len(errors)
        more = len(errors) - MAX_SHOWN
        self.errors = errors[:MAX_SHOWN] + ([f"... and {more} more problem(s)"] if more > 0 else [])


# --- export and text formats ----------------------------------------------------------------------------------


def _by_name(items: list[Any]) -> list[Any]:
    return sorted(items, key=lambda item: (name_key(item.name), item.name))


def export_config(store: Store) -> dict[str, Any]:
    """The configuration as plain data, sorted by name so that two exports of the same state are identical."""
    catalog = cat.load_catalog(store)
    site_fields = ("name", "latitude", "longitude", "timezone")
    source_fields = ("name", "source_type", "capacity_kw", "carbon_intensity_g_per_kwh", "cost_per_mwh")
    sites = []
    for site in _by_name(catalog.sites):
        meters = []
        for meter in _by_name(catalog.meters_of(site.id)):
            sources = []
            for s in _by_name(catalog.sources_of(meter.id)):
                api = {"enabled": s.api.use_api, "provider": s.api.api_provider.value, "system_id": s.api.system_id}
                api |= {"client_id": s.api.client_id, "update_frequency": s.api.update_frequency.value}
                sources.append({k: getattr(s, k) for k in source_fields} | {"api": api})
            meters.append({"name": meter.name, "category": meter.category.value, "sources": sources})
        sites.append({k: getattr(site, k) for k in site_fields} | {"meters": meters})
    return {"version": FORMAT_VERSION, "sites": sites}


# --- import -------------------------------------------------------------------------------------------------


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


def import_config(
    store: Store,
    box: SecretBox,
    data: Any,
    *,
    environ: Mapping[str, str] = os.environ,
    dry_run: bool = False,
    enphase_plan: str | None = None,
    limits: ImportLimits = DEFAULT_LIMITS,
) -> ImportReport:
    """Merge parsed file `data` into the store, or raise `ConfigImportError` with every problem and write nothing.

    Validation ends with the quota plan of the configuration as the import leaves it; `enphase_plan` is the
    `DATACONN_ENPHASE_PLAN` setting (None: read from `environ`, default the smallest plan). It runs outside the
    write transaction, against a snapshot, and the transaction writes only if the stored configuration is still
    that snapshot (see the module's docstring).
    """
    if enphase_plan is None:
        enphase_plan = environ.get(PLAN_VARIABLE, "").strip() or Settings.model_fields["enphase_plan"].default
    if problems := screen(data, limits):
        raise ConfigImportError(problems)
    for _ in range(MAX_ATTEMPTS):
        with store.connect(read_only=True) as con:
            snapshot = _read_snapshot(con)
        plan = _Planner(box, snapshot, dry_run).apply(_validate(snapshot, box, data, environ, enphase_plan))
        if dry_run:
            return plan.report
        with store.transaction() as con:
            if cat.fingerprint(con) == snapshot.fingerprint:
                plan.write(con, box)
                report = plan.report
                log.info(
                    "configuration imported: sites %s; meters %s; sources %s",
                    report.sites,
                    report.meters,
                    report.sources,
                )
                return report
        log.info("the stored configuration changed while the file was being checked: checking it again")
    raise ConfigImportError(
        [
            f"the stored configuration changed {MAX_ATTEMPTS} times while the file was being checked (someone is"
            " editing it, or another import runs): try again in a moment"
        ]
    )


@dataclass(frozen=True)
class _Snapshot:
    """The stored configuration that validation sees, read in one short read-only connection."""

    catalog: cat.Catalog
    secrets: dict[tuple[int, str], str]  # ciphertext by (source id, secret name); decrypted only where needed
    fingerprint: tuple[Any, ...]


def _read_snapshot(con: duckdb.DuckDBPyConnection) -> _Snapshot:
    rows = con.sql("SELECT source_id, name, ciphertext FROM source_secrets").fetchall()
    secrets = {(int(source_id), str(name)): str(token) for source_id, name, token in rows}
    return _Snapshot(cat.read_catalog(con), secrets, cat.fingerprint(con))


def _validate(
    snapshot: _Snapshot, box: SecretBox, data: Any, environ: Mapping[str, str], enphase_plan: str
) -> ConfigFile:
    """The validated file, or `ConfigImportError` with every problem, the quota plan's included."""
    validator = _Validator(snapshot.catalog, environ)
    config = validator.validate(data)
    errors = validator.errors + _quota_errors(snapshot, box, validator.edited, enphase_plan)
    if errors or config is None:
        raise ConfigImportError(errors)
    return config


def _quota_errors(snapshot: _Snapshot, box: SecretBox, edited: list[Edited], enphase_plan: str) -> list[str]:
    """The file's sources whose schedule does not fit the vendors' budgets, as path errors on their frequency.

    The plan is the configuration after the import: the file's sources (`edited`, keyed by their path) in place of
    the stored ones they match, and every other stored source, of any site, as it is.
    """
    catalog = snapshot.catalog
    to_compare = keys_to_compare(catalog, edited, set())
    accounts = key_accounts(box, {s.id: snapshot.secrets[(s.id, "api_key")] for s in to_compare})
    replaced = {one.source_id for one in edited if one.source_id is not None}
    try:
        refused = refusals(planned_sources(catalog, edited, replaced, accounts), enphase_plan=enphase_plan)
    except ValueError as exc:  # an unknown plan name
        return [f"{PLAN_VARIABLE}: {exc}"]
    return [f"{one.key}.api.update_frequency: {refused[one.key]}" for one in edited if one.key in refused]


class _Index:
    """Stored rows by natural key, names as compared (`name_key`): site name; (site id, meter name); (meter id,
    source name)."""

    def __init__(self, catalog: cat.Catalog) -> None:
        self.sites = {name_key(s.name): s for s in catalog.sites}
        self.meters = {(x.site_id, name_key(x.name)): x for x in catalog.meters}
        self.sources = {(s.meter_id, name_key(s.name)): s for s in catalog.sources}
        self.source_counts = Counter(s.meter_id for s in catalog.sources)  # per meter, counted once for all meters


class _Validator(_Index):
    """Walks the data level by level, so that one bad row does not hide the problems of the others."""

    def __init__(self, catalog: cat.Catalog, environ: Mapping[str, str]) -> None:
        super().__init__(catalog)
        self.environ = environ
        self.errors: list[str] = []
        self.edited: list[Edited] = []  # the valid sources, for the quota plan

    def error(self, loc: Loc, message: str) -> None:
        self.errors.append(f"{format_path(loc) or '(file)'}: {message}")

    def model(self, cls: type[FileModel], raw: Any, loc: Loc, children: str = "") -> tuple[Any, list[Any]]:
        """Validate one level with its list of children left empty; the caller validates them one by one."""
        if not isinstance(raw, dict):
            self.error(loc, "must be a mapping of fields")
            return None, []
        kids = raw.get(children) if children else None
        if kids is not None and not isinstance(kids, list):
            self.error([*loc, children], "must be a list")
        kids = kids if isinstance(kids, list) else []
        try:
            return cls.model_validate({**raw, children: []} if children else raw), kids
        except ValidationError as exc:
            self.errors.extend(f"{path}: {message}" for path, message in field_errors(exc, loc).items())
            return None, kids

    def unique(self, seen: dict[str, Loc], raw: Any, loc: Loc, what: str) -> None:
        """Report a duplicate name even when other fields of the row are invalid."""
        try:
            name = NAME.validate_python(raw.get("name") if isinstance(raw, dict) else None)
        except ValidationError:
            return  # reported by `model`
        key = name_key(name)
        if key in seen:
            self.error([*loc, "name"], f"duplicate {what.format(repr(name))} (also {format_path(seen[key])})")
        seen.setdefault(key, loc)

    def validate(self, data: Any) -> ConfigFile | None:
        """The validated file, or None with `errors` filled (raises at once when the file is not one at all)."""
        if not isinstance(data, dict):
            self.error([], 'must be a mapping with "version" and "sites"')
            raise ConfigImportError(self.errors)
        version = data.get("version")
        if isinstance(version, bool) or version != FORMAT_VERSION:
            problem = "is required" if "version" not in data else f"unsupported version {str(version)[:20]!r}"
            self.error(["version"], f"{problem}: this program reads version {FORMAT_VERSION}")
            raise ConfigImportError(self.errors)
        root, raw_sites = self.model(ConfigFile, data, [], "sites")
        seen: dict[str, Loc] = {}
        sites = []
        for i, raw in enumerate(raw_sites):
            site, raw_meters = self.model(SiteFile, raw, ["sites", i], "meters")
            self.unique(seen, raw, ["sites", i], "site name {}")
            stored = self.sites.get(name_key(site.name)) if site else None
            names: dict[str, Loc] = {}
            meters = [self.meter(r, ["sites", i, "meters", j], stored, names) for j, r in enumerate(raw_meters)]
            sites.append(site.model_copy(update={"meters": meters}) if site else None)
        if self.errors:
            return None
        return root.model_copy(update={"sites": sites})

    def meter(self, raw: Any, loc: Loc, site: m.Site | None, seen: dict[str, Loc]) -> MeterFile | None:
        meter, raw_sources = self.model(MeterFile, raw, loc, "sources")
        stored = self.meters.get((site.id, name_key(meter.name))) if site and meter else None
        self.unique(seen, raw, loc, "meter name {} in this site")
        count = self.source_counts[stored.id] if stored else 0
        if meter and stored and stored.category != meter.category and count:
            self.error(
                [*loc, "category"],
                f"meter {stored.name!r} is stored as {stored.category.value} with {count} data source(s):"
                " remove them before changing its category",
            )
        names: dict[str, Loc] = {}
        sources = [self.source(r, [*loc, "sources", k], meter, stored, names) for k, r in enumerate(raw_sources)]
        return meter.model_copy(update={"sources": sources}) if meter else None

    def source(
        self, raw: Any, loc: Loc, meter: MeterFile | None, stored_meter: m.Meter | None, seen: dict
    ) -> SourceFile | None:
        problems = len(self.errors)
        source, _ = self.model(SourceFile, raw, loc)
        self.unique(seen, raw, loc, "source name {} in this meter")
        if source is None:
            return None
        if meter and (problem := m.check_source_type(meter.category, source.source_type)):
            self.error([*loc, "source_type"], problem)
        provider = source.api.provider
        needed = [name for name, _ in m.PROVIDER_SECRETS[provider]]
        resolved: dict[str, Credential] = {}
        for name, given in source.credentials.items():
            where: Loc = [*loc, "credentials", name]
            if name not in CREDENTIAL_NAMES:
                self.error(where, f"is not a known credential (use {', '.join(CREDENTIAL_NAMES)})")
            elif name not in needed:
                self.error(where, f"is not used by {provider.label} (needs {', '.join(needed) or 'no credentials'})")
            elif isinstance(value := self.resolve(given), SecretStr):
                resolved[name] = Credential(value=value, env=given.env)
            else:
                self.error(where, value)
        stored = self.sources.get((stored_meter.id, name_key(source.name))) if stored_meter else None
        present = set(source.credentials) | set(stored.secret_names if stored else ())  # a stored one counts
        for key, message in m.missing_credentials(source.api.settings(), present).items():
            self.error([*loc, "api" if key in ("system_id", "client_id") else "credentials", key], message)
        if meter and len(self.errors) == problems:
            typed = resolved["api_key"].value if "api_key" in resolved else None
            self.edited.append(
                Edited(
                    key=format_path(loc),
                    source_id=stored.id if stored else None,
                    category=meter.category,
                    source_type=source.source_type,
                    api=source.api.settings().model_dump(),
                    typed_key=typed.get_secret_value() if typed else None,
                )
            )
        return source.model_copy(update={"credentials": resolved})

    def resolve(self, given: Credential) -> SecretStr | str:
        """The credential's value, or a message saying what is wrong with it (never containing the value)."""
        if given.env is not None:
            prefix, raw = f"environment variable {given.env} ", self.environ.get(given.env)
        else:
            prefix, raw = "", given.value.get_secret_value() if given.value else ""
        if raw is None:
            return prefix + "is not set"
        value = raw.strip()
        if not value:
            return prefix + "must not be empty"
        problem = m.secret_problem(value)
        return prefix + problem if problem else SecretStr(value)


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
class _Plan:
    """What an import writes, worked out against the snapshot before the write transaction, which only runs SQL.
    Each level's new rows go in together; their ids, and so their children's parent ids, are known only then."""

    report: ImportReport
    sites: list[_Row] = field(default_factory=list)
    meters: list[_Row] = field(default_factory=list)
    sources: list[_Row] = field(default_factory=list)
    credentials: list[Credentials] = field(default_factory=list)  # one per source, in the order of `sources`

    def write(self, con: duckdb.DuckDBPyConnection, box: SecretBox) -> None:
        site_ids = _write_level(con, self.sites, [], cat.write_site, _insert_sites)
        meter_ids = _write_level(con, self.meters, site_ids, cat.write_meter, cat.insert_meters)
        source_ids = _write_level(con, self.sources, meter_ids, cat.update_source, cat.insert_sources)
        for source_id, (to_set, to_delete) in zip(source_ids, self.credentials, strict=True):
            for name, value in to_set.items():
                put_secret(con, box, source_id, name, value.get_secret_value())
            for name in to_delete:
                delete_secret(con, source_id, name)


def _write_level(
    con: duckdb.DuckDBPyConnection,
    rows: list[_Row],
    parent_ids: list[int],
    update: Callable[[duckdb.DuckDBPyConnection, int, Any], None],
    insert: Callable[[duckdb.DuckDBPyConnection, Sequence[tuple[int, Any]]], list[int]],
) -> list[int]:
    """Update the rows that differ, insert the new ones with one statement per thousand; every row's id, in order."""
    for row in rows:
        if row.stored_id is not None and row.changed:
            update(con, row.stored_id, row.new)
    new = [(index, row) for index, row in enumerate(rows) if row.stored_id is None]
    pairs = [(parent_ids[row.parent] if row.parent is not None else 0, row.new) for _, row in new]
    new_ids = dict(zip((index for index, _ in new), insert(con, pairs) if pairs else [], strict=True))
    return [row.stored_id if row.stored_id is not None else new_ids[index] for index, row in enumerate(rows)]


def _insert_sites(con: duckdb.DuckDBPyConnection, rows: Sequence[tuple[int, m.SiteIn]]) -> list[int]:
    return cat.insert_sites(con, [site for _, site in rows])


class _Planner(_Index):
    """Matches a validated file with the snapshot: what to insert, what to update, what is unchanged, and counts."""

    def __init__(self, box: SecretBox, snapshot: _Snapshot, dry_run: bool) -> None:
        super().__init__(snapshot.catalog)
        self.box, self.secrets = box, snapshot.secrets
        self.plan = _Plan(ImportReport(dry_run=dry_run))

    def apply(self, config: ConfigFile) -> _Plan:
        plan, report = self.plan, self.plan.report
        for site in config.sites:
            stored_site = self.sites.get(name_key(site.name))
            plan.sites.append(self.row(report.sites, stored_site, m.SiteIn(**site.model_dump(exclude={"meters"}))))
            site_number = len(plan.sites) - 1
            for meter in site.meters:
                key = name_key(meter.name)
                stored_meter = self.meters.get((stored_site.id, key)) if stored_site else None
                new_meter = m.MeterIn(**meter.model_dump(exclude={"sources"}))
                plan.meters.append(self.row(report.meters, stored_meter, new_meter, site_number))
                meter_number = len(plan.meters) - 1
                for source in meter.sources:
                    stored = self.sources.get((stored_meter.id, name_key(source.name))) if stored_meter else None
                    self.source(source, stored, meter_number)
        return plan

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
        keep = {name for name, _ in m.PROVIDER_SECRETS[source.api.provider]}
        keep |= set(m.TOKEN_SECRETS) if source.api.provider is m.Provider.ENPHASE else set()
        to_delete = {name for name in (stored.secret_names if stored else ()) if name not in keep}
        api = source.api.settings()
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
