"""What every vendor client does with an answer, done once: recognise a web page, decode JSON, cut an excerpt, scrub.

The vendor modules only choose their words; the handling lives here, so a fix reaches SolarEdge V2, SolarEdge V1
and Enphase alike:

- `decode_json`: a 2xx answer's JSON, or `BadResponse` (with an excerpt) when it is a web page (a proxy, a
  maintenance page) or malformed. The vendor supplies the two messages.
- `scrubbed_text`: the text of a non-2xx answer, scrubbed, for the vendor's own status mapping to read.
- `excerpt`: at most `EXCERPT_CHARS` characters of a body on one line, scrubbed, for `BadResponse.excerpt` (shown
  on the page and stored with the error).
- `scrub`: removes from a text the literal credentials sent with the request that got the answer (the funnel
  knows them: `core.providers.http.request_secrets`), any extra secret the caller names (an OAuth client secret
  that only travelled inside a Basic header), credential query parameters and Authorization values in URLs
  (`redact`), and token fields of JSON bodies (`"access_token": "..."`).

Where the three vendor copies this replaces differed, the strictest behaviour won: literal secrets are blanked
before the patterns run (a pattern that rewrites part of a secret would stop the literal from matching the rest);
the whole text is scrubbed before it is cut (a cut through a secret would leave a piece no literal matches); the
JSON token fields (once Enphase's only) are scrubbed for every vendor; and excerpts are on one line (once V2's only).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import httpx

from core.providers.base import BadResponse
from core.providers.http import REDACTED, blank, redact, request_secrets

EXCERPT_CHARS = 200  # what a message or a stored error keeps of a vendor's body

# Token-carrying fields of JSON bodies: OAuth token answers, and servers that echo a rejected code or key.
_JSON_SECRET = re.compile(r'(?i)("(?:access_token|refresh_token|id_token|code|key)"\s*:\s*")[^"]*(")')


def secrets_of(response: httpx.Response, extra: Iterable[str] = ()) -> list[str]:
    """The literal credentials sent with the request that got `response`, plus `extra`, longest first."""
    try:
        sent = request_secrets(response.request)
    except RuntimeError:  # a response built by hand has no request: only the named secrets are known
        sent = []
    return sorted({*sent, *(s for s in extra if s)}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the given literal secrets, credential query parameters, Authorization values or JSON tokens."""
    text = blank(text, sorted({s for s in secrets if s}, key=len, reverse=True))
    return _JSON_SECRET.sub(r"\1" + REDACTED + r"\2", redact(text))


def excerpt(body: Any, secrets: Iterable[str] = ()) -> str:
    """A short piece of a body (text, or JSON already decoded) on one line, scrubbed, at most `EXCERPT_CHARS`."""
    if isinstance(body, str):
        text = body
    else:
        try:
            text = json.dumps(body, default=str)
        except (TypeError, ValueError):  # a circular structure: its repr is still worth a look
            text = repr(body)
    # Scrubbed before and after joining the lines: literals match the text as sent, patterns also match across
    # what was a line break.
    return scrub(" ".join(scrub(text, secrets).split()))[:EXCERPT_CHARS]


def is_html(response: httpx.Response) -> bool:
    """A web page rather than data: an HTML content type, or a body that opens with a tag."""
    return "html" in response.headers.get("content-type", "").lower() or response.text.lstrip()[:1] == "<"


def decode_json(response: httpx.Response, *, html: str, malformed: str, extra_secrets: Iterable[str] = ()) -> Any:
    """The JSON of an answer, else `BadResponse(html)` for a web page or `BadResponse(malformed)` for anything else.

    The text is decoded with the charset the answer declares (httpx's `text`), the same text the checks and the
    excerpt look at.
    """
    text = response.text
    if is_html(response):
        raise BadResponse(html, excerpt=excerpt(text, secrets_of(response, extra_secrets)))
    try:
        return json.loads(text)
    except ValueError:
        raise BadResponse(malformed, excerpt=excerpt(text, secrets_of(response, extra_secrets))) from None


def scrubbed_text(response: httpx.Response, extra_secrets: Iterable[str] = ()) -> str:
    """A (non-2xx) answer's whole text, scrubbed: what a vendor's status mapping may read and quote."""
    return scrub(response.text, secrets_of(response, extra_secrets))


def json_or_none(text: str) -> Any:
    """Decoded JSON, or None when `text` is not JSON (error bodies may be anything)."""
    try:
        return json.loads(text)
    except ValueError:
        return None
