"""Configuration as code: export sites, meters and sources to YAML or JSON, and import such a file back.

Operators keep a fleet's configuration under version control and review changes as diffs, so an export is
deterministic (sorted by name) and holds neither secrets (not even ciphertext) nor runtime state such as the
connection status. An import *merges*: rows are matched by name (case-insensitively, like the page), what is
missing is created, what differs is updated, and sites, meters or sources absent from the file are never deleted.
The whole file is validated first, with the page's rules and messages, then written in one transaction, or not at
all. Credentials come inline or, better, as {"env": "VARIABLE"} so that the file itself can be committed; a
source keeps stored credentials the file does not mention, except those of a provider it no longer uses (the page's
rule), and a stored connection test result survives only if the settings it tested are unchanged. A file whose
schedules the vendors' budgets cannot carry is refused like Save All Connections refuses it (`core.quota_plan`),
counting the configuration as it will be after the import.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
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
    FORMAT_VERSION,
    FORMATS,
    NAME,
    ConfigFile,
    ConfigFileError,
    Credential,
    FileModel,
    MeterFile,
    SiteFile,
    SourceFile,
    dump,
    parse,
)
from core.connection_quota import Edited, keys_to_compare, planned_sources, refusals, stored_accounts
from core.crypto import SecretBox, SecretsError
from core.secret_store import delete_secret, put_secret
from core.store import Store
from core.validation import field_errors, format_path

PLAN_VARIABLE = "DATACONN_ENPHASE_PLAN"  # the setting `Settings.enphase_plan`, read from `environ` when not given

log = logging.getLogger(__name__)
__all__ = ["FORMATS", "ConfigFileError", "ConfigImportError", "dump", "export_config", "import_config", "parse"]

CREDENTIAL_NAMES = tuple(dict.fromkeys(name for names in m.PROVIDER_SECRETS.values() for name, _ in names))
Loc = list[str | int]


class ConfigImportError(Exception):
    """The file breaks the rules; `errors` holds every problem as "path: message". Nothing was written."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{len(errors)} problem(s) in the configuration; nothing was imported")
        self.errors = errors


# --- export and text formats ----------------------------------------------------------------------------------


def _by_name(items: list[Any]) -> list[Any]:
    return sorted(items, key=lambda item: (item.name.casefold(), item.name))


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
) -> ImportReport:
    """Merge parsed file `data` into the store, or raise `ConfigImportError` with every problem and write nothing.

    Validation runs inside the writing transaction, against the rows as they are then, so a change made meanwhile
    (another tab, another import) cannot slip between the checks and the writes. It ends with the quota plan of
    the configuration as the import leaves it; `enphase_plan` is the `DATACONN_ENPHASE_PLAN` setting (None: read
    from `environ`, default the smallest plan).
    """
    if enphase_plan is None:
        enphase_plan = environ.get(PLAN_VARIABLE, "").strip() or Settings.model_fields["enphase_plan"].default
    if dry_run:
        with store.connect(read_only=True) as con:
            return _run(con, box, data, environ, enphase_plan, write=False)
    with store.transaction() as con:
        report = _run(con, box, data, environ, enphase_plan, write=True)
    log.info("configuration imported: sites %s; meters %s; sources %s", report.sites, report.meters, report.sources)
    return report


def _run(
    con: duckdb.DuckDBPyConnection,
    box: SecretBox,
    data: Any,
    environ: Mapping[str, str],
    enphase_plan: str,
    write: bool,
) -> Any:
    catalog = cat.read_catalog(con)
    validator = _Validator(catalog, environ)
    config = validator.validate(data)
    errors = validator.errors + _quota_errors(con, box, catalog, validator.edited, enphase_plan)
    if errors or config is None:
        raise ConfigImportError(errors)
    return _Sync(con, box, catalog, write).apply(config)


def _quota_errors(
    con: duckdb.DuckDBPyConnection, box: SecretBox, catalog: cat.Catalog, edited: list[Edited], enphase_plan: str
) -> list[str]:
    """The file's sources whose schedule does not fit the vendors' budgets, as path errors on their frequency.

    The plan is the configuration after the import: the file's sources (`edited`, keyed by their path) in place of
    the stored ones they match, and every other stored source, of any site, as it is.
    """
    accounts = stored_accounts(con, box, keys_to_compare(catalog, edited, set()))
    replaced = {one.source_id for one in edited if one.source_id is not None}
    try:
        refused = refusals(planned_sources(catalog, edited, replaced, accounts), enphase_plan=enphase_plan)
    except ValueError as exc:  # an unknown plan name
        return [f"{PLAN_VARIABLE}: {exc}"]
    return [f"{one.key}.api.update_frequency: {refused[one.key]}" for one in edited if one.key in refused]


class _Index:
    """Stored rows by natural key, case-folded: site name; (site id, meter name); (meter id, source name)."""

    def __init__(self, catalog: cat.Catalog) -> None:
        self.catalog = catalog
        self.sites = {s.name.casefold(): s for s in catalog.sites}
        self.meters = {(x.site_id, x.name.casefold()): x for x in catalog.meters}
        self.sources = {(s.meter_id, s.name.casefold()): s for s in catalog.sources}


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
        if name.casefold() in seen:
            self.error(
                [*loc, "name"], f"duplicate {what.format(repr(name))} (also {format_path(seen[name.casefold()])})"
            )
        seen.setdefault(name.casefold(), loc)

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
            stored = self.sites.get(site.name.casefold()) if site else None
            names: dict[str, Loc] = {}
            meters = [self.meter(r, ["sites", i, "meters", j], stored, names) for j, r in enumerate(raw_meters)]
            sites.append(site.model_copy(update={"meters": meters}) if site else None)
        if self.errors:
            return None
        return root.model_copy(update={"sites": sites})

    def meter(self, raw: Any, loc: Loc, site: m.Site | None, seen: dict[str, Loc]) -> MeterFile | None:
        meter, raw_sources = self.model(MeterFile, raw, loc, "sources")
        stored = self.meters.get((site.id, meter.name.casefold())) if site and meter else None
        self.unique(seen, raw, loc, "meter name {} in this site")
        count = len(self.catalog.sources_of(stored.id)) if stored else 0
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
        stored = self.sources.get((stored_meter.id, source.name.casefold())) if stored_meter else None
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


class _Sync(_Index):
    """Applies a validated file: inserts what is missing, updates only what differs (or, dry, just counts)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, box: SecretBox, catalog: cat.Catalog, write: bool) -> None:
        super().__init__(catalog)
        self.con, self.box, self.write = con, box, write
        self.report = ImportReport(dry_run=not write)

    def row(self, counts: Counts, stored: Any, new: Any, insert: Any, update: Any, parent: int | None) -> Any:
        """Insert `new` under `parent` when nothing is stored, update when it differs; returns the row id."""
        if stored is None:
            counts.created += 1
            return insert(self.con, parent, new) if self.write and parent is not None else None
        changed = type(new).model_validate(stored.model_dump(include=set(type(new).model_fields))) != new
        counts.updated += changed
        counts.unchanged += not changed
        if changed and self.write:
            update(self.con, stored.id, new)
        return stored.id

    def apply(self, config: ConfigFile) -> ImportReport:
        for site in config.sites:
            stored = self.sites.get(site.name.casefold())
            new_site = m.SiteIn(**site.model_dump(exclude={"meters"}))
            site_id = self.row(self.report.sites, stored, new_site, _insert_site, cat.write_site, 0)
            for meter in site.meters:
                sm = self.meters.get((site_id, meter.name.casefold()))
                new_meter = m.MeterIn(**meter.model_dump(exclude={"sources"}))
                meter_id = self.row(self.report.meters, sm, new_meter, cat.insert_meter, cat.write_meter, site_id)
                for source in meter.sources:
                    self.source(meter_id, source, self.sources.get((meter_id, source.name.casefold())))
        return self.report

    def source(self, meter_id: int | None, source: SourceFile, stored: m.Source | None) -> None:
        to_set = {
            name: given.value
            for name, given in source.credentials.items()
            if given.value and not (stored and self.same_secret(stored.id, name, given.value))
        }
        keep = {name for name, _ in m.PROVIDER_SECRETS[source.api.provider]}
        keep |= set(m.TOKEN_SECRETS) if source.api.provider is m.Provider.ENPHASE else set()
        to_delete = {name for name in (stored.secret_names if stored else ()) if name not in keep}  # as the page does
        api = source.api.settings()
        if stored:
            api = api.with_test_result_of(stored.api, credentials_changed=bool(to_set or to_delete))
        new = m.SourceIn(**source.model_dump(exclude={"api", "credentials"}), api=api)
        source_id = stored.id if stored else None
        if stored is None:
            self.report.sources.created += 1
            source_id = cat.insert_source(self.con, meter_id, new) if self.write and meter_id is not None else None
        elif m.SourceIn.model_validate(stored.model_dump(exclude={"id", "meter_id", "secret_names"})) == new:
            self.report.sources.unchanged += 1
        else:
            self.report.sources.updated += 1
            if self.write:
                cat.update_source(self.con, stored.id, new)
        self.report.secrets_set += len(to_set)
        self.report.secrets_removed += len(to_delete)
        if self.write and source_id is not None:
            for name, value in to_set.items():
                put_secret(self.con, self.box, source_id, name, value.get_secret_value())
            for name in to_delete:
                delete_secret(self.con, source_id, name)

    def same_secret(self, source_id: int, name: str, value: SecretStr) -> bool:
        """Whether the stored secret already holds this value; an unreadable one (lost key) gets replaced."""
        sql = "SELECT ciphertext FROM source_secrets WHERE source_id = ? AND name = ?"
        rows = self.con.execute(sql, [source_id, name]).fetchall()
        try:
            return bool(rows) and self.box.decrypt(rows[0][0]).get_secret_value() == value.get_secret_value()
        except SecretsError:
            return False


def _insert_site(con: duckdb.DuckDBPyConnection, _parent: int, site: m.SiteIn) -> int:
    return cat.insert_site(con, site)
