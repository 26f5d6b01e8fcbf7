"""Who may reach the dashboard and who may frame it (core/serving.py): the decisions, on real settings."""

from __future__ import annotations

import pytest

from core.config import Settings
from core.serving import (
    frame_ancestor_problems,
    frame_headers,
    is_loopback,
    network_refusal,
    network_warning,
    redirect_url,
    serving_problems,
    sign_in_problems,
    sign_in_warnings,
)

SIGN_IN = {
    "auth_metadata_url": "https://login.example.com/realms/energy/.well-known/openid-configuration",
    "auth_client_id": "energy-dashboard",
    "auth_client_secret": "s3cret",
}


def settings(**values: object) -> Settings:
    return Settings.model_validate(values)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("unix:///run/dataconn.sock", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("dashboard.example.com", False),  # a name may resolve anywhere
        ("", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_a_network_address_without_sign_in_is_refused_with_what_to_set() -> None:
    refusal = network_refusal(settings(), "0.0.0.0")
    assert refusal is not None
    for name in ("DATACONN_AUTH_METADATA_URL", "DATACONN_AUTH_CLIENT_ID", "DATACONN_AUTH_CLIENT_SECRET"):
        assert name in refusal
    assert "DATACONN_ALLOW_UNAUTHENTICATED_NETWORK=true" in refusal
    assert "0.0.0.0" in refusal
    assert network_refusal(settings(), "127.0.0.1") is None
    assert network_refusal(settings(**SIGN_IN), "0.0.0.0") is None


def test_an_allowed_unauthenticated_network_is_served_with_a_warning() -> None:
    allowed = settings(allow_unauthenticated_network=True)
    assert network_refusal(allowed, "0.0.0.0") is None
    warning = network_warning(allowed, "0.0.0.0")
    assert warning is not None and "admin" in warning and "DATACONN_ALLOW_UNAUTHENTICATED_NETWORK" in warning
    assert network_warning(allowed, "127.0.0.1") is None  # this machine only: nothing to warn about
    assert network_warning(settings(**SIGN_IN, allow_unauthenticated_network=True), "0.0.0.0") is None
    assert network_warning(settings(), "0.0.0.0") is None  # refused, not warned about


def test_half_configured_sign_in_is_refused_naming_what_is_missing() -> None:
    problems = sign_in_problems(settings(auth_metadata_url=SIGN_IN["auth_metadata_url"], auth_client_id="x"))
    assert len(problems) == 1
    assert "DATACONN_AUTH_CLIENT_SECRET" in problems[0] and "half configured" in problems[0]
    # ... even on 127.0.0.1: the operator meant sign-in, and would get an open dashboard instead.
    assert serving_problems(settings(auth_client_secret="s3cret"), "127.0.0.1") != []
    assert sign_in_problems(settings()) == []
    assert sign_in_problems(settings(**SIGN_IN)) == []


def test_the_redirect_url_comes_from_the_public_url_unless_set() -> None:
    assert (
        redirect_url(settings(public_url="https://energy.example.com/")) == "https://energy.example.com/oauth2callback"
    )
    assert redirect_url(settings(auth_redirect_url="https://a.example.com/oauth2callback")) == (
        "https://a.example.com/oauth2callback"
    )
    wrong = settings(**SIGN_IN, auth_redirect_url="https://energy.example.com/callback")
    assert any("/oauth2callback" in p and "DATACONN_AUTH_REDIRECT_URL" in p for p in sign_in_problems(wrong))


def test_the_provider_must_be_reached_over_https_unless_it_is_on_this_machine() -> None:
    remote_http = settings(
        **{**SIGN_IN, "auth_metadata_url": "http://login.example.com/.well-known/openid-configuration"}
    )
    assert any("https" in p for p in sign_in_problems(remote_http))
    local_http = settings(**{**SIGN_IN, "auth_metadata_url": "http://127.0.0.1:8080/.well-known/openid-configuration"})
    assert sign_in_problems(local_http) == []
    assert sign_in_problems(settings(**{**SIGN_IN, "auth_metadata_url": "login.example.com"})) != []


def test_a_short_cookie_secret_is_refused() -> None:
    assert any("32" in p for p in sign_in_problems(settings(**SIGN_IN, auth_cookie_secret="short")))
    assert sign_in_problems(settings(**SIGN_IN, auth_cookie_secret="x" * 32)) == []


def test_plain_http_to_another_machine_is_warned_about() -> None:
    assert sign_in_warnings(settings(**SIGN_IN, public_url="http://energy.internal:8501")) != []
    assert sign_in_warnings(settings(**SIGN_IN, public_url="https://energy.example.com")) == []
    assert sign_in_warnings(settings(**SIGN_IN, public_url="http://127.0.0.1:8501")) == []


def test_framing_is_refused_unless_origins_are_listed() -> None:
    assert frame_headers(settings()) == {
        "Content-Security-Policy": "frame-ancestors 'none'",
        "X-Frame-Options": "DENY",
    }
    allowed = settings(frame_ancestors="https://intranet.example.com  'self' https://*.example.org:8443")
    assert frame_headers(allowed) == {
        "Content-Security-Policy": "frame-ancestors https://intranet.example.com 'self' https://*.example.org:8443"
    }
    assert frame_ancestor_problems(allowed) == []


@pytest.mark.parametrize(
    "listed", ["https://a.example.com,https://b.example.com", "https://a.example.com;script-src *", "'none'x"]
)
def test_a_listed_frame_ancestor_that_is_not_an_origin_is_refused(listed: str) -> None:
    problems = frame_ancestor_problems(settings(frame_ancestors=listed))
    assert len(problems) == 1 and "DATACONN_FRAME_ANCESTORS" in problems[0]
