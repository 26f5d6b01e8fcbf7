"""The one answer handling every vendor client uses (`core.providers.answers`), over real HTTP on loopback.

A tiny server answers the ways vendors misbehave (a maintenance page, broken JSON, a huge body, an error that
echoes the credentials it was sent); the funnel sends real requests carrying a query-string key, a Bearer token
and an API-key header, and nothing that leaves (message, excerpt, recorded exchange) may hold any of them. The
vendor clients are then checked against their own fake servers for the same promises.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.providers.answers import (
    EXCERPT_CHARS,
    decode_json,
    excerpt,
    json_or_none,
    scrub,
    scrubbed_text,
    secrets_of,
)
from core.providers.base import BadResponse
from core.providers.exchange import MAX_BODY_BYTES
from core.providers.http import REDACTED, HttpFunnel
from tests.fakes.server import serve

QUERY_KEY = "query-key-7c1e9a0b55d24f"  # travels as ?api_key=
BEARER = "bearer-token-3f9d2b8e61aa47"  # travels as Authorization: Bearer ...
HEADER_KEY = "header-key-0d4c8b7a2e9f13"  # travels as X-API-Key
OTHER = "client-secret-5e6f7a8b9c0d12"  # never sent; the caller names it
SECRETS = (QUERY_KEY, BEARER, HEADER_KEY, OTHER)

MAINTENANCE = (
    "<!DOCTYPE html>\n<html><head><title>Down for maintenance</title></head>\n<body><h1>We'll be back soon</h1>"
    "<p>Request was /data?api_key={key}</p></body></html>"
)


def _echo(request: Request) -> str:
    """Everything a careless server might repeat: the full URL, the credential headers, a token field."""
    return json.dumps(
        {
            "message": f"rejected {request.url} with {request.headers.get('authorization')}",
            "key_seen": request.headers.get("x-api-key"),
            "access_token": request.headers.get("x-api-key"),
            "secret_seen": OTHER,
        }
    )


async def _route(request: Request) -> Response:
    kind = request.path_params["kind"]
    key = request.query_params.get("api_key", "")
    if kind == "maintenance":
        return Response(MAINTENANCE.format(key=key), media_type="text/html")
    if kind == "tag-as-json":  # a web page that claims to be JSON
        return Response(f"  <html><body>Bad gateway for {key}</body></html>", media_type="application/json")
    if kind == "broken":
        return Response('{"values": [1, 2, ' + json.dumps(key), media_type="application/json")
    if kind == "huge":  # a secret at the start and at the very end; far more than anything keeps
        body = '{"note": "' + key + " " + "x" * (MAX_BODY_BYTES * 2) + " " + key + '"'
        return Response(body, media_type="application/json")
    if kind == "multiline":  # lines an excerpt joins; a Bearer value split from its word by a line break
        return Response("oops\n\n   Bearer\n" + BEARER + "\n" + "y" * 500, media_type="text/plain")
    if kind == "echo":
        return Response(_echo(request), status_code=401, media_type="application/json")
    if kind == "good":
        return Response(json.dumps({"ok": True, "n": 3}), media_type="application/json")
    return Response("no such route", status_code=404)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(Starlette(routes=[Route("/{kind}", _route)])) as url:
        yield url


@pytest.fixture
def funnel(base_url: str) -> Iterator[HttpFunnel]:
    funnel = HttpFunnel(base_url, vendor="Acme", headers={"X-API-Key": HEADER_KEY})
    yield funnel
    funnel.close()


def fetch(funnel: HttpFunnel, kind: str) -> httpx.Response:
    return funnel.request("GET", kind, params={"api_key": QUERY_KEY}, headers={"Authorization": f"Bearer {BEARER}"})


def assert_clean(*texts: str) -> None:
    for text in texts:
        leaked = [secret for secret in SECRETS if secret in text]
        assert leaked == [], f"{leaked} in {text[:300]!r}"


def bad_response(response: httpx.Response) -> BadResponse:
    with pytest.raises(BadResponse) as info:
        decode_json(response, html="Acme sent a web page.", malformed="Acme sent broken JSON.", extra_secrets=[OTHER])
    return info.value


def test_a_good_answer_is_its_json(funnel: HttpFunnel) -> None:
    assert decode_json(fetch(funnel, "good"), html="page", malformed="broken") == {"ok": True, "n": 3}


def test_a_maintenance_page_is_a_bad_response_with_a_clean_one_line_excerpt(funnel: HttpFunnel) -> None:
    error = bad_response(fetch(funnel, "maintenance"))
    assert str(error) == "Acme sent a web page."
    assert error.excerpt.startswith("<!DOCTYPE html> <html><head><title>Down for maintenance")
    assert "\n" not in error.excerpt and len(error.excerpt) <= EXCERPT_CHARS
    assert_clean(error.excerpt)


def test_a_page_sent_as_json_is_still_a_web_page(funnel: HttpFunnel) -> None:
    error = bad_response(fetch(funnel, "tag-as-json"))
    assert str(error) == "Acme sent a web page."
    assert "Bad gateway for" in error.excerpt
    assert_clean(error.excerpt)


def test_invalid_json_is_a_bad_response_whose_excerpt_hides_the_echoed_key(funnel: HttpFunnel) -> None:
    error = bad_response(fetch(funnel, "broken"))
    assert str(error) == "Acme sent broken JSON."
    assert error.excerpt == '{"values": [1, 2, "' + REDACTED + '"'
    assert_clean(error.excerpt)


def test_an_oversized_body_gives_a_bounded_excerpt_and_a_bounded_record(funnel: HttpFunnel) -> None:
    response = fetch(funnel, "huge")
    assert len(response.text) > MAX_BODY_BYTES
    error = bad_response(response)
    assert len(error.excerpt) == EXCERPT_CHARS
    assert error.excerpt.startswith('{"note": "' + REDACTED + " xxx")
    (recorded,) = funnel.drain()
    assert len(recorded.body.encode()) <= MAX_BODY_BYTES
    assert_clean(error.excerpt, recorded.body, recorded.endpoint)


def test_an_excerpt_joins_lines_before_it_is_cut_and_still_scrubs_what_was_split(funnel: HttpFunnel) -> None:
    error = bad_response(fetch(funnel, "multiline"))
    assert error.excerpt.startswith(f"oops Bearer {REDACTED} yyy")
    assert len(error.excerpt) == EXCERPT_CHARS
    assert_clean(error.excerpt)


def test_an_error_that_echoes_every_credential_is_scrubbed_for_messages_and_records(funnel: HttpFunnel) -> None:
    response = fetch(funnel, "echo")
    assert response.status_code == 401
    assert all(secret in response.text for secret in SECRETS)  # the server really did echo them all
    text = scrubbed_text(response, [OTHER])
    assert_clean(text, excerpt(json_or_none(text)))
    assert json_or_none(text)["access_token"] == REDACTED  # still JSON a vendor's status mapping can read
    (recorded,) = funnel.drain()
    assert recorded.http_status == 401
    assert recorded.endpoint == f"echo?api_key={REDACTED}"
    # The record blanks what the request carried; the never-sent secret is the caller's to name in messages.
    assert [s for s in SECRETS if s in recorded.body] == [OTHER]


def test_the_request_secrets_come_from_the_request_itself(funnel: HttpFunnel) -> None:
    secrets = secrets_of(fetch(funnel, "good"), [OTHER])
    assert set(secrets) >= {QUERY_KEY, BEARER, f"Bearer {BEARER}", HEADER_KEY, OTHER}
    assert secrets == sorted(secrets, key=len, reverse=True)  # a secret holding another is blanked whole
    handmade = httpx.Response(200, text="{}")  # no request behind it: only what the caller names
    assert secrets_of(handmade, [OTHER]) == [OTHER]


def test_scrub_blanks_literals_before_patterns_so_no_piece_of_a_secret_survives() -> None:
    odd = "abc!def-ghi"  # a "!" would stop the Bearer pattern half-way through the secret
    assert scrub(f"Authorization: Bearer {odd}", [odd]) == f"Authorization: Bearer {REDACTED}"
    assert scrub('{"refresh_token": "r-123", "code": "c-456", "name": "Gent"}') == (
        f'{{"refresh_token": "{REDACTED}", "code": "{REDACTED}", "name": "Gent"}}'
    )


# --- the vendor clients, against their fake servers ------------------------------------------------------------

VENDOR_PAGE_WORDS = {"solaredge_v2": "web page", "solaredge_v1": "HTML page", "enphase": "HTML page"}


@pytest.fixture(params=sorted(VENDOR_PAGE_WORDS))
def vendor(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any, str]]:
    app, harness = importlib.import_module(f"tests.fakes.{request.param}").make_harness()
    with serve(app) as url:
        yield request.param, harness, url


@pytest.mark.parametrize("failure", ["html", "malformed"])
def test_every_vendor_client_turns_a_page_or_broken_json_into_a_clean_bad_response(
    vendor: tuple[str, Any, str], failure: str
) -> None:
    name, harness, url = vendor
    client = harness.client(url)
    harness.state.failures.fail_next(failure)
    with pytest.raises(BadResponse) as info:
        client.test_connection(datetime.now(UTC))
    if failure == "html":
        assert VENDOR_PAGE_WORDS[name] in str(info.value)
    else:
        assert "JSON" in str(info.value)
    assert info.value.excerpt and len(info.value.excerpt) <= EXCERPT_CHARS
    exchanges = client.exchanges()
    assert exchanges
    for text in (str(info.value), info.value.excerpt, *(e.body for e in exchanges), *(e.endpoint for e in exchanges)):
        assert [s for s in harness.secrets if s and s in text] == []
    client.close()
