"""Validation of a configuration file against a snapshot of the stored configuration, before anything is written.

The page's rules and messages apply (`core.models`, through the file's models in `core.catalog.config_file`), level by
level so that one bad row does not hide the problems of the others, plus what only the stored configuration can
tell: a row's stored counterpart, matched by name as people read them (`core.catalog.config_snapshot`); a meter's
category that cannot change while it has sources; credentials already stored, which count as given; and the quota plan
of the configuration as the import will leave it (`core.catalog.connection_quota`), the rule of Save All Connections.
Every problem is reported by its path in the file, naming the field by the label the pages show ("sites[0].latitude:
Latitude must be at most 90", `core.catalog.field_labels`); the list shown is capped (`ConfigImportError`).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from pydantic import SecretStr, ValidationError

from core import models as m
from core.catalog import catalog as cat
from core.catalog.config_file import (
    FORMAT_VERSION,
    NAME,
    ConfigFile,
    Credential,
    FileModel,
    MeterFile,
    SiteFile,
    SourceFile,
    SourcePath,
)
from core.catalog.config_snapshot import AmbiguousName, Snapshot, Stored, StoredNames
from core.catalog.connection_quota import (
    Edited,
    account_credential,
    key_accounts,
    keys_to_compare,
    planned_sources,
    refusals,
)
from core.catalog.field_labels import file_label, labelled
from core.models import MQTT_CONNECTION_FIELDS, STREAM_FIELDS, name_key
from core.providers.registry import CREDENTIAL_LABELS, credential_names, missing_credentials, spec_of
from core.store.crypto import SecretBox
from core.validation import capped, format_path, located_errors

PLAN_VARIABLE = "DATACONN_ENPHASE_PLAN"  # the setting `Settings.enphase_plan`, named in the plan's message
MAX_SHOWN = 100  # problems listed; the rest are counted ("and N more")
CREDENTIAL_NAMES = tuple(CREDENTIAL_LABELS)
Loc = list[str | int]

# A source's problem under these keys is in the file's `api` mapping; any other is a credential.
_API_KEYS = ("system_id", "client_id", *MQTT_CONNECTION_FIELDS, *STREAM_FIELDS)


class ConfigImportError(Exception):
    """The file breaks the rules; nothing was written. `errors` lists the problems as "path: message", the first
    `MAX_SHOWN` of them and then a line counting the rest, so that a file of a million bad rows prints a screenful;
    `count` is the number of problems."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{len(errors)} problem(s) in the configuration; nothing was imported")
        self.count = len(errors)
        self.errors = capped(errors, MAX_SHOWN, "problem(s)")


def validate(
    snapshot: Snapshot, box: SecretBox, data: Any, environ: Mapping[str, str], enphase_plan: str
) -> ConfigFile:
    """The validated file, or `ConfigImportError` with every problem, the quota plan's included."""
    validator = _Validator(snapshot.catalog, environ)
    config = validator.validate(data)
    errors = validator.errors + quota_errors(snapshot, box, validator.edited, enphase_plan)
    if errors or config is None:
        raise ConfigImportError(errors)
    return config


def quota_errors(snapshot: Snapshot, box: SecretBox, edited: list[Edited], enphase_plan: str) -> list[str]:
    """The file's sources whose schedule does not fit the vendors' budgets, as path errors on their frequency.

    The plan is the configuration after the import: the file's sources (`edited`, keyed by their path) in place of
    the stored ones they match, and every other stored source, of any site, as it is.
    """
    catalog = snapshot.catalog
    to_compare = keys_to_compare(catalog, edited, set())
    accounts = key_accounts(box, {s.id: snapshot.secrets[(s.id, str(account_credential(s)))] for s in to_compare})
    replaced = {one.source_id for one in edited if one.source_id is not None}
    try:
        refused = refusals(planned_sources(catalog, edited, replaced, accounts), enphase_plan=enphase_plan)
    except ValueError as exc:  # an unknown plan name
        return [f"{PLAN_VARIABLE}: {exc}"]
    return [f"{one.key}.api.update_frequency: {refused[one.key]}" for one in edited if one.key in refused]


def credential_name_problem(name: str, provider: m.Provider) -> str | None:
    """Why a source of `provider` cannot be given a credential called `name` (config import, the HTTP API), or None."""
    if name not in CREDENTIAL_NAMES:
        return f"is not a known credential (use {', '.join(CREDENTIAL_NAMES)})"
    needed = credential_names(provider)
    if name not in needed:
        return f"is not used by {spec_of(provider).label} (needs {', '.join(needed) or 'no credentials'})"
    return None


class _Unknown(enum.Enum):
    """What is stored for a file's row that matches several stored rows, and for its children: nobody can tell. The
    checks that depend on it (a meter's category, credentials already stored, the quota plan) skip such rows;
    the ambiguity itself is reported, so the file is refused anyway."""

    STORED = "unknown"


UNKNOWN = _Unknown.STORED
_CONTROL_ROOM, _DATA_CONNECTIONS = "Control Room", "Data Connections"  # the pages that rename and delete them


class _Validator:
    """Walks the data level by level, so that one bad row does not hide the problems of the others."""

    def __init__(self, catalog: cat.Catalog, environ: Mapping[str, str]) -> None:
        self.stored = StoredNames(catalog)
        self.source_counts = Counter(s.meter_id for s in catalog.sources)  # per meter, counted once for all meters
        self.environ = environ
        self.errors: list[str] = []
        self.edited: list[Edited] = []  # the valid sources, for the quota plan
        self.ambiguous: set[tuple[type, tuple[int, ...]]] = set()  # the stored lookalikes reported: kind and ids

    def error(self, loc: Loc, message: str, provider: m.Provider | None = None) -> None:
        """One problem: its path, then the message naming the field (a source's `provider` names its ID field)."""
        self.errors.append(f"{format_path(loc) or '(file)'}: {labelled(message, file_label(loc, provider))}")

    def model(
        self, cls: type[FileModel], raw: Any, loc: Loc, children: str = "", provider: m.Provider | None = None
    ) -> tuple[Any, list[Any]]:
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
            for where, message in located_errors(exc, loc):
                self.error(where, message, provider)
            return None, kids

    def unique(self, seen: dict[str, Loc], raw: Any, loc: Loc) -> None:
        """Report a duplicate name (among the site's meters, say) even when other fields of the row are invalid."""
        try:
            name = NAME.validate_python(raw.get("name") if isinstance(raw, dict) else None)
        except ValidationError:
            return  # reported by `model`
        key = name_key(name)
        if key in seen:
            self.error([*loc, "name"], f"{name!r} duplicates the name of {format_path(seen[key])}")
        seen.setdefault(key, loc)

    def match(self, loc: Loc, find: Callable[..., Stored | None], *key: Any) -> Stored | _Unknown | None:
        """The stored row a file's row matches by name (None: a new row), or `UNKNOWN`, reported, when it matches
        several (lookalike names stored by an older version). A file that names them twice (an export of such a
        database does) has its duplicate reported, and the lookalikes once."""
        try:
            return find(*key)
        except AmbiguousName as exc:
            ids = (type(exc.rows[0]), tuple(row.id for row in exc.rows))
            if ids in self.ambiguous:
                return UNKNOWN
            self.ambiguous.add(ids)
            what, page = {
                m.Site: ("sites", _CONTROL_ROOM),
                m.Meter: ("meters of this site", _CONTROL_ROOM),
                m.Source: ("sources of this meter", _DATA_CONNECTIONS),
            }[type(exc.rows[0])]
            named = [f"{row.name!r} (id {row.id})" for row in exc.rows]
            listed = ", ".join(named[:-1]) + " and " + named[-1]
            which = "one of them" if len(named) == 2 else "all but one"
            self.error(
                [*loc, "name"],
                f"matches {len(named)} stored {what} whose names read the same, {listed}: rename or delete {which}"
                f" on the {page} page, then import again",
            )
            return UNKNOWN

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
            self.unique(seen, raw, ["sites", i])
            stored = self.match(["sites", i], self.stored.site, site.name) if site else None
            names: dict[str, Loc] = {}
            meters = [self.meter(r, ["sites", i, "meters", j], stored, names) for j, r in enumerate(raw_meters)]
            sites.append(site.model_copy(update={"meters": meters}) if site else None)
        if self.errors:
            return None
        self.shared_credentials([site for site in sites if site is not None])  # all are, without errors
        if self.errors:
            return None
        return root.model_copy(update={"sites": sites})

    def shared_credentials(self, sites: list[SiteFile]) -> None:
        """Each `credentials_from` names a source of the same provider (and, for Enphase, the same application), in
        the file or stored, that holds the credentials the sharing source needs (one hop: no chains)."""
        in_file: dict[tuple[str, str, str], SourceFile] = {}
        sharing: list[tuple[Loc, SourceFile]] = []
        for i, site in enumerate(sites):
            for j, meter in enumerate(site.meters):
                for k, source in enumerate(meter.sources):
                    in_file[(name_key(site.name), name_key(meter.name), name_key(source.name))] = source
                    if source.api.credentials_from is not None:
                        sharing.append((["sites", i, "meters", j, "sources", k], source))
        for loc, source in sharing:
            through = source.api.credentials_from
            assert through is not None
            stored = self.stored_source([*loc, "api", "credentials_from"], through)
            if stored is UNKNOWN:
                continue  # reported by `stored_source`
            if problem := _sharing_problem(source, in_file.get(through.key()) or stored, through):
                self.error([*loc, "api", "credentials_from"], problem)
                continue
            holder_file = in_file.get(through.key())
            present = set(holder_file.credentials if holder_file else ()) | set(stored.secret_names if stored else ())
            provider = source.api.provider
            for key, message in missing_credentials(source.api.settings(), present).items():
                where = "api" if key in _API_KEYS else "credentials"
                self.error([*loc, where, key], f"{message} on {through}, whose credentials this source uses", provider)
            self.key_from(format_path(loc), provider, holder_file, stored)

    def key_from(self, key: str, provider: m.Provider, holder_file: SourceFile | None, stored: m.Source | None) -> None:
        """The quota plan counts a sharing source under its holder's account credential: given in the file, or
        stored."""
        name = spec_of(provider).account_credential
        given = holder_file.credentials.get(name) if holder_file and name else None
        typed = given.value.get_secret_value() if given and given.value else None
        for index, one in enumerate(self.edited):
            if one.key == key:
                self.edited[index] = replace(one, typed_key=typed, key_of=stored.id if stored and not typed else None)

    def stored_source(self, loc: Loc, through: SourcePath) -> m.Source | _Unknown | None:
        site = self.match(loc, self.stored.site, through.site)
        meter = self.match(loc, self.stored.meter, site.id, through.meter) if isinstance(site, m.Site) else site
        return self.match(loc, self.stored.source, meter.id, through.source) if isinstance(meter, m.Meter) else meter

    def meter(self, raw: Any, loc: Loc, site: m.Site | _Unknown | None, seen: dict[str, Loc]) -> MeterFile | None:
        meter, raw_sources = self.model(MeterFile, raw, loc, "sources")
        self.unique(seen, raw, loc)
        stored: m.Meter | _Unknown | None = UNKNOWN if site is UNKNOWN else None
        if isinstance(site, m.Site) and meter:
            stored = self.match(loc, self.stored.meter, site.id, meter.name)
        count = self.source_counts[stored.id] if isinstance(stored, m.Meter) else 0
        if meter and isinstance(stored, m.Meter) and stored.category != meter.category and count:
            self.error(
                [*loc, "category"],
                f"meter {stored.name!r} is stored as {stored.category.value} with {count} data source(s):"
                " remove them before changing its category",
            )
        names: dict[str, Loc] = {}
        sources = [self.source(r, [*loc, "sources", k], meter, stored, names) for k, r in enumerate(raw_sources)]
        return meter.model_copy(update={"sources": sources}) if meter else None

    def source(
        self,
        raw: Any,
        loc: Loc,
        meter: MeterFile | None,
        stored_meter: m.Meter | _Unknown | None,
        seen: dict[str, Loc],
    ) -> SourceFile | None:
        problems = len(self.errors)
        source, _ = self.model(SourceFile, raw, loc, provider=_provider_in(raw))
        self.unique(seen, raw, loc)
        if source is None:
            return None
        stored: m.Source | _Unknown | None = UNKNOWN if stored_meter is UNKNOWN else None
        if isinstance(stored_meter, m.Meter):
            stored = self.match(loc, self.stored.source, stored_meter.id, source.name)
        if meter and (problem := m.check_source_type(meter.category, source.source_type)):
            self.error([*loc, "source_type"], problem)
        provider = source.api.provider
        resolved: dict[str, Credential] = {}
        for name, given in source.credentials.items():
            where: Loc = [*loc, "credentials", name]
            if problem := credential_name_problem(name, provider):
                self.error(where, problem)
            elif isinstance(value := self.resolve(given), SecretStr):
                resolved[name] = Credential(value=value, env=given.env)
            else:
                self.error(where, value, provider)
        if stored is UNKNOWN:  # whether credentials are stored, and what the quota plan replaces, nobody can tell
            return source.model_copy(update={"credentials": resolved})
        if source.api.credentials_from is not None:  # its holder's are checked with the holder (shared_credentials)
            if source.credentials:
                self.error(
                    [*loc, "credentials"],
                    f"must be left out: this source uses the credentials of {source.api.credentials_from}",
                )
        else:
            present = set(source.credentials) | set(stored.secret_names if stored else ())  # a stored one counts
            for key, message in missing_credentials(source.api.settings(), present).items():
                part = "api" if key in _API_KEYS else "credentials"
                self.error([*loc, part, key], message, provider)
        if meter and len(self.errors) == problems:
            account_name = spec_of(provider).account_credential
            typed = resolved[account_name].value if account_name in resolved else None
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


def _sharing_problem(source: SourceFile, holder: SourceFile | m.Source | None, through: SourcePath) -> str | None:
    """Why `source` cannot use the credentials of `holder` (named `through`), or None."""
    provider = source.api.provider
    spec = spec_of(provider)
    if not spec.credentials:
        return f"is only for vendor sources: {spec.label} has no credentials to share"
    if holder is None:
        return f"names {through}, which is neither in the file nor stored"
    if holder is source:
        return "names this source itself: leave it out for a source with its own credentials"
    if _provider_of(holder) is not provider:
        return f"names {through}, which uses {spec_of(_provider_of(holder)).label}: name a {spec.label} source"
    if spec.shares_by_application and _client_of(holder) != source.api.client_id:
        return (
            f"names {through}, which uses another {spec.label} application: name one with "
            f"{spec.client_id_label} {source.api.client_id}"
        )
    if _shares(holder):
        return f"names {through}, which uses another source's credentials itself: name that one"
    return None


def _provider_of(source: SourceFile | m.Source) -> m.Provider:
    return source.api.provider if isinstance(source, SourceFile) else source.api.api_provider


def _client_of(source: SourceFile | m.Source) -> str:
    return source.api.client_id


def _shares(source: SourceFile | m.Source) -> bool:
    if isinstance(source, SourceFile):
        return source.api.credentials_from is not None
    return source.api.credentials_source_id is not None


def _provider_in(raw: Any) -> m.Provider | None:
    """The provider a source's raw mapping names, if it is a known one: it names the source's ID field in messages
    ("Site ID" for SolarEdge), also when the source is invalid."""
    api = raw.get("api") if isinstance(raw, dict) else None
    provider = api.get("provider") if isinstance(api, dict) else None
    return m.Provider(provider) if isinstance(provider, str) and provider in set(m.Provider) else None
