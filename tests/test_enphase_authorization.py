"""Enphase from the app's side: authorization round trip, encrypted tokens, and "re-authorise" when the grant dies.

Runs against the fake Enphase server over loopback, through the same code the page calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from core.catalog import catalog as cat
from core.catalog import connections, enphase_auth
from core.catalog.connections import draft_from_source
from core.config import Settings
from core.models import ConnectionStatus
from core.providers.base import NeedsReauthorization, ProviderError
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.store.crypto import SecretBox, generate_key
from core.store.oauth_tokens import StoredTokens
from core.store.store import Store
from tests.crafting import saved_enphase_source
from tests.fakes import enphase
from tests.fakes.server import serve


@pytest.fixture
def fake() -> Iterator[tuple[enphase.FakeState, Settings]]:
    state = enphase.FakeState()
    with serve(enphase.create_app(state)) as url:
        yield state, Settings(enphase_base_url=f"{url}/api/v4", enphase_auth_url=f"{url}/oauth")


@pytest.fixture
def source(store: Store, box: SecretBox) -> cat.Source:
    return saved_enphase_source(store, box)


def check_connection(
    store: Store, box: SecretBox, source: cat.Source, providers: ProviderContext
) -> connections.TestOutcome:
    site = cat.load_catalog(store).site_of_source(source.id)
    assert site is not None
    return connections.test_connection(store, box, site.id, draft_from_source(source), datetime.now(UTC), providers)


def context_for(store: Store, box: SecretBox, settings: Settings) -> ProviderContext:
    return ProviderContext(settings, QuotaLedger(), lambda source_id: StoredTokens(store, box, source_id))


def test_authorization_round_trip_then_reauthorise_when_the_grant_dies(
    store: Store, box: SecretBox, source: cat.Source, fake: tuple[enphase.FakeState, Settings]
) -> None:
    state, settings = fake
    context = context_for(store, box, settings)
    before = check_connection(store, box, source, context)
    assert before.status is ConnectionStatus.REAUTHORIZE and "Authorize with Enphase" in before.message

    # The page's link carries an encrypted state naming the source; Enphase returns it with a one-time code.
    url = enphase_auth.start_url(settings, box, source.id, enphase.SANDBOX_CLIENT_ID)
    assert url.startswith(settings.enphase_auth_url + "/authorize?") and "state=" in url
    returned_state = parse_qs(urlsplit(url).query)["state"][0]
    source_id = enphase_auth.source_of_state(box, returned_state)
    code = state.issue_code(enphase_auth.redirect_uri(settings))
    assert enphase_auth.complete(store, box, settings, source_id, code, datetime.now(UTC)) == "Enphase Roof"
    tokens = StoredTokens(store, box, source.id).load()
    assert tokens is not None

    connected = check_connection(store, box, source, context)
    assert connected.status is ConnectionStatus.CONNECTED, connected.message

    # Stored only encrypted: neither token is in the database file.
    with store.connect() as con:
        con.execute("CHECKPOINT")
    raw = store.path.read_bytes()
    assert tokens.access_token.get_secret_value().encode() not in raw
    assert tokens.refresh_token.get_secret_value().encode() not in raw

    # A week later both tokens are dead: the source asks for a new authorization instead of failing vaguely.
    state.clock_offset = timedelta(days=8)
    expired = StoredTokens(store, box, source.id)
    dead = expired.load()
    assert dead is not None
    expired.save(
        type(dead)(
            access_token=dead.access_token,
            refresh_token=dead.refresh_token,
            access_expires_at=datetime.now(UTC) - timedelta(minutes=1),
            refresh_expires_at=dead.refresh_expires_at,
        )
    )
    after = check_connection(store, box, source, context_for(store, box, settings))
    assert after.status is ConnectionStatus.REAUTHORIZE
    assert "authorise" in after.message.lower()


def test_a_forged_or_foreign_state_is_refused(box: SecretBox) -> None:
    with pytest.raises(NeedsReauthorization):
        enphase_auth.source_of_state(box, "not-a-state")
    other = SecretBox([generate_key()])
    with pytest.raises(NeedsReauthorization):
        enphase_auth.source_of_state(box, other.encrypt('{"source_id": 1}'))


def test_a_pasted_code_is_exchanged_with_enphases_default_redirect(
    store: Store, box: SecretBox, source: cat.Source, fake: tuple[enphase.FakeState, Settings]
) -> None:
    """ "Get a code from Enphase" names no redirect, so Enphase shows the code; its exchange must name Enphase's
    default redirect, as the consent did (the fake refuses any other, as Enphase does)."""
    state, settings = fake
    url = enphase_auth.paste_url(settings, enphase.SANDBOX_CLIENT_ID)
    query = parse_qs(urlsplit(url).query)
    assert "redirect_uri" not in query and query["client_id"] == [enphase.SANDBOX_CLIENT_ID]

    refused = state.issue_code(None)
    with pytest.raises(ProviderError, match=r"[Rr]edirect|rejected|invalid"):
        enphase_auth.complete(store, box, settings, source.id, refused, datetime.now(UTC))  # as if it came back here
    assert StoredTokens(store, box, source.id).load() is None

    code = state.issue_code(None)
    assert (
        enphase_auth.complete(store, box, settings, source.id, code, datetime.now(UTC), pasted=True) == "Enphase Roof"
    )
    assert StoredTokens(store, box, source.id).load() is not None
