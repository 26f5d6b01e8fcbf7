"""What the ingest service's endpoints share (the push endpoint, `jobs/ingest.py`, and the HTTP API, `jobs/api.py`):
RFC 9457 problem details, the bearer token of a request, a body read within a limit, and the headers every answer
carries.

A problem's `detail` and its `errors` are written for the caller and never carry a token, a secret, a path of the
server or a traceback; `errors` list a JSON pointer (or a CSV row) and what is wrong there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_TYPE = "about:blank"  # RFC 9457: the title is the HTTP status's meaning, `detail` says more
PROBLEM_MEDIA_TYPE = "application/problem+json"

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem(
    status: int,
    detail: str,
    errors: list[tuple[str, str]] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """An `application/problem+json` answer; `retry_after_s` in `extra` also becomes the `Retry-After` header."""
    body: dict[str, Any] = {"type": PROBLEM_TYPE, "title": TITLES.get(status, "Error"), "status": status}
    body["detail"] = detail
    if errors:
        body["errors"] = [{"pointer": pointer, "detail": message} for pointer, message in errors]
    body |= extra
    sent = dict(headers or {})
    if "retry_after_s" in extra:
        sent["Retry-After"] = str(extra["retry_after_s"])
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=sent or None)


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def read_body(request: Request, max_bytes: int) -> bytes | None:
    """The body, or None as soon as it passes `max_bytes` (never read whole into memory first)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                return None
            chunks.append(chunk)
    except ClientDisconnect:
        return b""
    return b"".join(chunks)


class SecurityHeaders:
    """Adds to every answer the headers that keep a browser from framing it, sniffing its type or caching it:
    `X-Frame-Options: DENY` with `Content-Security-Policy: frame-ancestors 'none'`, or, when the operator named the
    origins that may frame the dashboard (`DATACONN_FRAME_ANCESTORS`), a policy naming them and no X-Frame-Options
    (which cannot name several origins, and would contradict the policy in a browser that reads only it);
    `X-Content-Type-Options: nosniff`; `Cache-Control: no-store` (every answer is data or a refusal: nothing a proxy
    or a browser should keep). A plain ASGI wrapper, so streamed answers pass through untouched."""

    def __init__(self, app: ASGIApp, frame_ancestors: str = "") -> None:
        self.app = app
        origins = " ".join(frame_ancestors.split())
        allowed = origins or "'none'"
        headers = [(b"content-security-policy", f"frame-ancestors {allowed}".encode())]
        if not origins:
            headers.append((b"x-frame-options", b"DENY"))
        headers += [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in self.headers}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message["headers"] = kept + self.headers
            await send(message)

        await self.app(scope, receive, with_headers)
