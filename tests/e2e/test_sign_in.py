"""Signing in, in real Chromium, against a real OpenID Connect provider (`oidc-provider` on loopback,
tests/oidc_provider.py) and the real dashboard process (`python -m ui.serve`) configured for it.

People sign in by typing their username and password in the provider's own form (fill, then Enter). The installation
is initialised with the demo site before anyone signs in, so "no data" means something: its name, its figures and the
sidebar's pages must not reach a browser that is not signed in, on any page's address.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from core.store.store import Store
from tests.dashboard import dashboard_env, running_dashboard
from tests.fakes.server import free_port
from tests.oidc_provider import USERS, LoopbackProvider, password, running_provider
from tests.processes import cli, read_log

pytestmark = pytest.mark.browser

TIMEOUT_MS = 30_000  # a sign-in crosses two servers and starts a new Streamlit session
PAGE_PATHS = [
    "/",
    "/data-connections",
    "/live",
    "/history",
    "/kpis",
    "/alerts",
    "/api-health",
    "/import-readings",
    "/import-sites",
    "/api-tokens",
    "/users",
    "/audit",
]
DEMO_SITE = "Demo Rooftop"
DATA_ELEMENTS = ["stPlotlyChart", "stMetric", "stDataFrame", "stExpander", "stTable", "stSidebar"]

expect.set_options(timeout=TIMEOUT_MS)


@dataclass(frozen=True)
class Installation:
    base_url: str
    db: Path
    provider: LoopbackProvider


@contextmanager
def installation(tmp_path: Path, *, id_token_ttl_s: int = 3600, **settings: str) -> Iterator[Installation]:
    """The demo installation (initialised, nobody signed in yet), its dashboard signing in through a fresh provider."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    provider_log, dashboard_log = tmp_path / "provider.log", tmp_path / "dashboard.log"
    try:
        with running_provider([f"{base_url}/oauth2callback"], provider_log, id_token_ttl_s=id_token_ttl_s) as provider:
            env = dashboard_env(tmp_path, base_url, seed_demo=True, **provider.settings(**settings))
            done = cli(env, "init")
            assert done.returncode == 0, done.stderr
            with running_dashboard(env, port, dashboard_log):
                yield Installation(base_url, tmp_path / "dataconn.duckdb", provider)
    finally:  # shown with a failed test only (pytest keeps a passing test's output to itself)
        print(f"\n--- provider log ---\n{read_log(provider_log)}\n--- dashboard log ---\n{read_log(dashboard_log)}")


def _idle(page: Page) -> None:
    app = page.get_by_test_id("stApp")
    expect(app).to_have_attribute("data-test-connection-state", "CONNECTED")
    expect(app).to_have_attribute("data-test-script-state", "notRunning")


def _shows_no_data(page: Page, path: str) -> None:
    """The sign-in screen alone: the product's name and a Sign in button, nothing of the installation."""
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Energy Data Connections")).to_be_visible()
    _idle(page)
    for test_id in DATA_ELEMENTS:
        expect(page.get_by_test_id(test_id), f"{test_id} on {path}").to_have_count(0)
    expect(page.get_by_text(DEMO_SITE), f"the site's name on {path}").to_have_count(0)
    for link in ("Control Room", "Live", "History"):
        expect(page.get_by_role("link", name=link), f"the {link} link on {path}").to_have_count(0)


def _no_page_shows_data(page: Page, base_url: str) -> None:
    for path in PAGE_PATHS:
        page.goto(base_url + path)
        _shows_no_data(page, path)


def _sign_in(page: Page, base_url: str, user: str) -> None:
    """From the sign-in screen through the provider's form, typed as a person types it."""
    page.goto(base_url + "/")
    page.get_by_role("button", name="Sign in", exact=True).click()
    _type_credentials(page, user)


def _type_credentials(page: Page, user: str) -> None:
    username = page.get_by_label("Username")
    expect(username).to_be_visible()
    username.fill(user)
    page.get_by_label("Password").fill(password(user))
    page.get_by_label("Password").press("Enter")


def _signed_in_as(page: Page, user: str, role: str) -> None:
    who = f"Signed in as {USERS[user]['name']} ({USERS[user]['email']}) · {role}"
    expect(page.get_by_test_id("stSidebar")).to_contain_text(who)
    expect(page.get_by_role("heading", name="Control Room", exact=True)).to_be_visible()
    expect(page.get_by_text(DEMO_SITE).first).to_be_visible()  # the installation's data, now
    _idle(page)


def _sign_out(page: Page) -> None:
    page.get_by_test_id("stSidebar").get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    expect(page.get_by_test_id("stSidebar")).to_have_count(0)


def _first_sign_ins(db: Path) -> dict[str, str]:
    """The audit log's "first sign-in" rows: who, and the summary."""
    with Store(db, lock_timeout_s=10).connect(read_only=True) as con:
        rows = con.execute(
            "SELECT actor, summary FROM audit_log WHERE action = 'sign in' AND object_type = 'user' ORDER BY id"
        ).fetchall()
    return {str(actor): str(summary) for actor, summary in rows}


def test_people_sign_in_with_their_role_and_sign_out_and_signed_out_browsers_see_nothing(
    page: Page, tmp_path: Path
) -> None:
    with installation(tmp_path, DATACONN_AUTH_DEFAULT_ROLE="none") as site:
        _no_page_shows_data(page, site.base_url)

        # Nora's groups map to no role and the default is none, but nobody has signed in yet: she is the first user,
        # so she becomes an admin (someone must be able to give roles).
        _sign_in(page, site.base_url, "nora")
        _signed_in_as(page, "nora", "admin")
        _sign_out(page)
        _no_page_shows_data(page, site.base_url)

        for user, role in (("ada", "admin"), ("ed", "editor"), ("vera", "viewer")):  # from the groups claim
            _sign_in(page, site.base_url, user)
            _signed_in_as(page, user, role)
            page.goto(site.base_url + "/live")  # a deep link, signed in
            expect(page.get_by_role("heading", name="Live", exact=True)).to_be_visible()
            _sign_out(page)

        _no_page_shows_data(page, site.base_url)
        assert _first_sign_ins(site.db) == {
            "nora@example.test": "first sign-in, role admin (first user)",
            "ada@example.test": "first sign-in, role admin (claim)",
            "ed@example.test": "first sign-in, role editor (claim)",
            "vera@example.test": "first sign-in, role viewer (claim)",
        }


def test_someone_without_a_role_is_told_so_sees_nothing_and_can_sign_out(page: Page, tmp_path: Path) -> None:
    with installation(tmp_path, DATACONN_AUTH_DEFAULT_ROLE="none") as site:
        _sign_in(page, site.base_url, "ada")
        _signed_in_as(page, "ada", "admin")
        _sign_out(page)

        _sign_in(page, site.base_url, "nora")
        expect(page.get_by_text("no role is given to you yet")).to_be_visible()
        expect(page.get_by_text("nora@example.test", exact=False)).to_be_visible()
        _idle(page)
        for path in ("/", "/live", "/data-connections"):
            page.goto(site.base_url + path)
            expect(page.get_by_text("no role is given to you yet")).to_be_visible()
            _idle(page)
            for test_id in DATA_ELEMENTS:
                expect(page.get_by_test_id(test_id)).to_have_count(0)
            expect(page.get_by_text(DEMO_SITE)).to_have_count(0)

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
        assert set(_first_sign_ins(site.db)) == {"ada@example.test", "nora@example.test"}


ID_TOKEN_TTL_S = 15


def test_the_session_ends_when_the_provider_said_and_signing_in_again_goes_on(page: Page, tmp_path: Path) -> None:
    with installation(tmp_path, id_token_ttl_s=ID_TOKEN_TTL_S) as site:
        _sign_in(page, site.base_url, "vera")
        signed_in_at = time.monotonic()
        _signed_in_as(page, "vera", "viewer")

        # Live's panel reruns by itself, past the router's gate: at the expiry it hands over to the gate, with no
        # input, rather than go on showing figures.
        page.goto(site.base_url + "/live")
        expect(page.get_by_role("heading", name="Live", exact=True)).to_be_visible()
        expect(page.get_by_text("Your sign-in ended at")).to_be_visible(timeout=(ID_TOKEN_TTL_S + 15) * 1000)
        expect(page.get_by_text(DEMO_SITE)).to_have_count(0)

        time.sleep(max(0.0, ID_TOKEN_TTL_S + 1 - (time.monotonic() - signed_in_at)))
        page.goto(site.base_url + "/history")
        expect(page.get_by_text("Your sign-in ended at")).to_be_visible()
        _idle(page)
        for test_id in DATA_ELEMENTS:
            expect(page.get_by_test_id(test_id)).to_have_count(0)
        expect(page.get_by_text(DEMO_SITE)).to_have_count(0)

        page.get_by_role("button", name="Sign in again").click()
        _type_credentials(page, "vera")  # the provider asks again (prompt=login)
        _signed_in_as(page, "vera", "viewer")


def test_a_dashboard_serving_a_network_without_sign_in_says_so_on_every_page(page: Page, tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = dashboard_env(tmp_path, base_url, seed_demo=True, DATACONN_ALLOW_UNAUTHENTICATED_NETWORK="true")
    with running_dashboard(env, port, tmp_path / "dashboard.log", address="0.0.0.0"):  # reached on 127.0.0.1
        for path in PAGE_PATHS:
            page.goto(base_url + path)
            warning = page.get_by_test_id("stAlert").filter(has_text="without sign-in")
            expect(warning, path).to_contain_text("everyone who can reach it acts as an admin")
            _idle(page)


def _audit(db: Path) -> list[tuple[str, str, str, str]]:
    """Everything the log holds beyond sign-ins and the installation's own seed: (who, action, object, change)."""
    with Store(db, lock_timeout_s=10).connect(read_only=True) as con:
        rows = con.execute(
            "SELECT actor, action, object_type, summary FROM audit_log"
            " WHERE action <> 'sign in' AND actor <> 'operator' ORDER BY id"
        ).fetchall()
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def test_each_role_does_what_it_may_is_refused_the_rest_and_the_audit_log_says_who_did_what(
    page: Page, tmp_path: Path
) -> None:
    with installation(tmp_path) as site:
        _sign_in(page, site.base_url, "ada")  # the first user; an admin by her groups anyway
        _signed_in_as(page, "ada", "admin")
        _sign_out(page)

        # A viewer: every control that changes something is disabled, and the page says which role it needs.
        _sign_in(page, site.base_url, "vera")
        _signed_in_as(page, "vera", "viewer")
        page.goto(site.base_url + "/data-connections")
        expect(page.get_by_role("button", name="Save All Connections")).to_be_disabled()
        expect(page.get_by_text("Changing data sources needs the editor role")).to_be_visible()
        page.goto(site.base_url + "/audit")
        expect(page.get_by_text("Only an admin can read the audit log")).to_be_visible()
        expect(page.get_by_test_id("stDataFrame")).to_have_count(0)
        _sign_out(page)

        # An editor renames the demo site with the keyboard; deleting it is an admin's.
        _sign_in(page, site.base_url, "ed")
        _signed_in_as(page, "ed", "editor")
        box = page.get_by_test_id("stExpander").nth(1).get_by_label("Site Name")
        box.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("Demo Rooftop East")
        page.keyboard.press("Enter")  # submits the site's form
        expect(page.get_by_text("Demo Rooftop East").first).to_be_visible()
        expect(page.get_by_role("button", name="Delete Site")).to_be_disabled()
        _sign_out(page)

        # The admin reads who did it on the Audit page.
        _sign_in(page, site.base_url, "ada")
        page.goto(site.base_url + "/audit")
        expect(page.get_by_text("change(s), newest first")).to_be_visible()
        assert _audit(site.db) == [
            ("ed@example.test", "update", "site", "Site Name 'Demo Rooftop' -> 'Demo Rooftop East'")
        ]
