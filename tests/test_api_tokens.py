"""Personal API tokens (core/catalog/api_tokens.py) against a real DuckDB file: who may make, list and revoke which,
and what a presented token acts as."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.actors import COLLECTOR, LOCAL_USER, SIGNED_OUT, Actor, ActorKind, Forbidden, Role, acting_as
from core.catalog import api_tokens, users
from core.catalog.api_tokens import TokenRefused
from core.catalog.users import RoleMapping
from core.config import Settings
from core.store.store import Store
from tests.processes import cli

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
MAPPING = RoleMapping(claim="", values={}, default=Role.VIEWER)
SETTINGS = Settings.model_construct()


def person(store: Store, subject: str) -> Actor:
    return users.sign_in(store, {"sub": subject, "email": f"{subject}@example.org"}, MAPPING, NOW)


def test_a_user_makes_lists_and_revokes_their_own_tokens_only(store: Store) -> None:
    ada, vic = person(store, "ada"), person(store, "vic")  # the first is an admin, the next a viewer
    with acting_as(vic):
        made = api_tokens.issue(store, "  my   script ", NOW, expires_in_days=90)
        assert made.token.startswith("dca_") and made.info.hint == made.token[-4:]
        assert (made.info.name, made.info.owner, made.info.expires_at) == (
            "my script",
            "vic@example.org",
            NOW + timedelta(days=90),
        )
        assert [t.id for t in api_tokens.list_tokens(store)] == [made.info.id]
        with pytest.raises(Forbidden):
            api_tokens.list_tokens(store, everyone=True)
    with acting_as(ada):
        admins = api_tokens.issue(store, "ops", NOW, expires_in_days=None)
        assert {t.owner for t in api_tokens.list_tokens(store, everyone=True)} == {"vic@example.org", "ada@example.org"}
    with acting_as(vic), pytest.raises(Forbidden):
        api_tokens.revoke(store, admins.info.id, NOW)
    with acting_as(ada):
        assert api_tokens.revoke(store, made.info.id, NOW).state(NOW) == "revoked"  # an admin may revoke anyone's
    assert api_tokens.verify(store, made.token, NOW, SETTINGS) is None
    with store.connect(read_only=True) as con:
        stored = con.sql("SELECT * FROM api_tokens").fetchall()
        logged = con.sql("SELECT * FROM audit_log").fetchall()
    assert made.token not in str(stored) and admins.token not in str(stored) + str(logged)


def test_nobody_but_a_signed_in_person_or_the_local_user_owns_tokens(store: Store) -> None:
    for actor in (SIGNED_OUT, COLLECTOR, Actor(ActorKind.TOKEN, "ada@example.org", Role.ADMIN, "3")):
        with acting_as(actor), pytest.raises(TokenRefused):
            api_tokens.issue(store, "x", NOW, expires_in_days=30)
    with acting_as(LOCAL_USER):
        local = api_tokens.issue(store, "x", NOW, expires_in_days=30)
    assert local.info.owner_subject == "local" and local.info.owner == "local user"
    with acting_as(LOCAL_USER), pytest.raises(TokenRefused, match="Token Name must not be empty"):
        api_tokens.issue(store, " ", NOW, expires_in_days=30)


def test_a_presented_token_acts_with_its_owners_role_until_it_expires(store: Store) -> None:
    person(store, "ada")
    person(store, "ed")
    users.set_role(store, "ed", Role.EDITOR, NOW, mapping=MAPPING)
    made = api_tokens.issue(store, "t", NOW, expires_in_days=1, owner="ed")
    verified = api_tokens.verify(store, made.token, NOW + timedelta(hours=23), SETTINGS)
    assert verified is not None and verified.actor == Actor(
        ActorKind.TOKEN, "ed@example.org", Role.EDITOR, str(made.info.id)
    )
    assert verified.actor.label == "ed@example.org (API token)"
    assert api_tokens.verify(store, made.token, NOW + timedelta(days=1), SETTINGS) is None
    assert api_tokens.verify(store, made.token + "x", NOW, SETTINGS) is None
    with pytest.raises(TokenRefused, match="No user 'nobody'"):
        api_tokens.issue(store, "t", NOW, expires_in_days=1, owner="nobody")


def test_the_command_line_makes_lists_and_revokes_tokens(env: dict[str, str]) -> None:
    assert cli(env, "init").returncode == 0
    made = cli(env, "api-token", "create", "--name", "nightly", "--expires-days", "0")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("dca_") and "shown once" in made.stderr and "/api/v1" in made.stderr
    listed = cli(env, "api-token", "list")
    assert listed.stdout.split("\t")[:5] == ["1", "nightly", f"...{token[-4:]}", "local user", "active"]
    assert token not in listed.stdout
    assert "revoked" in cli(env, "api-token", "revoke", "1").stdout
    assert "\trevoked\t" in cli(env, "api-token", "list").stdout
    refused = cli(env, "api-token", "create", "--name", "x", "--owner", "nobody")
    assert refused.returncode == 1 and "No user 'nobody'" in refused.stderr
