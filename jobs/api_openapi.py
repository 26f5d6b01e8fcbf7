"""The OpenAPI 3.1 description of the ingest service, served at `GET /api/v1/openapi.json`.

Schemas come from the models that make or check the real thing: the answers from `core.catalog.source_api`'s answer
models (which the API serialises its answers with), the request bodies from the fields of `core.models.SourceIn` and
`ApiSettings` (the page's models), titled with the pages' labels (`core.catalog.field_labels`). Only what has no model
of its own is written here: the paths, the problem details, the push endpoint's body. A test checks that every route
is described and that real answers validate against their schemas (tests/test_api.py).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from core.catalog.field_labels import SOURCE_LABELS
from core.catalog.source_api import (
    METADATA_KEYS,
    READ_ONLY_METADATA,
    MeterOut,
    SourceOut,
    TestResultOut,
)
from core.catalog.source_drafts import FIELDS
from core.config import Settings, ingest_url
from core.models import SourceIn
from core.providers.registry import CREDENTIAL_LABELS

REF = "#/components/schemas/{model}"


class FieldError(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pointer: str = Field(description="JSON Pointer (RFC 6901) into the request body; empty for the whole body")
    detail: str = Field(description="What is wrong there, naming the field as the dashboard labels it")


class Problem(BaseModel):
    """RFC 9457 problem details (application/problem+json)."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="Always about:blank: the title is the HTTP status's meaning")
    title: str
    status: int
    detail: str = Field(description="What happened and what to do, for a person")
    errors: list[FieldError] | None = Field(None, description="One entry per problem (422, and 409 for a name taken)")
    retry_after_s: int | None = Field(None, description="With 429 and 503: also the Retry-After header")


def _component_schemas() -> dict[str, Any]:
    _, found = models_json_schema(
        [
            (MeterOut, "serialization"),
            (SourceOut, "serialization"),
            (TestResultOut, "serialization"),
            (Problem, "serialization"),
            (SourceIn, "validation"),
        ],
        by_alias=True,
        ref_template=REF,
    )
    schemas: dict[str, Any] = found["$defs"]
    # The connection settings, as stored and as taken: one schema, the fields a request cannot set marked readOnly.
    metadata = schemas.pop("ApiSettings")
    names = {alias: name for alias, name in METADATA_KEYS.items()}
    for alias, prop in metadata["properties"].items():
        prop["title"] = SOURCE_LABELS.get(names[alias], alias)
        if alias in READ_ONLY_METADATA:
            prop["readOnly"] = True
    metadata["description"] = (
        "A source's connection settings, by the keys the energy_sources.metadata column stores. The test result and"
        " the shared-credentials link are read-only: sent back, they are ignored."
    )
    metadata["title"] = "Metadata"
    schemas["Metadata"] = metadata
    # The enums' own docstrings are written for this code's readers; a client reads what the values mean.
    schemas["Provider"]["description"] = (
        "solaredge (Monitoring API V2), solaredge_v1 (legacy), enphase, simulator, push"
    )
    schemas["Provider"]["description"] += " (readings sent to the push endpoint), mqtt (a device on a broker)"
    schemas["UpdateFrequency"]["description"] = (
        "How often the collector polls the source; for push and MQTT sources, how often readings are expected"
    )
    source_in = schemas.pop("SourceIn")
    fields = {name: _json_schema_bounds(source_in["properties"][name]) for name in FIELDS}
    for name, prop in fields.items():
        prop["title"] = SOURCE_LABELS[name]
    schemas["SourceOut"]["properties"]["metadata"] = {"$ref": REF.format(model="Metadata")}
    schemas["Credentials"] = {
        "type": "object",
        "additionalProperties": False,
        "description": "Write-only: never returned (an answer's credentials_set says which are stored). A name left out"
        " keeps the stored value; null or an empty string removes it. Which ones a provider takes: see the README.",
        "properties": {
            name: {"type": ["string", "null"], "writeOnly": True, "maxLength": 512, "title": label}
            for name, label in CREDENTIAL_LABELS.items()
        },
    }
    schemas["SourceCreate"] = _source_body(fields, required=["meter_id", "name", "capacity_kw"])
    schemas["SourceReplace"] = _source_body(fields, required=["name", "capacity_kw"])
    schemas["SourcePatch"] = _source_body(fields, required=[])
    return schemas


def _json_schema_bounds(prop: dict[str, Any]) -> dict[str, Any]:
    """pydantic writes a bound it could not attach to a number parsed from text as `ge`/`le`: JSON Schema's words."""
    out = copy.deepcopy(prop)
    for ours, theirs in (("ge", "minimum"), ("le", "maximum")):
        if ours in out:
            out[theirs] = out.pop(ours)
    return out


def _source_body(fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "meter_id": {"type": "integer", "description": "The meter (GET /api/v1/meters); cannot change once created"},
        **copy.deepcopy(fields),
        "metadata": {"$ref": REF.format(model="Metadata")},
        "credentials": {"$ref": REF.format(model="Credentials")},
        "id": {"type": "integer", "readOnly": True, "description": "Ignored: a GET's body may be sent back"},
        "credentials_set": {"type": "object", "readOnly": True, "description": "Ignored"},
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "description": 'Numbers may also be given as text, as typed on the page ("1 200,5"). Fields left out of a'
        " POST or PUT take a new source's values (the meter's first source type, carbon intensity and cost 0, API"
        " off); of a PATCH, stay as stored.",
        "properties": properties,
    }


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}},
    }


RESPONSES = {
    "BadRequest": _problem("The body is not one JSON object (or a query parameter is malformed)"),
    "Unauthorized": _problem("No token, or one that is unknown, revoked or expired, or whose owner is gone"),
    "Forbidden": _problem("The token's owner's role does not allow this (or they have no role)"),
    "NotFound": _problem("No such source or meter"),
    "Conflict": _problem("The name is taken on this meter, or the source changed meanwhile: read it again"),
    "TooLarge": _problem("The body is larger than 64 KB"),
    "UnsupportedType": _problem("The body is not JSON"),
    "Unprocessable": _problem("The source breaks the dashboard's rules: `errors` lists each field's problem"),
    "TooMany": _problem("Over the per-token rate limit: see Retry-After"),
    "Unavailable": _problem("Another program holds the database file, or it cannot be used now: see Retry-After"),
    "Error": _problem("A fault of the service (logged; no detail is given)"),
}


def _refs(*names: str) -> dict[str, Any]:
    codes = {
        "BadRequest": "400",
        "Unauthorized": "401",
        "Forbidden": "403",
        "NotFound": "404",
        "Conflict": "409",
        "TooLarge": "413",
        "UnsupportedType": "415",
        "Unprocessable": "422",
        "TooMany": "429",
        "Unavailable": "503",
        "Error": "500",
    }
    return {codes[n]: {"$ref": f"#/components/responses/{n}"} for n in names}


ALWAYS = ("Unauthorized", "Forbidden", "TooMany", "Unavailable", "Error")
WITH_BODY = ("BadRequest", "TooLarge", "UnsupportedType")


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(model: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=model)}


SOURCE_ID = {"name": "source_id", "in": "path", "required": True, "schema": {"type": "integer"}}


def _paths() -> dict[str, Any]:
    source = _ref("SourceOut")
    return {
        "/api/v1/meters": {
            "get": {
                "operationId": "listMeters",
                "summary": "Every meter, with its site",
                "responses": {
                    "200": _json({"type": "array", "items": _ref("MeterOut")}, "The meters"),
                    **_refs(*ALWAYS),
                },
            }
        },
        "/api/v1/energy-sources": {
            "get": {
                "operationId": "listEnergySources",
                "summary": "Every energy source, or a meter's",
                "parameters": [{"name": "meter_id", "in": "query", "required": False, "schema": {"type": "integer"}}],
                "responses": {
                    "200": _json({"type": "array", "items": source}, "The sources, by id"),
                    **_refs("BadRequest", "NotFound", *ALWAYS),
                },
            },
            "post": {
                "operationId": "createEnergySource",
                "summary": "Create a source (editor; credentials need an admin)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SourceCreate")}}},
                "responses": {
                    "201": {**_json(source, "Created"), "headers": {"Location": {"schema": {"type": "string"}}}},
                    **_refs(*WITH_BODY, "Conflict", "Unprocessable", *ALWAYS),
                },
            },
        },
        "/api/v1/energy-sources/{source_id}": {
            "parameters": [SOURCE_ID],
            "get": {
                "operationId": "getEnergySource",
                "summary": "One source",
                "responses": {"200": _json(source, "The source"), **_refs("NotFound", *ALWAYS)},
            },
            "put": {
                "operationId": "replaceEnergySource",
                "summary": "Replace a source's fields and settings (credentials not named stay)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SourceReplace")}}},
                "responses": {
                    "200": _json(source, "The source as saved"),
                    **_refs(*WITH_BODY, "NotFound", "Conflict", "Unprocessable", *ALWAYS),
                },
            },
            "patch": {
                "operationId": "updateEnergySource",
                "summary": "Change some of a source's fields, settings or credentials",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("SourcePatch")},
                        "application/merge-patch+json": {"schema": _ref("SourcePatch")},
                    },
                },
                "responses": {
                    "200": _json(source, "The source as saved"),
                    **_refs(*WITH_BODY, "NotFound", "Conflict", "Unprocessable", *ALWAYS),
                },
            },
            "delete": {
                "operationId": "deleteEnergySource",
                "summary": "Delete a source with its readings and credentials (admin)",
                "responses": {"204": {"description": "Deleted"}, **_refs("NotFound", *ALWAYS)},
            },
        },
        "/api/v1/energy-sources/{source_id}/test": {
            "parameters": [SOURCE_ID],
            "post": {
                "operationId": "testEnergySource",
                "summary": "Test Connection, as on the page (editor): a repeat within DATACONN_TEST_CACHE_TTL_S reuses"
                " the result and calls no vendor",
                "responses": {"200": _json(_ref("TestResultOut"), "The outcome"), **_refs("NotFound", *ALWAYS)},
            },
        },
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This description",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
        "/api/v1/sources/{source_id}/readings": {
            "parameters": [SOURCE_ID],
            "post": {
                "operationId": "pushReadings",
                "summary": "Push readings of one Push (HTTP) source, with that source's push token (README, Push"
                " endpoint)",
                "security": [{"pushToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("PushedReadings")},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": _json(_ref("PushAnswer"), "Stored"),
                    "202": _json(_ref("PushAnswer"), "Spooled: durable, written once the file is free"),
                    "409": {"$ref": "#/components/responses/Conflict"},
                    **_refs(*WITH_BODY, "Unprocessable", "Unauthorized", "TooMany", "Unavailable", "Error"),
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "The service is up",
                "security": [],
                "responses": {"200": _json({"type": "object", "properties": {"status": {"const": "ok"}}}, "Up")},
            }
        },
    }


PUSH_SCHEMAS: dict[str, Any] = {
    "PushedReadings": {
        "type": "object",
        "required": ["readings"],
        "properties": {
            "readings": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["ts", "value"],
                    "properties": {
                        "ts": {
                            "type": "string",
                            "format": "date-time",
                            "description": "Interval start, with an offset",
                        },
                        "value": {"type": ["number", "null"]},
                        "interval_s": {"type": "integer", "minimum": 1, "maximum": 86400},
                    },
                },
            },
            "unit": {"enum": ["W", "kW", "Wh", "kWh"]},
            "interval_s": {"type": "integer", "minimum": 1, "maximum": 86400},
        },
    },
    "PushAnswer": {
        "type": "object",
        "required": ["readings", "status"],
        "properties": {"readings": {"type": "integer"}, "status": {"enum": ["stored", "spooled"]}},
    },
}


def openapi_document(settings: Settings) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "Energy Data Connections API",
            "version": "1",
            "description": "Meters and energy sources of one installation, with the dashboard's rules, roles and audit"
            " log. Authenticate with a personal API token made on the dashboard's API Tokens page: it acts with its"
            " owner's current role (viewer: reads; editor: also creates, changes and tests sources; admin: also"
            " credentials and deletions). Errors are RFC 9457 problem details.",
        },
        "servers": [{"url": ingest_url(settings)}],
        "security": [{"apiToken": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "apiToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A personal API token (dca_...): Authorization: Bearer <token>",
                },
                "pushToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Push source's token (dcp_...), for its readings only",
                },
            },
            "schemas": _component_schemas() | PUSH_SCHEMAS,
            "responses": RESPONSES,
        },
    }
