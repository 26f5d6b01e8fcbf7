"""Enphase's live status stream for one system: open it, read its server-sent events, hand out typed frames.

`GET /api/v4/systems/{id}/live_data` (docs/enphase-v4.md, "Live status stream") answers `text/event-stream`: one JSON
frame per event, about one a second, for `duration` seconds (a request header, 30 to 300), after which the server
closes it. It goes through the system's `EnphaseClient` (`EnphaseClient.stream`), so it uses the same grant (token
renewed before expiry and once after a 401), the same application key, the same funnel (pooled connection, secrets
redacted from messages, logs and the recorded exchange) and the same quota ledger: each opened stream reserves one
call before it is sent, like any v4 call (whether Enphase counts it as more is not documented).

What the caller gets:
- `frames()` yields `LiveFrame`s until the server closes the stream after its duration (the iteration then ends
  normally), the caller stops iterating (the connection is closed at once), or `stop()` is called from another
  thread (taken into account at the next event, so within about a second; later `frames()` calls then return at
  once);
- an event that is not a readable frame is skipped and counted in `skipped`, never fatal;
- an error, answered in place of the stream (the HTTP status then equals the vendor's code) or sent inside it,
  raises the error tree's exception (`live_frames.error_of`): `StreamNotAvailable` (an `AuthError`) when the plan,
  the gateway or the meters cannot stream, which should stop streaming for that source and nothing else.

An application whose plan setting is Watt is refused before any call: Watt has no streaming.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx

from core.providers.answers import excerpt, is_html
from core.providers.base import BadResponse, ProviderError
from core.providers.enphase.client import EnphaseClient
from core.providers.enphase.live_frames import (
    LiveError,
    LiveFrame,
    MalformedFrame,
    StreamNotAvailable,
    error_of,
    parse_event,
    plan_refusal,
)
from core.providers.enphase.parse import error_for
from core.providers.enphase.spec import VENDOR

log = logging.getLogger(__name__)
MIN_DURATION_S, MAX_DURATION_S, DEFAULT_DURATION_S = 30, 300, 30  # the `duration` header's documented range
PLANS_WITHOUT_STREAMING = frozenset({"watt"})


class LiveStream:
    """One system's live stream, opened once per `frames()` call; one reader thread at a time."""

    def __init__(self, client: EnphaseClient, *, duration_s: int = DEFAULT_DURATION_S) -> None:
        if isinstance(duration_s, bool) or not isinstance(duration_s, int):
            raise ValueError("duration_s must be a whole number of seconds")
        if not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
            raise ValueError(f"duration_s must be {MIN_DURATION_S} to {MAX_DURATION_S} seconds, got {duration_s}")
        self.client = client
        self.duration_s = duration_s
        self.received = 0  # frames read, over every stream opened here
        self.skipped = 0  # events that were not readable frames
        self.closed_at: datetime | None = None  # when the last stream opened here ended (`StreamMinutes.ended`)
        self._stop = threading.Event()

    def stop(self) -> None:
        """Close a running `frames()` at its next event, and make every later `frames()` call return at once (from
        any thread)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def frames(self, now: datetime | None = None) -> Iterator[LiveFrame]:
        """Open the stream and yield its frames (see the module docstring). `now` (default: the clock) is for the
        quota bucket and the token's expiry."""
        now = now or datetime.now(UTC)
        client = self.client
        if client.plan in PLANS_WITHOUT_STREAMING:
            raise StreamNotAvailable(plan_refusal(client.plan))
        if self.stopped:
            return
        headers = {"duration": str(self.duration_s), "Accept": "text/event-stream"}
        self.closed_at = None
        try:
            yield from self._read(now, headers)
        finally:
            self.closed_at = datetime.now(UTC)

    def _read(self, now: datetime, headers: dict[str, str]) -> Iterator[LiveFrame]:
        client = self.client
        with client.stream(f"systems/{client.system_id}/live_data", headers, now) as response:
            if response.status_code != 200 or "event-stream" not in response.headers.get("content-type", ""):
                response.read()
                raise self._refusal(response, now)
            for payload in _events(response):
                try:
                    event = parse_event(payload)
                except MalformedFrame as exc:
                    self.skipped += 1
                    log.debug(
                        "skipped an unreadable live frame (%s): %s", exc, excerpt(client.scrubbed(payload, response))
                    )
                    continue
                if isinstance(event, LiveError):
                    raise error_of(event, system_id=client.system_id, plan=client.plan, now=now)
                self.received += 1
                yield event
                if self.stopped:
                    return

    def _refusal(self, response: httpx.Response, now: datetime) -> ProviderError:
        """An answer that is not a running stream (its body read): the error frame it carries, else what its status
        means for any v4 call; a 200 of something else is a `BadResponse`."""
        client = self.client
        text = client.scrubbed(response.text, response)
        for payload in [*_events_of_text(text), text]:  # as events, or one JSON body
            event = _parsed_or_none(payload)
            if isinstance(event, LiveError):
                return error_of(event, system_id=client.system_id, plan=client.plan, now=now)
        if response.status_code != 200:
            return error_for(response.status_code, text, system_id=client.system_id, now=now)
        if is_html(response):
            return BadResponse(
                f"{VENDOR} answered the live stream with an HTML page (maintenance or a proxy error).",
                excerpt=excerpt(text),
            )
        return BadResponse(
            f"{VENDOR} answered the live stream with something other than events.", excerpt=excerpt(text)
        )


def _parsed_or_none(payload: str) -> LiveFrame | LiveError | None:
    try:
        return parse_event(payload)
    except MalformedFrame:
        return None


def _events(response: httpx.Response) -> Iterator[str]:
    """The data of each server-sent event as it arrives (the `data:` lines of an event joined by newlines).

    Lenient on purpose: a line that is a bare JSON object is taken as an event of its own, in case the stream sends
    frames without the `data:` field name; comments, `event:`, `id:` and `retry:` lines are ignored."""
    data: list[str] = []
    for line in response.iter_lines():
        event = _line(line, data)
        if event is not None:
            yield event
    if data:  # the server closed without the final blank line
        yield "\n".join(data)


def _events_of_text(text: str) -> list[str]:
    data: list[str] = []
    events = [event for line in text.splitlines() if (event := _line(line, data)) is not None]
    return [*events, "\n".join(data)] if data else events


def _line(line: str, data: list[str]) -> str | None:
    """Feed one line; returns an event's data when the line completes one (`data` is the event being read)."""
    if not line.strip():
        if not data:
            return None
        event = "\n".join(data)
        data.clear()
        return event
    if line.startswith("data:"):
        data.append(line[5:].removeprefix(" "))
        return None
    if line.lstrip().startswith("{") and not data:
        return line.strip()
    return None  # comments (":"), event:, id:, retry:
