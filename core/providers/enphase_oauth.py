"""Enphase v4 OAuth 2.0: the authorization URL an analyst opens to grant access to a system.

The token exchange needs the Enphase client, which is not part of this version; the URL is pure string work.
"""

from __future__ import annotations

from urllib.parse import urlencode

DEFAULT_AUTH_URL = "https://api.enphaseenergy.com/oauth/authorize"


def authorize_url(client_id: str, redirect_uri: str, state: str, auth_url: str = DEFAULT_AUTH_URL) -> str:
    """The page Enphase shows to the system owner; it sends `?code=...&state=...` back to `redirect_uri`."""
    query = urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": state})
    return f"{auth_url}?{query}"
