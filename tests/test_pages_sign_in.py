"""The dashboard's sign-in gate through Streamlit's AppTest (`ui/identity.py`), with the provider's answer given as
`st.user` holds it (the ID token's claims): what a visitor sees before, after and instead of signing in, on a real
temporary database. tests/e2e/test_sign_in.py does the same against a real OpenID provider in Chromium."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

from core.actors import Actor, ActorKind, Role, acting_as
from core.catalog import users
from core.catalog.users import RoleMapping
from core.config import load_settings
from core.runtime import open_runtime
from core.store.store import Store
from tests.markdown_text import shown
from ui.identity import RECHECK_S, SignedIn

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SIGN_IN = {
    "DATACONN_AUTH_METADATA_URL": "https://login.example.com/.well-known/openid-configuration",
    "DATACONN_AUTH_CLIENT_ID": "energy-dashboard",
    "DATACONN_AUTH_CLIENT_SECRET": "s3cret",
    "DATACONN_AUTH_ROLE_CLAIM": "groups",
    "DATACONN_AUTH_ADMIN_VALUES": "energy-admins",
    "DATACONN_AUTH_EDITOR_VALUES": "energy-editors",
}
STATE_KEY = "_dataconn_signed_in"


@pytest.fixture
def signed_in_env(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A seeded installation (the demo site) with sign-in configured."""
    for name, value in SIGN_IN.items():
        monkeypatch.setenv(name, value)
    return app_env


def store() -> Store:
    return open_runtime(load_settings(), prepare=False).store


def claims(name: str, groups: list[str], *, expires_in_s: float = 3600) -> dict[str, Any]:
    """What Streamlit puts in st.user after a sign-in: the ID token's claims and its own keys."""
    now = int(time.time())
    return {
        "is_logged_in": True,
        "provider": "default",
        "iss": "https://login.example.com",
        "aud": "energy-dashboard",
        "sub": f"sub-{name}",
        "name": name.title(),
        "email": f"{name}@example.com",
        "groups": groups,
        "iat": now,
        "exp": int(now + expires_in_s),
    }


def opened(user: dict[str, Any]) -> AppTest:
    """A new session of `user` on the dashboard's first page. Only a session's first run goes through app.py in
    AppTest (a rerun or another page runs the page's file alone); the browser tests open every page."""
    app = AppTest.from_file(APP, default_timeout=60)
    app.user = user
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def texts(app: AppTest) -> str:
    """Everything written on the page, main area and sidebar."""
    parts = [e.value for e in (*app.title, *app.markdown, *app.caption, *app.info, *app.warning, *app.error)]
    parts += [e.label for e in (*app.button, *app.expander, *app.text_input, *app.selectbox)]
    return " | ".join(shown(str(p)) for p in parts)


def sidebar_text(app: AppTest) -> str:
    return " | ".join(shown(c.value).replace("**", "").replace("`", "") for c in app.sidebar.caption)


def test_a_visitor_who_is_not_signed_in_sees_only_the_sign_in_screen(signed_in_env: Path) -> None:
    app = opened({"is_logged_in": False})
    assert [t.value for t in app.title] == ["Energy Data Connections"]
    assert [b.label for b in app.button] == ["Sign in"]
    page_text = texts(app)
    assert "Demo Rooftop" not in page_text and "Database" not in page_text
    assert len(app.sidebar) == 0
    assert not (signed_in_env / "app.duckdb").exists()  # nothing was read, nobody recorded


def test_a_signed_in_user_sees_the_pages_with_their_name_and_role_in_the_sidebar(signed_in_env: Path) -> None:
    app = opened(claims("ada", ["energy-admins"]))
    assert app.title[0].value == "Control Room"
    assert any("Demo Rooftop" in e.label for e in app.expander)
    assert "Signed in as Ada (ada@example.com) · admin · until" in sidebar_text(app)
    assert [b.label for b in app.sidebar.button] == ["Sign out"]
    [ada] = users.list_users(store())
    assert (ada.subject, ada.email, ada.role, ada.role_from) == ("sub-ada", "ada@example.com", Role.ADMIN, "claim")


def gate_script() -> None:
    """The router's use of ui.identity, alone: AppTest reruns a script like this as a whole (a rerun of app.py runs
    only the page's file, as a legacy multipage app), so a session's later runs can be looked at."""
    import streamlit as st

    from core.config import load_settings
    from ui.identity import require_sign_in, session_actor, show_identity

    def home() -> None:
        st.write("home page")

    require_sign_in([st.Page(home, title="Home")])
    with st.sidebar:
        show_identity()
    actor = session_actor(load_settings())
    st.write(f"acting as {actor.name}, {actor.role.value}")


def test_the_user_is_looked_up_once_per_session_and_their_role_again_every_few_minutes(signed_in_env: Path) -> None:
    opened(claims("ada", ["energy-admins"]))  # the first user; an admin, who will give roles
    app = AppTest.from_function(gate_script, default_timeout=60)
    app.user = claims("olga", [])  # no mapped group: the default role, viewer
    app.run()
    assert "acting as olga@example.com, viewer" in texts(app)
    assert "Signed in as Olga (olga@example.com) · viewer" in sidebar_text(app)
    first_seen = {u.subject: u.last_seen_at for u in users.list_users(store())}["sub-olga"]

    ada = Actor(ActorKind.USER, "ada@example.com", Role.ADMIN, "sub-ada")
    with acting_as(ada):  # on the Users page
        users.set_role(
            store(), "sub-olga", Role.EDITOR, datetime.now(UTC), mapping=RoleMapping.from_settings(load_settings())
        )

    app.run()  # the same session: the role as looked up at sign-in, until RECHECK_S has passed
    assert "acting as olga@example.com, viewer" in texts(app)
    assert {u.subject: u.last_seen_at for u in users.list_users(store())}["sub-olga"] == first_seen

    record = app.session_state[STATE_KEY]
    assert isinstance(record, SignedIn)
    app.session_state[STATE_KEY] = dataclasses.replace(record, checked_at=record.checked_at - RECHECK_S)
    app.run()
    assert "acting as olga@example.com, editor" in texts(app)
    assert "Signed in as Olga (olga@example.com) · editor" in sidebar_text(app)
    assert {u.subject: u.last_seen_at for u in users.list_users(store())}["sub-olga"] > first_seen


def test_after_the_id_token_expires_the_user_must_sign_in_again(signed_in_env: Path) -> None:
    app = opened(claims("ada", ["energy-admins"], expires_in_s=-5))
    assert [t.value for t in app.title] == ["Energy Data Connections"]
    assert "Your sign-in ended at" in texts(app)
    assert [b.label for b in app.button] == ["Sign in again", "Sign out"]
    assert "Demo Rooftop" not in texts(app)
    assert len(app.sidebar) == 0


def test_a_user_without_a_role_is_told_so_and_can_sign_out(
    signed_in_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATACONN_AUTH_DEFAULT_ROLE", "none")
    opened(claims("ada", ["energy-admins"]))
    app = opened(claims("nora", ["marketing"]))
    assert "no role is given to you yet" in texts(app)
    assert "Demo Rooftop" not in texts(app)
    assert [b.label for b in app.button] == ["Sign out"]
    assert len(app.sidebar) == 0


def test_sign_in_configured_but_not_set_up_by_the_launcher_shows_nothing(signed_in_env: Path) -> None:
    app = opened({"email": "someone@example.com"})  # Streamlit without an [auth] section: no is_logged_in at all
    assert "started without it" in texts(app)
    assert "Demo Rooftop" not in texts(app)
    assert len(app.sidebar) == 0


@pytest.fixture
def served_address() -> Iterator[None]:
    """The dashboard serving 0.0.0.0, as Streamlit's option says in the process."""
    before = streamlit_config.get_option("server.address")
    streamlit_config.set_option("server.address", "0.0.0.0")
    try:
        yield
    finally:
        streamlit_config.set_option("server.address", before)


def test_an_unauthenticated_network_dashboard_warns_above_the_page(
    app_env: Path, monkeypatch: pytest.MonkeyPatch, served_address: None
) -> None:
    monkeypatch.setenv("DATACONN_ALLOW_UNAUTHENTICATED_NETWORK", "true")
    app = opened({})
    assert app.title[0].value == "Control Room"
    assert any("serves 0.0.0.0 without sign-in" in shown(w.value) for w in app.warning)


def test_without_sign_in_a_loopback_dashboard_shows_no_warning_and_no_identity(app_env: Path) -> None:
    app = opened({})
    assert app.title[0].value == "Control Room"
    assert not any("without sign-in" in shown(w.value) for w in app.warning)
    assert [b.label for b in app.sidebar.button] == []


def test_a_viewer_sees_what_they_may_not_do_disabled_with_the_reason(signed_in_env: Path) -> None:
    """Disabled controls are a courtesy (core refuses the write itself: tests/test_access.py, and the API's per-role
    tests): AppTest, like a browser, cannot press them."""
    opened(claims("ada", ["energy-admins"]))  # the installation's first user is an admin whatever her groups
    app = opened(claims("vera", []))  # no mapped group: the default role, viewer
    assert next(b for b in app.button if b.label == "Create Site").disabled
    assert all(b.disabled for b in app.button if b.label in ("Save Site", "Delete Site", "Add Meter", "Save"))
    assert "Changing sites and meters needs the editor role; you are signed in as vera@example.com (viewer)" in texts(
        app
    )
