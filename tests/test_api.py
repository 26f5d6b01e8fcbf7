"""The HTTP API (jobs/api.py) served by uvicorn on loopback, against a real DuckDB file, with real personal tokens: what
each role may do, what each kind of bad input gets (the page's messages), what tokens are refused, that credentials
never come back nor reach the audit log, that Test Connection reuses the page's cache, and that the OpenAPI document
describes every route and validates real answers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from starlette.routing import Route

from core.actors import Role
from core.catalog import api_tokens, users
from core.catalog import catalog as cat
from core.catalog.connections import ChangedMeanwhile, draft_from_source, save_connections
from core.catalog.users import RoleMapping
from core.config import Settings
from core.models import Category, MeterIn, SiteIn
from core.runtime import Runtime, open_runtime
from jobs.ingest import IngestService, create_app
from tests.fakes import solaredge_v2
from tests.fakes.server import serve
from tests.holder import held

NOW = datetime.now(UTC)
MAPPING = RoleMapping(claim="", values={}, default=Role.VIEWER)
SECRET_KEY = "sk-api-SECRET-4711"
SIGN_IN = {"auth_metadata_url": "https://idp.example.org/.well-known/openid-configuration"} | {
    "auth_client_id": "dash",
    "auth_client_secret": "s3cret",
}


@dataclass
class Api:
    runtime: Runtime
    url: str
    tokens: dict[str, str]  # role -> token
    meters: dict[str, int]  # category -> meter id
    solaredge: solaredge_v2.FakeState
    service: IngestService

    def call(self, method: str, path: str, who: str = "admin", **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        headers |= kwargs.pop("headers", {})
        return httpx.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kwargs)

    def audit(self) -> list[tuple[Any, ...]]:
        with self.runtime.store.connect(read_only=True) as con:
            return con.sql(
                "SELECT actor, actor_kind, action, object_type, object_name, summary, fields::VARCHAR,"
                " before::VARCHAR, after::VARCHAR FROM audit_log ORDER BY id"
            ).fetchall()


def make_runtime(tmp_path: Path, solaredge_url: str, **settings: Any) -> Runtime:
    values: dict[str, Any] = {
        "db_path": tmp_path / "d.duckdb",
        "key_file": tmp_path / "k.key",
        "seed_demo": False,
        "lock_timeout_s": 2,
        "solaredge_base_url": f"{solaredge_url}/v2",
    }
    return open_runtime(Settings(**(values | settings)))


def people(runtime: Runtime) -> dict[str, str]:
    """Three people who signed in (the first is an admin), with a token each; the subjects are their roles."""
    store = runtime.store
    for subject in ("admin", "editor", "viewer"):
        users.sign_in(store, {"sub": subject, "email": f"{subject}@example.org"}, MAPPING, NOW)
    users.set_role(store, "editor", Role.EDITOR, NOW, mapping=MAPPING)
    return {
        subject: api_tokens.issue(store, f"{subject}'s script", NOW, expires_in_days=30, owner=subject).token
        for subject in ("admin", "editor", "viewer")
    }


@pytest.fixture
def solaredge() -> Iterator[tuple[str, solaredge_v2.FakeState]]:
    state = solaredge_v2.FakeState()
    with serve(solaredge_v2.create_app(state)) as url:
        yield url, state


def start(runtime: Runtime, solaredge: tuple[str, solaredge_v2.FakeState], tokens: dict[str, str]) -> Iterator[Api]:
    site = cat.create_site(
        runtime.store, SiteIn(name="Plant", latitude=50.85, longitude=4.35, timezone="Europe/Brussels")
    )
    meters = {
        category.value: cat.create_meter(runtime.store, site.id, MeterIn(name=category.label, category=category)).id
        for category in (Category.PROD, Category.CONS)
    }
    service = IngestService(runtime)
    with serve(create_app(service)) as url:
        yield Api(runtime, url, tokens, meters, solaredge[1], service)
    service.close()


@pytest.fixture
def api(tmp_path: Path, solaredge: tuple[str, solaredge_v2.FakeState]) -> Iterator[Api]:
    runtime = make_runtime(tmp_path, solaredge[0])
    yield from start(runtime, solaredge, people(runtime))


def roof(meter_id: int, **more: Any) -> dict[str, Any]:
    return {"meter_id": meter_id, "name": "Roof", "source_type": "solar", "capacity_kw": 50} | more


def solaredge_roof(meter_id: int) -> dict[str, Any]:
    metadata = {"useAPI": True, "apiProvider": "solaredge", "systemId": "3066774", "updateFrequency": "1hour"}
    return roof(meter_id, metadata=metadata, credentials={"api_key": solaredge_v2.SANDBOX_API_KEY})


# --- roles ------------------------------------------------------------------------------------------------------


def test_a_viewer_reads_but_every_change_is_refused_with_the_roles_message(api: Api) -> None:
    made = api.call("POST", "/energy-sources", json=roof(api.meters["PROD"]))
    assert made.status_code == 201, made.text
    source_id = made.json()["id"]
    meters = api.call("GET", "/meters", "viewer").json()
    assert {m["category"] for m in meters} == {"PROD", "CONS"}
    assert meters[0]["site"] == {
        "id": meters[0]["site"]["id"],
        "name": "Plant",
        "latitude": 50.85,
        "longitude": 4.35,
        "timezone": "Europe/Brussels",
    }
    assert [s["name"] for s in api.call("GET", "/energy-sources", "viewer").json()] == ["Roof"]
    assert api.call("GET", f"/energy-sources?meter_id={api.meters['CONS']}", "viewer").json() == []
    assert api.call("GET", f"/energy-sources/{source_id}", "viewer").json()["capacity_kw"] == 50.0
    for method, path, body in (
        ("POST", "/energy-sources", roof(api.meters["PROD"], name="Other")),
        ("PUT", f"/energy-sources/{source_id}", roof(api.meters["PROD"])),
        ("PATCH", f"/energy-sources/{source_id}", {"capacity_kw": 60}),
        ("DELETE", f"/energy-sources/{source_id}", None),
        ("POST", f"/energy-sources/{source_id}/test", None),
    ):
        refused = api.call(method, path, "viewer", json=body)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["detail"].startswith("Your role (viewer) cannot")
    assert api.call("GET", f"/energy-sources/{source_id}", "viewer").json()["capacity_kw"] == 50.0


def test_an_editor_changes_sources_but_not_credentials_nor_deletes(api: Api) -> None:
    made = api.call("POST", "/energy-sources", "editor", json=roof(api.meters["PROD"]))
    assert made.status_code == 201 and made.headers["location"] == f"/api/v1/energy-sources/{made.json()['id']}"
    source_id = made.json()["id"]
    changed = api.call("PATCH", f"/energy-sources/{source_id}", "editor", json={"capacity_kw": "62,5"})
    assert changed.status_code == 200 and changed.json()["capacity_kw"] == 62.5  # typed as on the page
    with_key = api.call("POST", "/energy-sources", "editor", json=solaredge_roof(api.meters["PROD"]) | {"name": "B"})
    assert with_key.status_code == 403 and "enter, replace or forget credentials" in with_key.json()["detail"]
    gone = api.call("DELETE", f"/energy-sources/{source_id}", "editor")
    assert gone.status_code == 403 and "admin role" in gone.json()["detail"]
    assert [s.name for s in cat.load_catalog(api.runtime.store).sources] == ["Roof"]


def test_an_admin_enters_credentials_and_deletes_and_the_key_never_comes_back(api: Api) -> None:
    made = api.call("POST", "/energy-sources", json=solaredge_roof(api.meters["PROD"]))
    assert made.status_code == 201, made.text
    source = made.json()
    assert source["credentials_set"] == {"api_key": True}
    assert source["metadata"]["apiProvider"] == "solaredge" and source["metadata"]["updateFrequency"] == "1hour"
    replaced = api.call("PATCH", f"/energy-sources/{source['id']}", json={"credentials": {"api_key": SECRET_KEY}})
    assert replaced.status_code == 200
    shown = [made.text, replaced.text, api.call("GET", f"/energy-sources/{source['id']}").text]
    shown.append(api.call("GET", "/energy-sources").text)
    assert not any(SECRET_KEY in text or solaredge_v2.SANDBOX_API_KEY in text for text in shown)
    logged = " ".join(str(value) for row in api.audit() for value in row)
    assert SECRET_KEY not in logged and solaredge_v2.SANDBOX_API_KEY not in logged
    rows = [r for r in api.audit() if r[3] in ("source", "credential")]
    assert {r[0] for r in rows} == {"admin@example.org (API token)"} and {r[1] for r in rows} == {"token"}
    assert [(r[2], r[3], r[5]) for r in rows] == [
        ("create", "source", "source created"),
        ("create", "credential", "API Key entered"),
        ("update", "credential", "API Key replaced"),
    ]
    assert api.call("DELETE", f"/energy-sources/{source['id']}").status_code == 204
    assert api.call("GET", f"/energy-sources/{source['id']}").status_code == 404
    assert api.audit()[-1][:4] == ("admin@example.org (API token)", "token", "delete", "source")


def test_put_replaces_the_fields_and_keeps_credentials_it_does_not_name(api: Api) -> None:
    source = api.call("POST", "/energy-sources", json=solaredge_roof(api.meters["PROD"])).json()
    body = source | {"name": "Roof East", "capacity_kw": 40}  # a GET's body, changed and sent back
    replaced = api.call("PUT", f"/energy-sources/{source['id']}", "editor", json=body)
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["name"], replaced.json()["credentials_set"]) == ("Roof East", {"api_key": True})
    # What a PUT leaves out takes a new source's values: the simulator, whose source keeps no SolarEdge key. Judged
    # on what the save did (the key removed), that needs an admin, whichever form the change came through.
    bare = {"name": "Roof East", "capacity_kw": 40}
    refused = api.call("PUT", f"/energy-sources/{source['id']}", "editor", json=bare)
    assert refused.status_code == 403 and "credentials" in refused.json()["detail"]
    replaced = api.call("PUT", f"/energy-sources/{source['id']}", json=bare)
    assert replaced.status_code == 200 and replaced.json()["metadata"]["apiProvider"] == "simulator"
    assert replaced.json()["credentials_set"] == {}
    assert api.audit()[-1][3:6] == ("credential", "Roof East", "API Key removed")


# --- bad input: the page's messages ---------------------------------------------------------------------------


def test_bad_input_gets_problem_details_with_the_pages_messages(api: Api) -> None:
    meter = api.meters["PROD"]
    not_json = api.call("POST", "/energy-sources", content=b'{"name": ', headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["detail"]
    twice = api.call("POST", "/energy-sources", content=b'{"name": "a", "name": "b"}')
    assert twice.status_code == 400 and "'name' twice" in twice.json()["detail"]
    xml = api.call("POST", "/energy-sources", content=b"<a/>", headers={"Content-Type": "application/xml"})
    assert xml.status_code == 415

    wrong = api.call(
        "POST",
        "/energy-sources",
        json=roof(meter, colour="red", capacity_kw=-5, metadata={"updateFrequency": "2min", "useApi": True}),
    )
    assert wrong.status_code == 422
    problem = wrong.json()
    assert (problem["title"], problem["status"]) == ("Unprocessable Content", 422)
    found = {e["pointer"]: e["detail"] for e in problem["errors"]}
    assert found["/colour"] == "is not a known field"
    assert found["/metadata/useApi"] == "is not a known field"  # the stored key is useAPI
    assert found["/capacity_kw"] == "Capacity (kW) must be at least 0"  # the page's message, with its label
    assert found["/metadata/updateFrequency"].startswith("Update Frequency must be one of '5min', '15min'")

    no_key = api.call("POST", "/energy-sources", json=solaredge_roof(meter) | {"credentials": {}})
    assert {e["pointer"]: e["detail"] for e in no_key.json()["errors"]} == {
        "/credentials/api_key": "API Key is required for SolarEdge"
    }
    unused = api.call("POST", "/energy-sources", json=roof(meter, credentials={"client_secret": "x"}))
    assert unused.status_code == 422 and "is not used by Simulator" in unused.json()["errors"][0]["detail"]
    type_ = api.call("POST", "/energy-sources", json=roof(api.meters["CONS"]))
    assert type_.json()["errors"] == [
        {"pointer": "/source_type", "detail": "Source Type must be one of load, grid for a CONS meter"}
    ]

    no_meter = api.call("POST", "/energy-sources", json=roof(99_999))
    assert no_meter.status_code == 422 and no_meter.json()["errors"][-1]["pointer"] == "/meter_id"
    assert api.call("POST", "/energy-sources", json=roof(meter)).status_code == 201
    taken = api.call("POST", "/energy-sources", json=roof(meter, name=" ROOF "))
    assert taken.status_code == 409
    assert taken.json()["errors"] == [
        {"pointer": "/name", "detail": "Source Name: another source of this meter is already named 'Roof'"}
    ]
    huge = api.call("POST", "/energy-sources", json=roof(meter, name="x" * 70_000))
    assert huge.status_code == 413
    source_id = cat.load_catalog(api.runtime.store).sources[0].id
    moved = api.call("PATCH", f"/energy-sources/{source_id}", json={"meter_id": api.meters["CONS"]})
    assert moved.status_code == 422 and moved.json()["errors"][0]["pointer"] == "/meter_id"
    assert api.call("GET", "/energy-sources/4242").status_code == 404
    assert api.call("GET", "/energy-sources?meter_id=4242").status_code == 404
    assert api.call("GET", "/energy-sources?meter_id=abc").status_code == 400
    assert len(cat.load_catalog(api.runtime.store).sources) == 1  # nothing else was saved


def test_a_patch_never_overwrites_a_change_made_meanwhile(api: Api) -> None:
    store, box = api.runtime.store, api.runtime.box
    source_id = api.call("POST", "/energy-sources", json=roof(api.meters["PROD"])).json()["id"]
    read_before = cat.load_catalog(store).source(source_id)
    assert api.call("PATCH", f"/energy-sources/{source_id}", json={"capacity_kw": 70}).status_code == 200
    draft = draft_from_source(read_before)
    draft.values["cost_per_mwh"] = "12"
    site_id = cat.load_catalog(store).meter(read_before.meter_id).site_id
    with pytest.raises(ChangedMeanwhile):
        save_connections(store, box, site_id, [draft], set(), unchanged_since={source_id: read_before})
    assert cat.load_catalog(store).source(source_id).capacity_kw == 70.0


# --- tokens ---------------------------------------------------------------------------------------------------


def test_missing_wrong_revoked_and_expired_tokens_learn_nothing(api: Api) -> None:
    store = api.runtime.store
    old = api_tokens.issue(store, "old", NOW - timedelta(days=3), expires_in_days=1, owner="viewer").token
    revoked = api_tokens.issue(store, "revoked", NOW, expires_in_days=None, owner="viewer")
    api_tokens.revoke(store, revoked.info.id, NOW)
    answers = [
        api.call("GET", "/meters", ""),
        httpx.get(f"{api.url}/api/v1/meters", headers={"Authorization": "Basic eDp5"}),
        httpx.get(f"{api.url}/api/v1/meters", headers={"Authorization": "Bearer dca_guessed"}),
        httpx.get(f"{api.url}/api/v1/meters", headers={"Authorization": f"Bearer {old}"}),
        httpx.get(f"{api.url}/api/v1/meters", headers={"Authorization": f"Bearer {revoked.token}"}),
    ]
    details = {a.json()["detail"] for a in answers}
    assert {a.status_code for a in answers} == {401} and len(details) == 1
    assert all(a.headers["www-authenticate"].startswith("Bearer") for a in answers)


def test_a_token_carries_its_owners_current_role(api: Api) -> None:
    store = api.runtime.store
    assert api.call("POST", "/energy-sources", "editor", json=roof(api.meters["PROD"])).status_code == 201
    users.set_role(store, "editor", Role.VIEWER, NOW, mapping=MAPPING)  # demoted: so is the token, at once
    refused = api.call("POST", "/energy-sources", "editor", json=roof(api.meters["PROD"], name="Second"))
    assert refused.status_code == 403 and "Your role (viewer)" in refused.json()["detail"]
    with store.transaction() as con:
        con.execute("DELETE FROM users WHERE subject = 'editor'")  # removed: the token opens nothing
    assert api.call("GET", "/meters", "editor").status_code == 401


def test_an_owner_without_a_role_is_refused(tmp_path: Path, solaredge: tuple[str, solaredge_v2.FakeState]) -> None:
    runtime = make_runtime(tmp_path, solaredge[0], auth_default_role="none")
    tokens = people(runtime)
    with pytest.raises(users.NoRole):
        users.sign_in(runtime.store, {"sub": "nora"}, RoleMapping(claim="", values={}, default=None), NOW)
    tokens["nora"] = api_tokens.issue(runtime.store, "n", NOW, expires_in_days=None, owner="nora").token
    for api in start(runtime, solaredge, tokens):
        refused = api.call("GET", "/meters", "nora")
        assert refused.status_code == 403 and "nora has no role" in refused.json()["detail"]
        # The viewer had the default role, which is none now: their next sign-in would give them nothing either.
        assert api.call("GET", "/meters", "viewer").status_code == 403
        assert api.call("GET", "/meters", "editor").status_code == 200  # a role an admin gave stays


def test_a_local_token_acts_as_admin_only_while_sign_in_is_not_configured(
    tmp_path: Path, solaredge: tuple[str, solaredge_v2.FakeState]
) -> None:
    runtime = make_runtime(tmp_path, solaredge[0])
    local = api_tokens.issue(runtime.store, "cron", NOW, expires_in_days=None, owner=api_tokens.LOCAL_OWNER)
    assert local.info.owner_subject == api_tokens.LOCAL_OWNER
    for api in start(runtime, solaredge, {"local": local.token}):
        made = api.call("POST", "/energy-sources", "local", json=roof(api.meters["PROD"]))
        assert made.status_code == 201
        assert api.audit()[-1][:2] == ("local user (API token)", "token")
    signed_in = make_runtime(tmp_path, solaredge[0], **SIGN_IN)
    service = IngestService(signed_in)
    with serve(create_app(service)) as url:
        refused = httpx.get(f"{url}/api/v1/meters", headers={"Authorization": f"Bearer {local.token}"})
        assert refused.status_code == 401
    service.close()


def test_a_use_is_recorded_and_the_rate_is_limited_per_token(
    tmp_path: Path, solaredge: tuple[str, solaredge_v2.FakeState]
) -> None:
    runtime = make_runtime(tmp_path, solaredge[0], ingest_requests_per_minute=3)
    for api in start(runtime, solaredge, people(runtime)):
        assert [api.call("GET", "/meters", "viewer").status_code for _ in range(3)] == [200, 200, 200]
        refused = api.call("GET", "/meters", "viewer")
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
        assert api.call("GET", "/meters", "editor").status_code == 200  # another token, another count
        with api.runtime.store.connect(read_only=True) as con:
            used = dict(con.sql("SELECT owner_subject, last_used_at FROM api_tokens").fetchall())
        assert used["viewer"] is not None and used["admin"] is None


# --- Test Connection --------------------------------------------------------------------------------------------


def test_test_connection_is_the_pages_with_its_cache_and_quota(api: Api) -> None:
    source_id = api.call("POST", "/energy-sources", json=solaredge_roof(api.meters["PROD"])).json()["id"]
    first = api.call("POST", f"/energy-sources/{source_id}/test", "editor")
    assert first.status_code == 200, first.text
    result = first.json()
    assert result["status"] == "connected" and result["message"].startswith("Connected to")
    assert result["saved"] is True
    calls = api.solaredge.calls_total
    again = api.call("POST", f"/energy-sources/{source_id}/test", "editor").json()
    assert api.solaredge.calls_total == calls  # no vendor call: the page's cache answered
    assert "(cached result from" in again["message"] and again["tested_at"] == result["tested_at"]
    stored = api.call("GET", f"/energy-sources/{source_id}", "viewer").json()["metadata"]
    assert stored["connectionStatus"] == "connected" and stored["lastPowerW"] == result["power_w"]
    with api.runtime.store.connect(read_only=True) as con:
        counted = con.sql("SELECT sum(calls) FROM quota_usage WHERE period = 'month'").fetchall()[0][0]
    assert counted == calls  # the tests were counted against the account like the page's


# --- the service's manners ------------------------------------------------------------------------------------


def test_every_answer_forbids_framing_sniffing_and_caching(api: Api) -> None:
    answers = [
        api.call("GET", "/meters"),
        api.call("GET", "/meters", ""),
        api.call("GET", "/nowhere"),
        api.call("POST", "/energy-sources", json={}),
        httpx.get(f"{api.url}/api/v1/openapi.json"),
    ]
    for answer in answers:
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"


def test_named_frame_ancestors_replace_deny(tmp_path: Path, solaredge: tuple[str, solaredge_v2.FakeState]) -> None:
    runtime = make_runtime(tmp_path, solaredge[0], frame_ancestors="https://intranet.example.org")
    for api in start(runtime, solaredge, people(runtime)):
        answer = api.call("GET", "/meters")
        assert answer.headers["content-security-policy"] == "frame-ancestors https://intranet.example.org"
        assert "x-frame-options" not in answer.headers


def test_a_held_file_answers_503_with_retry_after(api: Api) -> None:
    api.call("GET", "/meters")
    with held(api.runtime.store.path):
        answer = api.call("GET", "/meters")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert "another program holds the database file" in answer.json()["detail"]
    assert str(api.runtime.store.path.parent) not in answer.text


def test_no_token_reaches_a_log(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        api.call("GET", "/meters")
        api.call("POST", "/energy-sources", json=roof(api.meters["PROD"], capacity_kw="lots"))
        httpx.get(f"{api.url}/api/v1/meters", headers={"Authorization": f"Bearer {api.tokens['admin']}x"})
        api.call("GET", "/meters", "viewer")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert all(token[4:] not in logged for token in api.tokens.values())


# --- OpenAPI --------------------------------------------------------------------------------------------------


def test_the_openapi_document_describes_every_route_and_validates_real_answers(api: Api) -> None:
    document = httpx.get(f"{api.url}/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["apiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["apiToken"]["description"],
    }
    for route in create_app(api.service).routes:
        assert isinstance(route, Route)
        path = route.path.replace(":int", "")
        assert path in document["paths"], path
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        assert methods <= set(document["paths"][path]), (path, methods)

    def check(answer: httpx.Response, path: str, method: str) -> None:
        responses = document["paths"][path][method]["responses"]
        described = responses[str(answer.status_code)]
        if "$ref" in described:
            described = document["components"]["responses"][described["$ref"].rsplit("/", 1)[1]]
        media = answer.headers["content-type"].split(";")[0]
        schema = described["content"][media]["schema"]
        validator = Draft202012Validator({**schema, "components": document["components"]})
        errors = [e.message for e in validator.iter_errors(answer.json())]
        assert errors == [], (path, method, answer.status_code, errors)

    body = solaredge_roof(api.meters["PROD"])
    Draft202012Validator({"$ref": "#/components/schemas/SourceCreate", "components": document["components"]}).validate(
        body
    )
    made = api.call("POST", "/energy-sources", json=body)
    source_id = made.json()["id"]
    item = "/api/v1/energy-sources/{source_id}"
    for answer, path, method in (
        (made, "/api/v1/energy-sources", "post"),
        (api.call("GET", "/meters"), "/api/v1/meters", "get"),
        (api.call("GET", "/energy-sources"), "/api/v1/energy-sources", "get"),
        (api.call("GET", f"/energy-sources/{source_id}"), item, "get"),
        (api.call("PATCH", f"/energy-sources/{source_id}", json={"capacity_kw": 9}), item, "patch"),
        (api.call("PATCH", f"/energy-sources/{source_id}", json={"capacity_kw": -1}), item, "patch"),
        (api.call("POST", f"/energy-sources/{source_id}/test"), f"{item}/test", "post"),
        (api.call("GET", "/meters", ""), "/api/v1/meters", "get"),
        (api.call("GET", "/energy-sources/777"), item, "get"),
        (api.call("POST", "/energy-sources", "viewer", json=body), "/api/v1/energy-sources", "post"),
        (api.call("POST", "/energy-sources", json=body), "/api/v1/energy-sources", "post"),  # 409
    ):
        check(answer, path, method)
    json.dumps(document)  # plain JSON throughout


def test_a_fault_of_ours_answers_500_without_a_traceback(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    with api.runtime.store.transaction() as con:
        con.execute("ALTER TABLE api_tokens RENAME TO api_tokens_gone")  # a file this version cannot read tokens from
    with caplog.at_level(logging.ERROR):
        answer = api.call("GET", "/meters")
    assert answer.status_code == 500 and answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == "The service failed on this request; it has been logged. Nothing was changed."
    assert "Traceback" not in answer.text and "api_tokens" not in answer.text
    assert any("GET /api/v1/meters failed: CatalogException" in r.getMessage() for r in caplog.records)
    assert answer.headers["x-frame-options"] == "DENY"
