"""Authorization URL, PKCE, callback validation and the paste fallback."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from reconciler.model import Secret
from reconciler.oauth.authorize import (
    build_authorization_url,
    code_challenge,
    finish_from_redirect_url,
    new_code_verifier,
    start_link,
    validate_callback,
)
from reconciler.oauth.errors import AccessDenied, OAuthError

NOW = datetime(2025, 3, 1, tzinfo=UTC)
REDIRECT = "http://127.0.0.1:8400/oauth/link/callback"


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# --- PKCE ----------------------------------------------------------------------------------


def test_pkce_s256_vector_from_rfc7636_appendix_b():
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert code_challenge(Secret(verifier)) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_new_code_verifier_is_fresh_and_well_formed():
    first, second = new_code_verifier(), new_code_verifier()
    assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", first.reveal())
    assert first != second
    assert first.reveal() not in repr(first)


# --- authorization URL ---------------------------------------------------------------------


def test_authorization_url_parameters(make_provider):
    provider = make_provider(
        authorization_endpoint="https://auth.example.com/authorize?tenant=t1",
        authorization_params={"audience": "api.example.com"},
    )
    url = build_authorization_url(provider, None, REDIRECT, "state-1", "c" * 43, {"prompt": "x"})
    assert url.startswith("https://auth.example.com/authorize?")
    assert query(url) == {
        "tenant": ["t1"],
        "response_type": ["code"],
        "client_id": ["client-1"],
        "redirect_uri": [REDIRECT],
        "scope": ["read write"],
        "state": ["state-1"],
        "audience": ["api.example.com"],
        "prompt": ["x"],
        "code_challenge": ["c" * 43],
        "code_challenge_method": ["S256"],
    }


def test_authorization_url_scope_separator_and_explicit_scopes(make_provider):
    provider = make_provider(scope_separator=",")
    url = build_authorization_url(provider, ["a", "b:c"], REDIRECT, "s", "c" * 43)
    assert query(url)["scope"] == ["a,b:c"]


@pytest.mark.parametrize("key", ["state", "redirect_uri", "code_challenge_method", "client_id"])
def test_flow_parameters_cannot_be_overridden(make_provider, key):
    with pytest.raises(ValueError, match=key):
        build_authorization_url(make_provider(), None, REDIRECT, "s", "c" * 43, {key: "evil"})
    with pytest.raises(ValueError, match=key):
        build_authorization_url(
            make_provider(authorization_params={key: "evil"}), None, REDIRECT, "s", "c" * 43
        )


def test_pkce_can_be_turned_off_but_is_required_when_on(make_provider):
    url = build_authorization_url(make_provider(pkce=False), None, REDIRECT, "s", None)
    assert "code_challenge" not in query(url)
    with pytest.raises(ValueError, match="code_challenge"):
        build_authorization_url(make_provider(), None, REDIRECT, "s", None)


def test_authorization_endpoint_must_be_known_and_secure(make_provider):
    with pytest.raises(OAuthError, match="authorization_endpoint"):
        build_authorization_url(
            make_provider(authorization_endpoint=None), None, REDIRECT, "s", "c" * 43
        )
    with pytest.raises(OAuthError) as info:
        build_authorization_url(
            make_provider(authorization_endpoint="http://auth.example.com/a"),
            None,
            REDIRECT,
            "s",
            "c" * 43,
        )
    assert info.value.error == "insecure_endpoint"


def test_start_link_binds_state_and_verifier(make_provider):
    pending = start_link(make_provider(), redirect_uri=REDIRECT, now=NOW)
    params = query(pending.authorization_url)
    assert params["state"] == [pending.state]
    assert params["code_challenge"] == [code_challenge(pending.code_verifier)]
    assert pending.state not in repr(pending)
    assert pending.code_verifier.reveal() not in repr(pending)


# --- callback validation -------------------------------------------------------------------


@pytest.fixture
def pending(make_provider):
    return start_link(
        make_provider(issuer="https://auth.example.com"), redirect_uri=REDIRECT, now=NOW
    )


def test_valid_callback_returns_the_code(pending):
    params = {"code": ["c-1"], "state": [pending.state], "iss": ["https://auth.example.com"]}
    assert validate_callback(params, pending) == "c-1"
    assert validate_callback({"code": "c-2", "state": pending.state}, pending) == "c-2"


@pytest.mark.parametrize("state", [None, "", "other"])
def test_state_mismatch_is_rejected(pending, state):
    params = {"code": "c-1"} if state is None else {"code": "c-1", "state": state}
    with pytest.raises(OAuthError) as info:
        validate_callback(params, pending)
    assert info.value.error == "state_mismatch"
    assert "acme" in str(info.value)


def test_state_is_checked_before_the_error(pending):
    with pytest.raises(OAuthError) as info:
        validate_callback({"error": "access_denied", "state": "forged"}, pending)
    assert info.value.error == "state_mismatch"


def test_repeated_parameter_is_rejected(pending):
    with pytest.raises(OAuthError, match="repeats"):
        validate_callback({"code": ["a", "b"], "state": [pending.state]}, pending)


def test_iss_mismatch_is_rejected(pending):
    with pytest.raises(OAuthError) as info:
        validate_callback(
            {"code": "c", "state": pending.state, "iss": "https://evil.example.com"}, pending
        )
    assert info.value.error == "issuer_mismatch"


def test_missing_iss_is_rejected_when_the_server_announces_rfc9207(make_provider):
    provider = make_provider(
        issuer="https://auth.example.com",
        extras={"authorization_response_iss_parameter_supported": True},
    )
    pending = start_link(provider, redirect_uri=REDIRECT)
    with pytest.raises(OAuthError) as info:
        validate_callback({"code": "c", "state": pending.state}, pending)
    assert info.value.error == "issuer_missing"


def test_iss_without_a_configured_issuer_is_accepted(make_provider):
    pending = start_link(make_provider(), redirect_uri=REDIRECT)
    params = {"code": "c", "state": pending.state, "iss": "https://whoever.example.com"}
    assert validate_callback(params, pending) == "c"


def test_access_denied(pending):
    with pytest.raises(AccessDenied) as info:
        validate_callback(
            {"error": "access_denied", "error_description": "User said no", "state": pending.state},
            pending,
        )
    assert info.value.description == "User said no"


def test_other_authorization_errors(pending):
    with pytest.raises(OAuthError) as info:
        validate_callback(
            {"error": "invalid_scope", "error_description": "bad", "state": pending.state},
            pending,
        )
    assert info.value.error == "invalid_scope" and not isinstance(info.value, AccessDenied)


def test_missing_code(pending):
    with pytest.raises(OAuthError, match="no code"):
        validate_callback({"state": pending.state}, pending)


# --- paste fallback ------------------------------------------------------------------------


def test_finish_from_pasted_redirect_url(stub, make_provider):
    stub.reply("POST", "/token", body={"access_token": "at", "refresh_token": "rt"})
    pending = start_link(make_provider(), redirect_uri=REDIRECT, client_secret=Secret("sec"))
    url = f"{REDIRECT}?{urlencode({'code': 'pasted', 'state': pending.state})}"
    result = finish_from_redirect_url(f"  {url}\n", pending, now=NOW)
    assert result.access_token.reveal() == "at"
    (request,) = stub.hits("/token")
    assert request.form["code"] == "pasted"
    assert request.form["code_verifier"] == pending.code_verifier.reveal()
    assert request.form["redirect_uri"] == REDIRECT


def test_pasted_url_must_match_the_redirect_uri(stub, make_provider):
    pending = start_link(make_provider(), redirect_uri=REDIRECT)
    for wrong in (
        f"http://127.0.0.1:8401/oauth/link/callback?code=c&state={pending.state}",
        f"http://127.0.0.1:8400/other?code=c&state={pending.state}",
        f"https://127.0.0.1:8400/oauth/link/callback?code=c&state={pending.state}",
    ):
        with pytest.raises(OAuthError) as info:
            finish_from_redirect_url(wrong, pending)
        assert info.value.error == "redirect_mismatch"
    assert stub.requests == []
