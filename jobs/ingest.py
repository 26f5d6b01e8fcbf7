"""The ingest service: `python -m jobs.ingest` takes readings that loggers and webhooks push (docs/real-time.md).

`POST /api/v1/sources/{source_id}/readings` with `Authorization: Bearer <token>` (and, for a source in signature
mode, `X-Timestamp` and `X-Signature`), a JSON or CSV body (`core.collect.push_readings`). Answers: 200 stored,
202 spooled (the file was held: durable, written later), or an RFC 9457 problem (`application/problem+json`) with
the row errors; `GET /healthz` says the service is up. The order of the checks keeps what an answer reveals to
what the caller already knows: a request without a valid token for the source learns nothing about the source.

The same service serves the HTTP API (`jobs/api.py`: meters and energy sources under `/api/v1/`, with personal API
tokens), so there is one port to open and one process to run. Every answer carries the headers of
`jobs.problems.SecurityHeaders` (no framing, no sniffing, no caching).

A Starlette application served by uvicorn, both already installed with Streamlit (one web stack, no new dependency).
Handlers are async; parsing runs in the thread pool and writing in the push writer's thread
(`core.collect.push_write`), so the event loop only moves bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.actors import SIGNED_OUT, set_process_actor
from core.collect.push_activity import PUBLISH_EVERY_S, PushActivity
from core.collect.push_auth import CannotTell, PushDirectory, RateLimiter, ReplayGuard, check_signature
from core.collect.push_readings import PushLimits, PushRefused, parse_push
from core.collect.push_write import NotKept, PushBatch, PushWriter
from core.collect.readings_import import ReadingsFileLimits
from core.config import Settings
from core.runtime import Runtime, open_runtime
from core.store.crypto import SecretsError
from core.store.private_files import private_umask
from core.store.spool import Spool
from core.store.store import StoreError
from jobs.api import PREFIX, ApiService
from jobs.cli import DEBUG_HINT, settings_from_env
from jobs.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE, SecurityHeaders, bearer, problem, read_body

log = logging.getLogger("dataconn.ingest")
READINGS_PATH = "/api/v1/sources/{source_id:int}/readings"


class IngestService:
    """The service's state: the directory of push sources, the writer, the limits."""

    def __init__(self, runtime: Runtime, *, clock: Any = time.time) -> None:
        settings = runtime.settings
        self.settings = settings
        self.directory = PushDirectory(runtime.store, runtime.box)
        self.writer = PushWriter(runtime.store, Spool.beside(runtime.store.path))
        self.limits = PushLimits(
            max_bytes=settings.ingest_max_body_kb * 1024,
            max_readings=settings.ingest_max_readings,
            readings=ReadingsFileLimits.from_settings(settings),
        )
        self.rate = RateLimiter(settings.ingest_requests_per_minute)
        self.replays = ReplayGuard()
        self.clock = clock
        self.store = runtime.store
        self.activity = PushActivity()
        self.api = ApiService(runtime, clock=clock)  # the HTTP API (jobs/api.py), served beside the push endpoint
        self._stop = threading.Event()
        self._publisher = threading.Thread(target=self._publish_loop, name="push-activity", daemon=True)
        self._publisher.start()

    def close(self) -> None:
        """Write what was accepted (or spool it), and the last figures."""
        self._stop.set()
        self.writer.close()
        self.activity.publish(self.store, force=True)

    def _publish_loop(self) -> None:
        while not self._stop.wait(PUBLISH_EVERY_S):
            self.activity.publish(self.store, force=True)

    async def readings(self, request: Request) -> Response:
        source_id = int(request.path_params["source_id"])
        answer = await self._readings(request, source_id)
        if self.directory.known(source_id) is not None:  # a request to no Push source is nobody's figure
            now = datetime.now(UTC)
            if answer.status_code < 300:
                self.activity.accepted(source_id, int(answer.headers.get("x-readings", "0")), now)
            else:
                self.activity.refused(source_id, answer.status_code, _reason(answer), now)
        return answer

    async def _readings(self, request: Request, source_id: int) -> Response:
        token = bearer(request.headers)
        if token is None:
            return problem(401, "Send the source's token: Authorization: Bearer <token>.")
        try:
            source = await run_in_threadpool(self.directory.source_for, token, source_id)
        except CannotTell as exc:
            return problem(503, f"This token cannot be checked now ({exc}); send again shortly.", retry_after_s=10)
        if source is None:
            log.info("push to source %d refused: unknown token", source_id)
            return problem(401, "This token does not open this source (revoked, rotated, or another source's).")
        wait = self.rate.retry_after(token, self.clock())
        if wait is not None:
            return problem(
                429, f"More than {self.rate.per_minute} requests a minute with this token.", retry_after_s=wait
            )
        if not source.enabled:
            return problem(409, f"{source.name} is switched off (Use API) in Data Connections: nothing is taken.")
        body = await read_body(request, self.limits.max_bytes)
        if body is None:
            return problem(413, f"The body is larger than {self.limits.max_bytes:,} bytes.")
        if source.signed:
            wrong = check_signature(
                source,
                request.headers.get("x-timestamp"),
                request.headers.get("x-signature"),
                body,
                self.clock(),
                self.replays,
            )
            if wrong is not None:
                log.info("push to source %d refused: %s", source_id, wrong)
                return problem(401, wrong[0].upper() + wrong[1:] + ".")
        now = datetime.now(UTC)
        try:
            readings = await run_in_threadpool(
                parse_push,
                body,
                request.headers.get("content-type", ""),
                dict(request.query_params),
                source.site_zone,
                now,
                self.limits,
            )
        except PushRefused as exc:
            log.info("push to source %d refused (%d): %s", source_id, exc.status, exc.title)
            extra: dict[str, Any] = {"more_errors": exc.more} if exc.more else {}
            return problem(exc.status, exc.title, exc.errors, **extra)
        if readings.height == 0:
            return JSONResponse({"readings": 0, "status": "stored"}, status_code=200)
        try:
            written = await asyncio.wrap_future(self.writer.submit(PushBatch(source_id, readings, now)))
        except NotKept as exc:
            log.error("push to source %d not kept: %s", source_id, exc)
            return problem(
                503, "The readings could not be stored nor kept for later; send them again.", retry_after_s=30
            )
        status = 200 if written == "stored" else 202
        headers = {"X-Readings": str(readings.height)}
        return JSONResponse({"readings": readings.height, "status": written}, status_code=status, headers=headers)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


def _reason(answer: Response) -> str:
    """A refusal as API Health shows it: the problem's detail (never a token: details name none)."""
    try:
        return str(json.loads(bytes(answer.body)).get("detail", ""))
    except (ValueError, AttributeError):
        return ""


async def _unexpected(request: Request, exc: Exception) -> Response:
    """The service's boundary: a bug of ours is logged (at DEBUG with its traceback), never shown to a client."""
    log.error("push request failed: %s", type(exc).__name__)
    log.debug("push request failed", exc_info=exc)
    return problem(500, "The service failed on this request; it has been logged.")


async def _not_found(request: Request, exc: Exception) -> Response:
    where = READINGS_PATH.replace(":int", "")
    asked = f"{request.method} {request.url.path}"
    if request.url.path.startswith(PREFIX) and not request.url.path.startswith(f"{PREFIX}/sources/"):
        return problem(404, f"No such endpoint: {asked}. The API is described at GET {PREFIX}/openapi.json.")
    return problem(404, f"No such endpoint: {asked}. Readings go to POST {where}.")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    headers = getattr(exc, "headers", None) or {}  # Starlette's HTTPException names the route's methods
    allow = str(headers.get("Allow", "POST"))
    return JSONResponse(
        {"type": PROBLEM_TYPE, "title": "Method Not Allowed", "status": 405, "detail": f"Use {allow}."},
        status_code=405,
        media_type=PROBLEM_MEDIA_TYPE,
        headers={"Allow": allow},
    )


def create_app(service: IngestService) -> Starlette:
    return Starlette(
        routes=[
            Route(READINGS_PATH, service.readings, methods=["POST"]),
            Route("/healthz", service.health, methods=["GET"]),
            *service.api.routes(),
        ],
        middleware=[Middleware(SecurityHeaders, frame_ancestors=service.settings.frame_ancestors)],
        exception_handlers={404: _not_found, 405: _method_not_allowed, Exception: _unexpected},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.ingest", description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    private_umask()
    set_process_actor(SIGNED_OUT)  # a request acts as whoever its token names; anything else may not write
    try:
        settings = settings_from_env("%(asctime)s %(levelname)s %(name)s: %(message)s")
        runtime = open_runtime(settings, prepare=False)
        service = IngestService(runtime)
    except (StoreError, SecretsError) as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 1
    except Exception:
        log.debug("ingest failed to start", exc_info=True)
        print(f"ingest: stopped on a problem it cannot explain; {DEBUG_HINT}", file=sys.stderr)
        return 1
    return serve(service, settings)


def serve(service: IngestService, settings: Settings) -> int:
    config = uvicorn.Config(
        create_app(service),
        host=settings.ingest_host,
        port=settings.ingest_port,
        access_log=False,  # our own line says what matters; a URL never carries a token, but a log needs no URLs
        log_level=logging.getLevelName(logging.getLogger().level).lower(),
        server_header=False,
    )
    server = uvicorn.Server(config)
    log.info("ingest service on http://%s:%d", settings.ingest_host, settings.ingest_port)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot bind the port
        print(f"ingest: cannot listen on {settings.ingest_host}:{settings.ingest_port} (in use?)", file=sys.stderr)
        return int(exc.code or 1)
    finally:
        service.close()  # what was accepted is written (or spooled) before the process ends
    return 0


if __name__ == "__main__":
    sys.exit(main())  # uvicorn turns SIGTERM and SIGINT into a graceful stop; `serve` then closes the writer
