"""Token endpoint requests and the validation of token responses, against a loopback stub."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.model import Grant, Secret
from reconciler.oauth import revocation, tokens, transport
from reconciler.oauth.errors import InvalidGrant, InvalidTokenResponse, OAuthError, TransientError
from reconciler.oauth.tokens import TokenResult, grant_from_result

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SECRET = Secret("s3cret-value")
FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def exchange(provider, secret=SECRET):
    return tokens.exchange_code(
        provider, secret, "the-code", "http://127.0.0.1:5000/oauth/link/callback", "v" * 43, now=NOW
    )


# --- success and client authentication -----------------------------------------------------


def test_exchange_code_success_and_request_shape(stub, make_provider):
    stub.reply(
        "POST",
        "/token",
        body={
            "access_token": "at-1",
            "refresh_token": "rt-1",
            "token_type": "bearer",
            "expires_in": 3600,
            "scope": "read write",
        },
    )
    result = exchange(make_provider(token_endpoint_auth_method="client_secret_basic"))
    assert result.access_token.reveal() == "at-1"
    assert result.refresh_token.reveal() == "rt-1"
    assert result.token_type == "Bearer"
    assert result.expires_at == NOW + timedelta(hours=1)
    assert result.granted_scopes == ("read", "write")
    (request,) = stub.hits("/token")
    assert request.headers["authorization"] == basic("client-1", "s3cret-value")
    assert request.headers["accept"] == "application/json"
    assert request.form == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": "http://127.0.0.1:5000/oauth/link/callback",
        "code_verifier": "v" * 43,
    }
    assert "at-1" not in repr(result) and "rt-1" not in str(result)


def test_client_secret_post_puts_credentials_in_the_body(stub, make_provider):
    stub.reply("POST", "/token", body={"access_token": "at", "token_type": "Bearer"})
    exchange(make_provider(token_endpoint_auth_method="client_secret_post"))
    (request,) = stub.hits("/token")
    assert "authorization" not in request.headers
    assert request.form["client_id"] == "client-1"
    assert request.form["client_secret"] == "s3cret-value"


def test_public_client_sends_client_id_only(stub, make_provider):
    stub.reply("POST", "/token", body={"access_token": "at", "token_type": "Bearer"})
    exchange(make_provider(token_endpoint_auth_method="none"), secret=None)
    (request,) = stub.hits("/token")
    assert "authorization" not in request.headers
    assert request.form["client_id"] == "client-1"
    assert "client_secret" not in request.form


def test_default_auth_method_follows_the_secret(stub, make_provider):
    stub.reply("POST", "/token", body={"access_token": "at"})
    exchange(make_provider())
    exchange(make_provider(), secret=None)
    with_secret, without = stub.hits("/token")
    assert with_secret.headers["authorization"].startswith("Basic ")
    assert "authorization" not in without.headers and without.form["client_id"] == "client-1"


def test_missing_secret_for_confidential_method_fails_before_any_request(stub, make_provider):
    with pytest.raises(OAuthError) as info:
        exchange(make_provider(token_endpoint_auth_method="client_secret_basic"), secret=None)
    assert info.value.error == "invalid_client"
    assert "acme" in str(info.value) and "client_secret" in str(info.value)
    assert stub.requests == []


def test_token_params_are_sent_but_cannot_override(stub, make_provider):
    stub.reply("POST", "/token", body={"access_token": "at"})
    provider = make_provider(token_params={"audience": "api.example.com", "code": "evil"})
    exchange(provider)
    (request,) = stub.hits("/token")
    assert request.form["audience"] == "api.example.com"
    assert request.form["code"] == "the-code"


# --- response validation -------------------------------------------------------------------


def test_error_in_a_200_response_is_an_error(stub, make_provider):
    stub.reply(
        "POST",
        "/token",
        200,
        {"error": "invalid_grant", "error_description": "Code already used"},
    )
    with pytest.raises(InvalidGrant) as info:
        exchange(make_provider())
    assert info.value.error == "invalid_grant"
    assert info.value.description == "Code already used"
    assert "acme" in str(info.value) and "reconcile link acme" in str(info.value)


def test_blank_access_token_is_rejected(stub, make_provider):
    stub.reply("POST", "/token", body={"access_token": "  ", "token_type": "Bearer"})
    with pytest.raises(OAuthError) as info:
        exchange(make_provider())
    assert info.value.error == "invalid_token_response"


def test_missing_access_token_is_rejected(stub, make_provider):
    stub.reply("POST", "/token", body={"token_type": "Bearer", "expires_in": 10})
    with pytest.raises(OAuthError, match="no access token"):
        exchange(make_provider())


def test_id_token_only_answer_is_rejected(stub, make_provider):
    stub.reply("POST", "/token", body={"id_token": "eyJhbGciOi.x.y", "token_type": "Bearer"})
    with pytest.raises(OAuthError, match="only an id_token") as info:
        exchange(make_provider())
    assert "eyJhbGciOi" not in str(info.value)


def test_form_encoded_response_is_accepted(stub, make_provider):
    stub.reply(
        "POST",
        "/token",
        body="access_token=at-form&token_type=bearer&scope=read+write&expires_in=60",
        headers=FORM,
    )
    result = exchange(make_provider())
    assert result.access_token.reveal() == "at-form"
    assert result.granted_scopes == ("read", "write")
    assert result.expires_at == NOW + timedelta(seconds=60)


def test_non_json_non_form_body_is_rejected(stub, make_provider):
    stub.reply("POST", "/token", body="<html>login</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(OAuthError, match="neither JSON nor form-encoded"):
        exchange(make_provider())


def test_http_error_without_error_code(stub, make_provider):
    stub.reply("POST", "/token", 400, {"message": "nope"})
    with pytest.raises(OAuthError) as info:
        exchange(make_provider())
    assert info.value.status_code == 400 and not isinstance(info.value, TransientError)


def test_redirects_are_not_followed(stub, make_provider):
    stub.reply("POST", "/token", 302, "", {"Location": stub.url("/elsewhere")})
    stub.reply("POST", "/elsewhere", body={"access_token": "stolen"})
    stub.reply("GET", "/elsewhere", body={"access_token": "stolen"})
    with pytest.raises(OAuthError) as info:
        exchange(make_provider())
    assert info.value.error == "unexpected_redirect"
    assert stub.hits("/elsewhere") == []


def test_rate_limit_is_transient_with_retry_after(stub, make_provider):
    stub.reply("POST", "/token", 429, {"error": "slow"}, {"Retry-After": "7"})
    with pytest.raises(TransientError) as info:
        exchange(make_provider())
    assert info.value.retry_after == 7
    assert info.value.status_code == 429


def test_retry_after_as_http_date(stub, make_provider):
    stub.reply("POST", "/token", 503, "down", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    with pytest.raises(TransientError) as info:
        exchange(make_provider())
    assert info.value.retry_after == 0  # a date in the past


def test_server_error_is_transient(stub, make_provider):
    stub.reply("POST", "/token", 502, "bad gateway", {"Content-Type": "text/plain"})
    with pytest.raises(TransientError) as info:
        exchange(make_provider())
    assert info.value.status_code == 502 and info.value.retry_after is None


def test_an_unavailable_provider_is_named_without_the_secrets_it_echoes(stub, make_provider):
    leaked = "rt-echoed-back-0123456789"
    answer = {"error_description": f"overloaded while refreshing {leaked}"}
    stub.reply("POST", "/token", 503, answer, {"Retry-After": "9"})
    with pytest.raises(TransientError) as info:
        tokens.refresh(make_provider(), SECRET, Secret(leaked), now=NOW)
    message = str(info.value)
    assert "token endpoint answered HTTP 503 to the token refresh" in message
    assert "the current grant is kept, try again later" in message
    assert leaked not in message and leaked not in (info.value.description or "")
    assert info.value.error == "temporarily_unavailable" and info.value.retry_after == 9


def test_temporarily_unavailable_error_code_is_transient(stub, make_provider):
    stub.reply("POST", "/token", 400, {"error": "temporarily_unavailable"})
    with pytest.raises(TransientError):
        exchange(make_provider())


def test_timeout_is_transient(stub, make_provider, monkeypatch):
    monkeypatch.setattr(transport, "TIMEOUT", 0.3)

    def slow(request):
        time.sleep(1.0)
        return 200, {}, {"access_token": "late"}

    stub.route("POST", "/token", slow)
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        exchange(make_provider())
    assert info.value.error == "timeout"
    assert time.monotonic() - started < 0.9


def test_requests_share_a_connection_but_no_cookies(stub, make_provider):
    """One kept-alive connection per thread for many token requests; a cookie set by one
    answer never rides along on the next request."""
    answer = {"access_token": "a1", "token_type": "Bearer", "expires_in": 60}
    stub.reply("POST", "/token", 200, answer, {"Set-Cookie": "session=tracked; Path=/"})
    exchange(make_provider())
    exchange(make_provider())
    first, second = stub.hits("/token")
    assert first.peer == second.peer  # the same TCP connection
    assert "cookie" not in second.headers


def test_connection_refused_is_transient(make_provider):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = make_provider(token_endpoint=f"http://127.0.0.1:{port}/token")
    with pytest.raises(TransientError) as info:
        exchange(provider)
    assert info.value.error == "network_error"


def test_insecure_endpoint_is_refused(make_provider):
    with pytest.raises(OAuthError) as info:
        exchange(make_provider(token_endpoint="http://auth.example.com/token"))
    assert info.value.error == "insecure_endpoint"


def test_expires_in_as_string_and_invalid(stub, make_provider):
    stub.replies(
        "POST",
        "/token",
        (200, {}, {"access_token": "at", "expires_in": "120"}),
        (200, {}, {"access_token": "at", "expires_in": -5}),
    )
    assert exchange(make_provider()).expires_at == NOW + timedelta(seconds=120)
    with pytest.raises(OAuthError, match="expires_in"):
        exchange(make_provider())


@pytest.mark.parametrize(
    "value", [-5, "-1", "soon", "1e15x", float("inf"), True, [60], {"s": 1}], ids=repr
)
def test_an_invalid_expires_in_is_a_provider_error(stub, make_provider, value):
    stub.reply("POST", "/token", body={"access_token": "at", "expires_in": value})
    with pytest.raises(InvalidTokenResponse) as info:
        exchange(make_provider())
    assert info.value.provider == "acme"
    assert str(info.value).startswith("acme: the token response has an invalid `expires_in`")


@pytest.mark.parametrize("value", [1e15, "1e15", 10**30, 2**63])
def test_an_absurdly_long_expires_in_is_clamped(stub, make_provider, value):
    stub.reply(
        "POST",
        "/token",
        body={"access_token": "at", "expires_in": value, "refresh_token_expires_in": value},
    )
    result = exchange(make_provider())
    assert result.expires_at == NOW + tokens.MAX_LIFETIME
    assert result.extra["refresh_token_expires_at"] == (NOW + tokens.MAX_LIFETIME).isoformat()


def test_refresh_token_expiry_is_kept_in_extra(stub, make_provider):
    stub.reply(
        "POST",
        "/token",
        body={"access_token": "at", "refresh_token": "rt", "refresh_token_expires_in": 86400},
    )
    result = exchange(make_provider())
    assert result.extra == {"refresh_token_expires_at": "2025-03-02T12:00:00+00:00"}


def test_provider_echoing_a_secret_in_a_description_is_scrubbed(stub, make_provider):
    stub.reply(
        "POST",
        "/token",
        400,
        {"error": "invalid_grant", "error_description": "refresh token rt-VERY-SECRET is revoked"},
    )
    with pytest.raises(InvalidGrant) as info:
        tokens.refresh(make_provider(), SECRET, Secret("rt-VERY-SECRET"), now=NOW)
    for text in (str(info.value), repr(info.value), info.value.description):
        assert "rt-VERY-SECRET" not in text
    assert "***" in info.value.description


# --- refresh, client credentials, grants ---------------------------------------------------


def test_refresh_request_and_scope_narrowing(stub, make_provider):
    stub.reply("POST", "/token", body={"access_token": "at2"})
    provider = make_provider()
    tokens.refresh(provider, SECRET, Secret("rt-1"), now=NOW)
    tokens.refresh(provider, SECRET, Secret("rt-1"), now=NOW, scopes=["read"])
    plain, narrowed = stub.hits("/token")
    assert plain.form == {"grant_type": "refresh_token", "refresh_token": "rt-1"}
    assert narrowed.form["scope"] == "read"


def test_client_credentials_request(stub, make_provider):
    stub.reply("POST", "/token", body={"access_token": "cc", "expires_in": 300})
    provider = make_provider(scopes=("api.read", "api.write"), scope_separator=",")
    result = tokens.client_credentials(provider, SECRET, now=NOW)
    (request,) = stub.hits("/token")
    assert request.form == {"grant_type": "client_credentials", "scope": "api.read,api.write"}
    assert result.refresh_token is None and result.granted_scopes is None


def test_grant_from_result_for_a_new_link(make_provider):
    provider = make_provider(flow="authorization_code", scopes=("read", "write"))
    result = TokenResult(access_token=Secret("at"), refresh_token=Secret("rt"))
    grant = grant_from_result(provider, result, now=NOW)
    assert grant.kind == "oauth2" and grant.flow == "authorization_code"
    assert grant.client_id == "client-1" and grant.token_endpoint == provider.token_endpoint
    assert grant.scopes == ("read", "write")
    assert grant.granted_scopes == ("read", "write")  # RFC 6749 §5.1: absent = requested
    assert grant.obtained_at == NOW and grant.status == "ok"
    assert grant.refresh_token.reveal() == "rt"


def test_grant_from_result_uses_the_granted_scope(make_provider):
    provider = make_provider(scopes=("read", "write"))
    result = TokenResult(access_token=Secret("at"), granted_scopes=("read",))
    assert grant_from_result(provider, result, now=NOW).granted_scopes == ("read",)


def test_grant_from_result_after_a_refresh_keeps_the_durable_parts(make_provider):
    provider = make_provider(scopes=("read", "write"))
    previous = Grant(
        name="acme",
        kind="oauth2",
        scopes=("read", "write"),
        granted_scopes=("read",),
        refresh_token=Secret("rt-old"),
        id_token=Secret("idt"),
        extra={"instance_url": "https://x.example.com"},
        recipients=("age1xyz",),
    )
    result = TokenResult(access_token=Secret("at-new"), expires_at=NOW + timedelta(hours=1))
    grant = grant_from_result(provider, result, now=NOW, previous=previous)
    assert grant.refresh_token.reveal() == "rt-old"
    assert grant.granted_scopes == ("read",)
    assert grant.id_token.reveal() == "idt"
    assert grant.extra == {"instance_url": "https://x.example.com"}
    assert grant.recipients == ("age1xyz",)
    rotated = TokenResult(access_token=Secret("at"), refresh_token=Secret("rt-new"))
    assert grant_from_result(provider, rotated, now=NOW, previous=previous).refresh_token == Secret(
        "rt-new"
    )


# --- revocation ----------------------------------------------------------------------------


def test_revoke_posts_token_and_hint(stub, make_provider):
    stub.reply("POST", "/revoke", 200, "")
    revocation.revoke(make_provider(), SECRET, Secret("rt-1"), "refresh_token")
    (request,) = stub.hits("/revoke")
    assert request.form == {"token": "rt-1", "token_type_hint": "refresh_token"}
    assert request.headers["authorization"] == basic("client-1", "s3cret-value")


def test_revoke_without_endpoint_is_a_clear_error(stub, make_provider):
    with pytest.raises(OAuthError, match="no revocation endpoint") as info:
        revocation.revoke(make_provider(revocation_endpoint=None), SECRET, Secret("t"))
    assert info.value.error == "revocation_unsupported"
    assert stub.requests == []


def test_revoke_errors(stub, make_provider):
    stub.replies(
        "POST",
        "/revoke",
        (503, {"Retry-After": "3"}, ""),
        (400, {}, {"error": "unsupported_token_type"}),
    )
    with pytest.raises(TransientError) as info:
        revocation.revoke(make_provider(), SECRET, Secret("t"), "access_token")
    assert info.value.retry_after == 3
    with pytest.raises(OAuthError) as info:
        revocation.revoke(make_provider(), SECRET, Secret("t"), "access_token")
    assert info.value.error == "unsupported_token_type"


def test_importing_tokens_is_cheap():
    code = (
        "import sys, reconciler.oauth.tokens, reconciler.oauth.errors, reconciler.oauth.quirks,"
        " reconciler.oauth.revocation;"
        "heavy = [m for m in ('authlib', 'httpx2') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
