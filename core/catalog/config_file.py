"""The configuration file: its format (the page's field types and rules, unknown keys refused) and its text forms.

YAML and JSON parse to the same data; duplicate keys are refused in both, since plain parsers silently keep the
last value. Messages name lines and columns but never quote the file, which may hold credentials.

Reading a file is bounded, since an import file may come from anywhere: its size is checked before it is read
(`read_text`), and parsing refuses what would make a small file huge or a parser crash. YAML aliases and merge keys
(`*name`, `<<`) are refused outright: a configuration file has no use for them, and nested aliases turn a few KB
into gigabytes ("billion laughs"). Nesting deeper than `MAX_DEPTH` (the format itself needs 9 levels) and numbers
longer than `MAX_NUMBER_DIGITS` digits (Python refuses to convert integers past 4,300 digits) are refused with a
message. The counts of sites, meters and sources are bounded too (`ConfigFileLimits`, checked by `screen`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, SecretStr, StrictBool, TypeAdapter

from core import models as m
from core.config import Settings
from core.store.private_files import NotAFile, NotUtf8, TooLarge, decode_utf8, read_bounded, unreadable_input
from core.validation import format_path

FORMAT_VERSION = 1
FORMATS = ("yaml", "json")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


MAX_DEPTH = 20  # levels of nested mappings and lists; the format needs 9 (a credential's {"env": ...})
MAX_NUMBER_DIGITS = 100  # no field takes a number this long; far below Python's 4,300-digit conversion limit


class ConfigFileError(Exception):
    """The text is not a configuration file we can read (not YAML or JSON, too large, too deep); the message says
    where, without quoting the file's content."""


@dataclass(frozen=True)
class ConfigFileLimits:
    """The operator's bounds on a configuration file (settings `DATACONN_CONFIG_IMPORT_*`)."""

    max_bytes: int
    max_sites: int
    max_meters: int
    max_sources: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConfigFileLimits:
        return cls(
            settings.config_import_max_mb * 1_000_000,
            settings.config_import_max_sites,
            settings.config_import_max_meters,
            settings.config_import_max_sources,
        )


DEFAULT_LIMITS = ConfigFileLimits.from_settings(Settings.model_construct())  # the settings' defaults, not the env's


# --- the file format: the page's field types and rules, with unknown keys refused -------------------------------


def _text(value: Any) -> Any:
    """YAML reads an unquoted 1234567 as a number (and 0123 as octal!): ask for quotes rather than guess."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("must be text: put it in quotes")
    return value


Text = BeforeValidator(_text)


@dataclass(frozen=True)
class Credential:
    """A credential as the file gives it: the value itself, or the name of the environment variable holding it."""

    value: SecretStr | None = None
    env: str | None = None


def _to_credential(raw: Any) -> Credential:
    if isinstance(raw, Credential):
        return raw
    if isinstance(raw, str):
        return Credential(value=SecretStr(raw))
    if isinstance(raw, dict) and list(raw) == ["env"] and isinstance(raw["env"], str) and _ENV_NAME.match(raw["env"]):
        return Credential(env=raw["env"])
    raise ValueError('must be the value as text or {"env": "VARIABLE_NAME"}')  # never echo what was given


NAME: TypeAdapter[str] = TypeAdapter(Annotated[m.Name, Text])


class FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourcePath(FileModel):
    """Another source, by the names people read: its site, its meter and its own."""

    site: Annotated[m.Name, Text]
    meter: Annotated[m.Name, Text]
    source: Annotated[m.Name, Text]

    def key(self) -> tuple[str, str, str]:
        return m.name_key(self.site), m.name_key(self.meter), m.name_key(self.source)

    def __str__(self) -> str:
        return f"{self.site} / {self.meter} / {self.source}"


class ApiFile(FileModel):
    enabled: StrictBool = False
    provider: m.Provider = m.Provider.SIMULATOR
    system_id: Annotated[m.Identifier, Text] = ""
    client_id: Annotated[m.Identifier, Text] = ""
    update_frequency: m.UpdateFrequency = m.UpdateFrequency.MIN15
    # Enphase: the source (in the file or stored) whose owner's authorisation this system uses
    # (`ApiSettings.credentials_source_id`); the import turns the names into its id.
    credentials_from: SourcePath | None = None
    # MQTT: the broker and what the source reads there (`ApiSettings.mqtt_*`, checked like on the page); the
    # password goes under `credentials` as `mqtt_password`.
    mqtt_host: Annotated[m.MqttHost, Text] = ""
    mqtt_port: m.MqttPort = 1883
    mqtt_tls: StrictBool = False
    mqtt_user: Annotated[m.MqttText, Text] = ""
    mqtt_topic: Annotated[m.MqttText, Text] = ""
    mqtt_payload_path: Annotated[m.MqttText, Text] = ""
    mqtt_unit: Annotated[m.MqttText, Text] = "W"
    # Enphase: when its live stream is open (`ApiSettings.stream_*`, checked like on the page).
    stream_on_live: StrictBool = False
    stream_schedule: Annotated[m.StreamText, Text] = "off"

    def settings(self) -> m.ApiSettings:
        """As stored, with an untested connection: a test result belongs to the database, not to the file."""
        same_names = self.model_dump(
            include={"system_id", "client_id", "update_frequency", *m.MQTT_CONNECTION_FIELDS, *m.STREAM_FIELDS}
        )
        return m.ApiSettings(use_api=self.enabled, api_provider=self.provider, **same_names)


class SourceFile(FileModel):
    name: Annotated[m.Name, Text]
    source_type: Annotated[str, Text]
    capacity_kw: Annotated[m.Number, Field(ge=0, le=m.MAX_CAPACITY_KW)]
    carbon_intensity_g_per_kwh: Annotated[m.Number, Field(ge=0, le=m.MAX_CARBON_G_PER_KWH)]
    cost_per_mwh: Annotated[m.Number, Field(ge=0, le=m.MAX_COST_PER_MWH)]
    api: ApiFile = Field(default_factory=ApiFile)
    credentials: dict[str, Annotated[Credential, PlainValidator(_to_credential)]] = Field(default_factory=dict)


class MeterFile(FileModel):
    name: Annotated[m.Name, Text]
    category: m.Category
    sources: list[SourceFile] = Field(default_factory=list)


class SiteFile(FileModel):
    name: Annotated[m.Name, Text]
    latitude: Annotated[m.Number, Field(ge=-90, le=90)]
    longitude: Annotated[m.Number, Field(ge=-180, le=180)]
    timezone: Annotated[m.Timezone, Text]
    meters: list[MeterFile] = Field(default_factory=list)


class ConfigFile(FileModel):
    version: Literal[1]
    sites: list[SiteFile] = Field(default_factory=list)


class _Dumper(yaml.SafeDumper):
    """Writes a value shared by several places out in full each time: `parse` refuses aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def read_text(path: Path, limits: ConfigFileLimits = DEFAULT_LIMITS) -> str:
    """The file's text, or `ConfigFileError` saying why not. A regular file only, read to at most one byte past the
    size limit: a huge file is refused unread, and a named pipe or a device (endless, or blocking) is never read."""
    try:
        data = read_bounded(path, limits.max_bytes)
    except TooLarge:
        raise ConfigFileError(
            f"the file is larger than {limits.max_bytes / 1e6:g} MB, the limit of DATACONN_CONFIG_IMPORT_MAX_MB:"
            " split it into several files (an import merges, so they can be imported one after the other)"
        ) from None
    except (OSError, NotAFile) as exc:
        raise ConfigFileError(unreadable_input(exc, "a configuration file (.yaml or .json)")) from None
    try:
        return decode_utf8(data)
    except NotUtf8 as exc:
        raise ConfigFileError(f"{exc}: save the file as UTF-8") from None


@dataclass(frozen=True)
class _Overlong:
    """Stands in the parsed data for an integer too long to convert; `parse` reports it with its path."""

    digits: int


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.CSafeLoader):
    """libyaml's safe loader (about 6x faster than the pure-Python one), refusing duplicate keys and merge keys and
    keeping integers of absurd length out of `int()`. Aliases and depth are checked before it runs (`_yaml_events`).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                line = key_node.start_mark.line + 1 if key_node.start_mark else 0
                raise ConfigFileError(f"line {line}: YAML merge keys (<<) are not allowed: write the fields out")
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            if isinstance(key, str | int | float):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        digits = len(str(node.value))
        return _Overlong(digits) if digits > MAX_NUMBER_DIGITS else super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _yaml_events(text: str) -> None:
    """Refuse aliases and deep nesting from libyaml's event stream, before anything is built: a billion-laughs
    file stops at its first alias, in a few KB of memory."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        line = event.start_mark.line + 1 if event.start_mark else 0
        if isinstance(event, yaml.AliasEvent):
            raise ConfigFileError(f"line {line}: YAML aliases (*name) are not allowed: write the values out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigFileError(_too_deep(line))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _too_deep(line: int) -> str:
    return f"the file nests deeper than {MAX_DEPTH} levels at line {line}: a configuration file needs 9"


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _json_deep_line(text: str) -> int:
    """The line where the JSON text first nests deeper than `MAX_DEPTH` (strings skipped); 0 when it does not."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        kind = token.group()[0]
        depth += 1 if kind in "[{" else -1 if kind in "]}" else 0
        if depth > MAX_DEPTH:
            return text.count("\n", 0, token.start()) + 1
    return 0


def _json_int(text: str) -> Any:
    return _Overlong(len(text)) if len(text) > MAX_NUMBER_DIGITS else int(text)


def _unique_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) < len(pairs):  # a set, not a list: an object of 100,000 keys must not cost 10^10 comparisons
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ConfigFileError(f"invalid JSON: duplicate key {key!r}")
            seen.add(key)
    return result


def _walk(data: Any) -> tuple[int, list[tuple[list[str | int], int]]]:
    """(nesting depth, [(path, digits)] of overlong numbers), without recursion. Paths are only built when an
    overlong number is found (a second walk), so the common case stays one cheap pass."""
    deepest, found_any = 0, False
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
        elif isinstance(value, _Overlong):
            found_any = True
    if not found_any:
        return deepest, []
    overlong: list[tuple[list[str | int], int]] = []
    paths: list[tuple[Any, list[str | int]]] = [(data, [])]
    while paths:
        value, path = paths.pop()
        if isinstance(value, _Overlong):
            overlong.append((path, value.digits))
        elif isinstance(value, dict):
            paths.extend((child, [*path, str(key)]) for key, child in reversed(value.items()))
        elif isinstance(value, list):
            paths.extend((child, [*path, index]) for index, child in reversed(list(enumerate(value))))
    return deepest, overlong


def parse(text: str, fmt: str) -> Any:
    """Parse YAML or JSON; a syntax error becomes a `ConfigFileError` naming the line, never quoting the text."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    try:
        if fmt == "json":
            data = json.loads(text, object_pairs_hook=_unique_json_object, parse_int=_json_int)
        else:
            _yaml_events(text)
            data = yaml.load(text, Loader=_Loader)
    except RecursionError:  # JSON nested ~1,000 deep: the C decoder stops cleanly at Python's recursion limit
        raise ConfigFileError(_too_deep(_json_deep_line(text))) from None
    except json.JSONDecodeError as exc:
        raise ConfigFileError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark, context = getattr(exc, "problem_mark", None), getattr(exc, "context", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigFileError(f"invalid YAML{where}: {problem}" + (f" ({context})" if context else "")) from None
    depth, overlong = _walk(data)
    if depth > MAX_DEPTH:  # JSON only: YAML was checked on its events
        raise ConfigFileError(_too_deep(_json_deep_line(text)))
    if overlong:
        path, digits = overlong[0]
        more = f" (and {len(overlong) - 1} more such number(s))" if len(overlong) > 1 else ""
        raise ConfigFileError(
            f"{format_path(path) or '(file)'}: a number of {digits} digits is not a plausible value (at most"
            f" {MAX_NUMBER_DIGITS}){more}"
        )
    return data


def screen(data: Any, limits: ConfigFileLimits = DEFAULT_LIMITS) -> list[str]:
    """Problems with the file's size in rows: more sites, meters or sources than the limits allow. Counted on the
    parsed data before any validation, so an oversized fleet is refused before it costs minutes of checks."""
    sites = _items(data, "sites")
    meters = [meter for site in sites for meter in _items(site, "meters")]
    sources = sum(len(_items(meter, "sources")) for meter in meters)
    problems = []
    for what, count, limit in (
        ("sites", len(sites), limits.max_sites),
        ("meters", len(meters), limits.max_meters),
        ("sources", sources, limits.max_sources),
    ):
        if count > limit:
            setting = f"DATACONN_CONFIG_IMPORT_MAX_{what.upper()}"
            problems.append(
                f"{what}: the file has {count:,} {what}, more than the limit of {limit:,} ({setting}): split the file"
                " (an import merges, so the parts can be imported one after the other), or raise the limit"
            )
    return problems


def _items(parent: Any, key: str) -> list[Any]:
    children = parent.get(key) if isinstance(parent, dict) else None
    return children if isinstance(children, list) else []
