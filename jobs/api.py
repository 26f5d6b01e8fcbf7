"""The HTTP API: the seed's backend (meters, energy sources, Test Connection) on the ingest service, under
`/api/v1/` beside the push endpoint (README, "HTTP API"; described at `GET /api/v1/openapi.json`).

Every request but the description's names a personal API token (`Authorization: Bearer dca_...`,
`core.catalog.api_tokens`) and acts as its owner, with the owner's role as it is now. The checks come in an order
that keeps what an answer reveals to what the caller may know: the token (401, the same answer whatever is wrong with
it), the owner's role (403), the rate (429), the body (415, 413, 400), then the work, done by `core.catalog.source_api`
through the pages' own code, whose refusals become problem details: 403 (the role's message), 404, 409 (a name taken,
a change made meanwhile), 422 (each field's problem by its JSON pointer, in the page's words), 503 while another
program holds the file (with Retry-After). A fault of ours answers 500 with no detail and is logged (the traceback at
DEBUG only); no token reaches a log: requests are logged by token id.

Handlers are async; everything that touches the file runs in the thread pool, as the token's owner
(`core.actors.acting_as`, set inside the thread so that the actor never depends on how the pool copies contexts).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.actors import Actor, Forbidden, acting_as
from core.catalog import api_tokens, source_api
from core.catalog import catalog as cat
from core.catalog.api_tokens import UseMarks, Verified
from core.collect.push_auth import RateLimiter
from core.runtime import Runtime
from core.store.crypto import SecretsError
from core.store.store import StoreBusy, StoreFault, StoreUnavailable, reads_wait_at_most
from jobs.api_openapi import openapi_document
from jobs.problems import bearer, problem, read_body

log = logging.getLogger("dataconn.api")

PREFIX = "/api/v1"
MAX_BODY_BYTES = 64 * 1024  # a source is a few hundred bytes; nothing the API takes comes near this
READ_WAIT_S = 1.0  # a held file is said at once (503), like on the pages, rather than after the 15 s writes wait
HELD_RETRY_S = 5
JSON_TYPES = ("application/json", "application/merge-patch+json", "application/x-www-form-urlencoded", "")
UNAUTHORIZED = "Send a valid API token: Authorization: Bearer <token> (made on the dashboard's API Tokens page)."


class BadBody(ValueError):
    """A body that is not one JSON object: 400 with the reason."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadBody(f"The JSON object names {key!r} twice.")
            seen.add(key)
    return result


def parse_object(body: bytes) -> dict[str, Any]:
    """The body's JSON object; `BadBody` saying why when it is not one."""
    if not body.strip():
        raise BadBody("The body is empty: send the source as a JSON object.")
    try:
        parsed = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise BadBody("The body is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise BadBody(f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
    except RecursionError:
        raise BadBody("The body nests too deeply to be a source.") from None
    if not isinstance(parsed, dict):
        raise BadBody("The body must be a JSON object of the source's fields.")
    return parsed


class ApiService:
    """The API's state: the runtime, the per-token rate limit, the last-use marks."""

    def __init__(self, runtime: Runtime, *, clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.store = runtime.store
        # The push endpoint's setting: one number for "requests a token may make in a minute", whichever the token.
        self.rate = RateLimiter(runtime.settings.ingest_requests_per_minute)
        self.uses = UseMarks()
        self.clock = clock
        self._document: dict[str, Any] | None = None

    def routes(self) -> list[Route]:
        return [
            Route(f"{PREFIX}/openapi.json", self.openapi, methods=["GET"]),
            Route(f"{PREFIX}/meters", self.meters, methods=["GET"]),
            Route(f"{PREFIX}/energy-sources", self.sources, methods=["GET", "POST"]),
            Route(f"{PREFIX}/energy-sources/{{source_id:int}}", self.source, methods=["GET", "PUT", "PATCH", "DELETE"]),
            Route(f"{PREFIX}/energy-sources/{{source_id:int}}/test", self.test, methods=["POST"]),
        ]

    # --- endpoints -----------------------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        if self._document is None:
            self._document = openapi_document(self.settings)
        return JSONResponse(self._document)

    async def meters(self, request: Request) -> Response:
        return await self._serve(
            request, lambda _: _ok([source_api.dump(m) for m in source_api.list_meters(self.store)])
        )

    async def sources(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._serve(request, self._create, body=True)
        raw = request.query_params.get("meter_id")
        if raw is not None and not raw.strip().isdigit():
            return problem(400, "meter_id must be a meter's id (a whole number).", [("/meter_id", "must be a number")])
        meter_id = int(raw) if raw is not None else None
        listed = partial(source_api.list_sources, self.store, meter_id)
        return await self._serve(request, lambda _: _ok([source_api.dump(s) for s in listed()]))

    async def source(self, request: Request) -> Response:
        source_id = int(request.path_params["source_id"])
        if request.method == "GET":
            return await self._serve(
                request, lambda _: _ok(source_api.dump(source_api.get_source(self.store, source_id)))
            )
        if request.method == "DELETE":
            return await self._serve(request, partial(self._delete, source_id))
        update = partial(self._update, source_id, request.method == "PUT")
        return await self._serve(request, update, body=True)

    async def test(self, request: Request) -> Response:
        source_id = int(request.path_params["source_id"])
        return await self._serve(request, partial(self._test, source_id))

    # --- the work, in the thread pool as the token's owner ----------------------------------------------------

    def _create(self, body: Any) -> Response:
        made = source_api.create_source(
            self.runtime.store, self.runtime.box, body, enphase_plan=self.settings.enphase_plan
        )
        return JSONResponse(
            source_api.dump(made), status_code=201, headers={"Location": f"{PREFIX}/energy-sources/{made.id}"}
        )

    def _update(self, source_id: int, replace: bool, body: Any) -> Response:
        changed = source_api.update_source(
            self.runtime.store,
            self.runtime.box,
            source_id,
            body,
            enphase_plan=self.settings.enphase_plan,
            replace=replace,
        )
        return _ok(source_api.dump(changed))

    def _delete(self, source_id: int, _: Any) -> Response:
        source_api.delete_source(
            self.runtime.store, self.runtime.box, source_id, enphase_plan=self.settings.enphase_plan
        )
        return Response(status_code=204)

    def _test(self, source_id: int, _: Any) -> Response:
        outcome = source_api.test_source(
            self.runtime.store,
            self.runtime.box,
            source_id,
            datetime.now(UTC),
            self.runtime.providers,
            enphase_plan=self.settings.enphase_plan,
        )
        return _ok(source_api.dump(outcome))

    # --- the checks every endpoint makes -----------------------------------------------------------------------

    async def _serve(self, request: Request, work: Callable[[Any], Response], *, body: bool = False) -> Response:
        where = f"{request.method} {request.url.path}"
        token = bearer(request.headers)
        if token is None:
            return problem(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        now = datetime.now(UTC)
        try:
            verified = await run_in_threadpool(self._verify, token, now)
        except StoreUnavailable as exc:
            return _unavailable(exc, "this token cannot be checked now")
        except Exception as exc:  # the API's boundary, as in `_work`
            return _failed(where, exc)
        if verified is None:
            log.info("%s refused: unknown, revoked or expired token", where)
            return problem(401, UNAUTHORIZED, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if verified.actor is None:
            log.info("%s refused: the owner of token %d has no role", where, verified.token_id)
            return problem(403, verified.why_not)
        wait = self.rate.retry_after(f"api:{verified.token_id}", self.clock())
        if wait is not None:
            return problem(
                429, f"More than {self.rate.per_minute} requests a minute with this token.", retry_after_s=wait
            )
        parsed: Any = None
        if body:
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind not in JSON_TYPES and not kind.endswith("+json"):
                return problem(415, f"Send JSON (Content-Type: application/json), not {kind[:60]}.")
            raw = await read_body(request, MAX_BODY_BYTES)
            if raw is None:
                return problem(413, f"The body is larger than {MAX_BODY_BYTES:,} bytes.")
            try:
                parsed = parse_object(raw)
            except BadBody as exc:
                return problem(400, str(exc))
        answer = await self._work(verified.actor, work, parsed, where, verified.token_id)
        answer.background = BackgroundTask(self.uses.used, self.store, verified.token_id, now)
        return answer

    def _verify(self, token: str, now: datetime) -> Verified | None:
        with reads_wait_at_most(READ_WAIT_S):
            return api_tokens.verify(self.store, token, now, self.settings)

    async def _work(
        self, actor: Actor, work: Callable[[Any], Response], parsed: Any, where: str, token_id: int
    ) -> Response:
        try:
            return await run_in_threadpool(_as, actor, work, parsed)
        except Forbidden as exc:
            log.info("%s refused (403, token %d): %s", where, token_id, exc.permission.name)
            return problem(403, str(exc))
        except source_api.SourceRefused as exc:
            status = 409 if exc.conflict else 422
            log.info("%s refused (%d, token %d)", where, status, token_id)
            return problem(status, exc.detail, exc.errors)
        except cat.NotFound as exc:
            return problem(404, f"Not found: {exc}.")
        except StoreUnavailable as exc:
            return _unavailable(exc, "the database cannot be used now")
        except SecretsError:
            return problem(
                503,
                "Credentials cannot be encrypted or decrypted now: the server has no usable key (the dashboard says"
                " what to do). Nothing was changed.",
            )
        except Exception as exc:  # the API's boundary: a bug of ours is logged, never shown
            return _failed(where, exc)


def _as(actor: Actor, work: Callable[[Any], Response], parsed: Any) -> Response:
    with acting_as(actor), reads_wait_at_most(READ_WAIT_S):
        return work(parsed)


def _failed(where: str, exc: Exception) -> Response:
    """A fault of ours: its kind in the log (the traceback at DEBUG), nothing of it in the answer."""
    log.error("%s failed: %s", where, type(exc).__name__)
    log.debug("%s failed", where, exc_info=exc)
    return problem(500, "The service failed on this request; it has been logged. Nothing was changed.")


def _ok(content: Any) -> Response:
    return JSONResponse(content)


def _unavailable(exc: StoreUnavailable, what: str) -> Response:
    """A held or failing file: said without the server's paths (a page may name them; a remote caller need not)."""
    if isinstance(exc, StoreBusy):
        why = "another program holds the database file"
    elif isinstance(exc, StoreFault):
        why = exc.cause
    else:
        why = "the database file cannot be opened"
    return problem(503, f"Not now: {what} ({why}). Nothing was changed; try again shortly.", retry_after_s=HELD_RETRY_S)
