"""Completing Enphase's OAuth authorization for a saved source, from the page.

The owner leaves for Enphase's consent page and comes back in a NEW browser session, so the `state` parameter
itself carries which source asked: the source id, encrypted and timestamped with the app's key (a Fernet token),
so it cannot be forged or replayed after `STATE_MAX_AGE_S`. The code is exchanged at once and the tokens are
saved encrypted; the code itself is never stored.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime

from pydantic import SecretStr

from core.actors import Permission, require
from core.catalog import catalog as cat
from core.config import Settings
from core.models import Provider
from core.providers.base import NeedsReauthorization
from core.providers.enphase.oauth import authorize_url, default_redirect_uri, exchange_code
from core.store.audit_log import AuditEntry
from core.store.crypto import SecretBox, SecretsError
from core.store.oauth_tokens import StoredTokens
from core.store.secret_store import load_secrets
from core.store.store import Store

STATE_MAX_AGE_S = 30 * 60


def redirect_uri(settings: Settings) -> str:
    """The address to register in the Enphase developer portal."""
    return settings.public_url.rstrip("/") + "/data-connections"


def start_url(settings: Settings, box: SecretBox, source_id: int, client_id: str) -> str:
    state = box.encrypt(json.dumps({"source_id": source_id, "nonce": secrets.token_hex(8)}))
    return authorize_url(client_id, redirect_uri(settings), state, auth_url=settings.enphase_auth_url)


def paste_url(settings: Settings, client_id: str) -> str:
    """Consent without our redirect: Enphase shows the owner a code to paste on the page (`complete(pasted=True)`).
    For apps whose registered redirect is Enphase's default, or a dashboard Enphase cannot reach."""
    return authorize_url(client_id, None, None, auth_url=settings.enphase_auth_url)


def source_of_state(box: SecretBox, state: str) -> int:
    try:
        return int(json.loads(box.decrypt(state, max_age_s=STATE_MAX_AGE_S).get_secret_value())["source_id"])
    except (SecretsError, ValueError, KeyError, TypeError):
        raise NeedsReauthorization(
            "This authorization link is invalid or older than 30 minutes: start Authorize with Enphase again."
        ) from None


def complete(
    store: Store, box: SecretBox, settings: Settings, source_id: int, code: str, now: datetime, *, pasted: bool = False
) -> str:
    """Exchange `code` for tokens of `source_id` and save them; returns the source's name. Raises ProviderError.

    A `pasted` code came from Enphase's own page (`paste_url`): the exchange names Enphase's default redirect, as
    the consent did; otherwise the code came back to this dashboard (`start_url`)."""
    require(Permission.CREDENTIALS)  # before the code is spent
    source = cat.load_catalog(store).source(source_id)
    if source.api.api_provider is not Provider.ENPHASE or not source.api.client_id:
        raise NeedsReauthorization(f"{source.name} is not a saved Enphase source with a Client ID.")
    client_secret = load_secrets(store, box, source_id).get("client_secret")
    if client_secret is None:
        raise NeedsReauthorization(f"Save the Client Secret of {source.name} first, then authorise.")
    tokens = exchange_code(
        SecretStr(code),
        client_id=source.api.client_id,
        client_secret=client_secret,
        redirect_uri=default_redirect_uri(settings.enphase_auth_url) if pasted else redirect_uri(settings),
        now=now,
        auth_url=settings.enphase_auth_url,
        timeout_s=settings.http_timeout_s,
    )
    granted = AuditEntry("update", "credential", source_id, source.name, "Enphase authorization granted")
    StoredTokens(store, box, source_id).save(tokens, audit=granted)
    return source.name
