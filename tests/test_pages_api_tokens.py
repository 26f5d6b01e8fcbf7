"""The API Tokens page through AppTest on a real database (sign-in not configured: the local user, an admin)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.actors import Role
from core.catalog import api_tokens, users
from core.catalog.users import RoleMapping
from core.config import load_settings
from tests.crafting import app_store, open_page


def everything_shown(app: AppTest) -> str:
    """Every text the page shows: markdown, codes, captions, messages, the table's cells."""
    parts = [str(e.value) for kind in (app.markdown, app.code, app.caption, app.success, app.error) for e in kind]
    parts += [app.dataframe[0].value.to_csv()] if len(app.dataframe) else []
    return "\n".join(parts)


def test_a_token_is_shown_once_listed_by_its_hint_and_revoked(app_env: Path) -> None:
    app = open_page("pages/api_tokens.py")
    assert app.title[0].value == "API Tokens"
    assert "No tokens yet." in [c.value for c in app.caption]
    app.text_input(key="at_name").input("Nightly export")
    app.selectbox(key="at_expiry").set_value("30 days")
    app.button(key="FormSubmitter:at_create-Create token").click().run()
    assert not app.exception
    token = next(c.value for c in app.code if c.value.startswith("dca_"))
    base = "http://127.0.0.1:8502/api/v1"
    assert any(f"Bearer {token}" in c.value and f"{base}/meters" in c.value for c in app.code)
    assert any("Authorization: Bearer <token>" in m.value and base in m.value for m in app.markdown)
    table = app.dataframe[0].value
    assert list(table["Name"]) == ["Nightly export"] and list(table["Token"]) == [f"…{token[-4:]}"]
    assert list(table["State"]) == ["active"] and list(table["Last used"]) == ["never"]

    app.run()  # any later run: the token itself is gone from the page for good
    assert token not in everything_shown(app) and f"…{token[-4:]}" in everything_shown(app)
    verified = api_tokens.verify(app_store(), token, datetime.now(UTC), load_settings())
    assert verified is not None and verified.actor is not None and verified.actor.label == "local user (API token)"

    app.button(key="FormSubmitter:at_revoke-Revoke").click().run()
    assert not app.exception
    assert any("revoked" in s.value for s in app.success)
    assert app.dataframe[0].value["State"][0].startswith("revoked")
    assert api_tokens.verify(app_store(), token, datetime.now(UTC), load_settings()) is None
    with app_store().connect(read_only=True) as con:
        logged = con.sql("SELECT actor, action, object_type, summary, after::VARCHAR FROM audit_log"
                         " WHERE object_type = 'api token' ORDER BY id").fetchall()  # fmt: skip
    assert [row[:3] for row in logged] == [("local user", "create", "api token"), ("local user", "revoke", "api token")]
    assert token not in str(logged) and token[-4:] not in str(logged)


def test_an_admin_sees_and_revokes_everyones_tokens(app_env: Path) -> None:

    app = open_page("pages/api_tokens.py")
    store = app_store()
    now = datetime.now(UTC)
    users.sign_in(store, {"sub": "sub-ann", "email": "ann@example.org"}, RoleMapping("", {}, Role.VIEWER), now)
    theirs = api_tokens.issue(store, "Ann's script", now, expires_in_days=None, owner="sub-ann")
    app.run()
    assert "No tokens yet." in [c.value for c in app.caption]  # the local user's own: none
    app.toggle(key="at_everyone").set_value(True).run()
    table = app.dataframe[0].value
    assert list(table["Owner"]) == ["ann@example.org"] and list(table["Expires"]) == ["never"]
    app.button(key="FormSubmitter:at_revoke-Revoke").click().run()
    assert not app.exception
    assert api_tokens.verify(store, theirs.token, datetime.now(UTC), load_settings()) is None
