"""The configuration file: its format (the page's field types and rules, unknown keys refused) and its text forms.

YAML and JSON parse to the same data; duplicate keys are refused in both, since plain parsers silently keep the
last value. Messages name lines and columns but never quote the file, which may hold credentials.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, SecretStr, StrictBool, TypeAdapter

from core import models as m

FORMAT_VERSION = 1
FORMATS = ("yaml", "json")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigFileError(Exception):
    """The text is not valid YAML or JSON; the message says where, without quoting the file's content."""


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


class ApiFile(FileModel):
    enabled: StrictBool = False
    provider: m.Provider = m.Provider.SIMULATOR
    system_id: Annotated[m.Identifier, Text] = ""
    client_id: Annotated[m.Identifier, Text] = ""
    update_frequency: m.UpdateFrequency = m.UpdateFrequency.MIN15

    def settings(self) -> m.ApiSettings:
        """As stored, with an untested connection: a test result belongs to the database, not to the file."""
        same_names = self.model_dump(include={"system_id", "client_id", "update_frequency"})
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


def dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A mapping with the same key twice is a mistake that plain YAML hides by keeping the last value."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: list[Any] = []
        for key_node, _ in node.value:
            key = None if key_node.tag.endswith(":merge") else self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.append(key)
        return super().construct_mapping(node, deep=deep)


def _unique_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            raise ConfigFileError(f"invalid JSON: duplicate key {key!r}")
    return dict(pairs)


def parse(text: str, fmt: str) -> Any:
    """Parse YAML or JSON; a syntax error becomes a `ConfigFileError` naming the line, never quoting the text."""
    try:
        if fmt == "json":
            return json.loads(text, object_pairs_hook=_unique_json_object)
        if fmt == "yaml":
            return yaml.load(text, Loader=_UniqueKeyLoader)
    except json.JSONDecodeError as exc:
        raise ConfigFileError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark, context = getattr(exc, "problem_mark", None), getattr(exc, "context", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigFileError(f"invalid YAML{where}: {problem}" + (f" ({context})" if context else "")) from None
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
