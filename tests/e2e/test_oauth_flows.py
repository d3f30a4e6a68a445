"""OAuth flows over real HTTP on loopback, against a real Authlib authorization server."""

from __future__ import annotations

import dataclasses
import socket
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from reconciler.model import Provider, Secret
from reconciler.oauth import authorize, device, discovery, loopback, tokens
from reconciler.oauth.endpoints import CALLBACK_PATH
from reconciler.oauth.errors import AccessDenied, InvalidGrant, LinkTimeout, OAuthError
from reconciler.oauth.revocation import revoke
from reconciler.oauth.tokens import grant_from_result

from .authserver import replace_param
from .browser import ScriptedBrowser, http_client

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CONF_SECRET = Secret("conf-secret-0123456789")


def link(provider, secret, browser, **kwargs):
    return loopback.run_loopback_flow(
        provider, secret, open_browser=browser, timeout=10, now=NOW, **kwargs
    )


def forge(param: str, value: str | None):
    """A tamper function that rewrites ``param`` of the redirect to the loopback callback."""

    def tamper(url: str) -> str:
        if urlsplit(url).path == CALLBACK_PATH:
            return replace_param(url, param, value)
        return url

    return tamper


def api_status(auth_server, access_token: Secret) -> int:
    with http_client() as client:
        response = client.get(
            auth_server.endpoint("/api/me"),
            headers={"Authorization": f"Bearer {access_token.reveal()}"},
        )
    return response.status_code


def requests_to(auth_server, path):
    return [r for r in auth_server.requests if r.path == path]


# --- authorization code --------------------------------------------------------------------


def test_auth_code_with_a_confidential_client(auth_server, confidential_client, browser):
    provider = auth_server.provider(confidential_client)
    result = link(provider, CONF_SECRET, browser)

    assert result.refresh_token is not None
    assert result.granted_scopes == ("read", "write")
    assert result.expires_at == NOW + timedelta(seconds=auth_server.token_lifetime)
    assert api_status(auth_server, result.access_token) == 200
    assert auth_server.token_calls == {"authorization_code": 1}

    (authz,) = requests_to(auth_server, "/authorize")
    assert authz.query["code_challenge_method"] == ["S256"]
    redirect_uri = authz.query["redirect_uri"][0]
    assert redirect_uri.startswith("http://127.0.0.1:")
    assert redirect_uri.endswith("/oauth/link/callback")
    (token,) = requests_to(auth_server, "/token")
    assert token.headers["authorization"].startswith("Basic ")
    assert "client_secret" not in token.form
    assert token.form["redirect_uri"] == [redirect_uri]

    assert browser.done.wait(5) and browser.error is None
    assert browser.final.status_code == 200 and "Linked test" in browser.final.text
    assert [urlsplit(u).path for u in browser.visited] == ["/authorize", "/oauth/link/callback"]


def test_auth_code_with_client_secret_post(auth_server, browser):
    client = auth_server.add_client("post-app", "post-secret", auth_method="client_secret_post")
    result = link(auth_server.provider(client), Secret("post-secret"), browser)
    assert api_status(auth_server, result.access_token) == 200
    (token,) = requests_to(auth_server, "/token")
    assert "authorization" not in token.headers
    assert token.form["client_secret"] == ["post-secret"]


def test_auth_code_with_a_public_client(auth_server, public_client, browser):
    provider = auth_server.provider(public_client)
    result = link(provider, None, browser)
    assert api_status(auth_server, result.access_token) == 200
    (token,) = requests_to(auth_server, "/token")
    assert "authorization" not in token.headers
    assert token.form["client_id"] == ["public-app"]
    assert "code_verifier" in token.form


def test_public_client_without_pkce_is_refused_by_the_server(auth_server, public_client, browser):
    provider = auth_server.provider(public_client, pkce=False)
    with pytest.raises(OAuthError) as info:
        link(provider, None, browser)
    assert info.value.error == "invalid_request"
    assert "PKCE" in (info.value.description or "")
    assert auth_server.token_calls["authorization_code"] == 0


def test_wrong_client_secret_is_reported(auth_server, confidential_client, browser):
    provider = auth_server.provider(confidential_client)
    with pytest.raises(OAuthError) as info:
        link(provider, Secret("wrong-secret"), browser)
    assert info.value.error == "invalid_client"
    assert "wrong-secret" not in str(info.value)


def test_fixed_loopback_redirect_uri(auth_server, confidential_client, browser):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fixed = f"http://127.0.0.1:{port}/oauth/link/callback"
    provider = auth_server.provider(confidential_client, redirect_uri=fixed)
    link(provider, CONF_SECRET, browser)
    (authz,) = requests_to(auth_server, "/authorize")
    assert authz.query["redirect_uri"] == [fixed]


def test_a_wrong_state_is_ignored_and_the_link_waits(auth_server, confidential_client):
    """A request to the loopback callback with another state (a forged link, a stale tab)
    gets an error page; the real redirect that follows still finishes the link."""
    stray_pages = []

    def send_a_forgery_first(url: str) -> str:
        if urlsplit(url).path == CALLBACK_PATH:
            with http_client() as client:
                stray_pages.append(client.get(replace_param(url, "state", "forged-state")))
        return url

    browser = ScriptedBrowser(tamper=send_a_forgery_first)
    result = link(auth_server.provider(confidential_client), CONF_SECRET, browser)
    assert api_status(auth_server, result.access_token) == 200
    (stray,) = stray_pages
    assert stray.status_code == 400 and "does not belong" in stray.text
    assert auth_server.token_calls["authorization_code"] == 1
    assert browser.done.wait(5)
    assert browser.final.status_code == 200 and "Linked test" in browser.final.text


def test_iss_mismatch_is_rejected(auth_server, confidential_client):
    browser = ScriptedBrowser(tamper=forge("iss", "https://attacker.example.com"))
    with pytest.raises(OAuthError) as info:
        link(auth_server.provider(confidential_client), CONF_SECRET, browser)
    assert info.value.error == "issuer_mismatch"
    assert auth_server.token_calls["authorization_code"] == 0


def test_configured_issuer_differs_from_the_servers(auth_server, confidential_client, browser):
    provider = auth_server.provider(confidential_client, issuer="https://other.example.com")
    with pytest.raises(OAuthError) as info:
        link(provider, CONF_SECRET, browser)
    assert info.value.error == "issuer_mismatch"


def test_missing_iss_after_discovery_announced_it(auth_server, confidential_client, tmp_path):
    provider = Provider(
        name="test",
        client_id=confidential_client.client_id,
        issuer=auth_server.issuer,
        client_secret_ref="env:X",
        scopes=("read",),
    )
    resolved = discovery.resolve_endpoints(provider, cache=tmp_path)
    browser = ScriptedBrowser(tamper=forge("iss", None))
    with pytest.raises(OAuthError) as info:
        link(resolved, CONF_SECRET, browser)
    assert info.value.error == "issuer_missing"


def test_denied_consent(auth_server, confidential_client, browser):
    auth_server.consent = "deny"
    with pytest.raises(AccessDenied) as info:
        link(auth_server.provider(confidential_client), CONF_SECRET, browser)
    assert info.value.error == "access_denied"
    assert auth_server.token_calls["authorization_code"] == 0


def test_link_times_out_when_the_user_never_comes_back(auth_server, confidential_client):
    started = time.monotonic()
    with pytest.raises(LinkTimeout):
        loopback.run_loopback_flow(
            auth_server.provider(confidential_client),
            CONF_SECRET,
            open_browser=lambda url: None,
            timeout=0.5,
        )
    assert time.monotonic() - started < 3


def test_paste_fallback(auth_server, confidential_client):
    """The browser cannot reach the loopback port; the user pastes the URL it ended on."""
    provider = auth_server.provider(confidential_client)
    pending = authorize.start_link(
        provider, redirect_uri="http://127.0.0.1:9/oauth/link/callback", client_secret=CONF_SECRET
    )
    with http_client() as client:
        response = client.get(pending.authorization_url)
    assert response.status_code == 302
    result = authorize.finish_from_redirect_url(response.headers["location"], pending, now=NOW)
    assert api_status(auth_server, result.access_token) == 200


def test_granted_scope_absent_from_the_response(auth_server, confidential_client, browser):
    auth_server.omit_scope = True
    provider = auth_server.provider(confidential_client, scopes=("read",))
    result = link(provider, CONF_SECRET, browser)
    assert result.granted_scopes is None
    grant = grant_from_result(provider, result, now=NOW)
    assert grant.scopes == grant.granted_scopes == ("read",)


def test_downscoped_grant_is_visible(auth_server, browser):
    client = auth_server.add_client("narrow", "narrow-secret", scope="read")
    provider = auth_server.provider(client, scopes=("read", "write"))
    result = link(provider, Secret("narrow-secret"), browser)
    grant = grant_from_result(provider, result, now=NOW)
    assert grant.scopes == ("read", "write") and grant.granted_scopes == ("read",)


# --- refresh and revocation ----------------------------------------------------------------


def test_refresh_rotates_and_the_old_refresh_token_then_fails(
    auth_server, confidential_client, browser
):
    provider = auth_server.provider(confidential_client)
    first = link(provider, CONF_SECRET, browser)
    linked = grant_from_result(provider, first, now=NOW)

    later = NOW + timedelta(minutes=50)
    second = tokens.refresh(provider, CONF_SECRET, first.refresh_token, now=later)
    assert second.refresh_token is not None and second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert api_status(auth_server, second.access_token) == 200
    refreshed = grant_from_result(provider, second, now=later, previous=linked)
    assert refreshed.refresh_token == second.refresh_token
    assert refreshed.granted_scopes == ("read", "write")
    assert refreshed.expires_at == later + timedelta(seconds=auth_server.token_lifetime)

    with pytest.raises(InvalidGrant) as info:
        tokens.refresh(provider, CONF_SECRET, first.refresh_token, now=later)
    assert info.value.error == "invalid_grant"
    assert info.value.description == "The refresh token has been revoked."
    assert first.refresh_token.reveal() not in str(info.value)
    assert auth_server.token_calls == {"authorization_code": 1, "refresh_token": 2}

    third = tokens.refresh(provider, CONF_SECRET, second.refresh_token, now=later)
    assert api_status(auth_server, third.access_token) == 200


def test_public_client_refresh(auth_server, public_client, browser):
    provider = auth_server.provider(public_client)
    first = link(provider, None, browser)
    second = tokens.refresh(provider, None, first.refresh_token, now=NOW)
    assert api_status(auth_server, second.access_token) == 200


def test_revocation_then_refresh_is_invalid_grant(auth_server, confidential_client, browser):
    provider = auth_server.provider(confidential_client)
    result = link(provider, CONF_SECRET, browser)
    revoke(provider, CONF_SECRET, result.refresh_token, "refresh_token")
    (revocation,) = requests_to(auth_server, "/revoke")
    assert revocation.form["token_type_hint"] == ["refresh_token"]
    assert api_status(auth_server, result.access_token) == 401
    with pytest.raises(InvalidGrant):
        tokens.refresh(provider, CONF_SECRET, result.refresh_token, now=NOW)
    # RFC 7009 §2.2: revoking an unknown or already revoked token is not an error.
    revoke(provider, CONF_SECRET, result.refresh_token, "refresh_token")


def test_revoking_only_the_access_token(auth_server, public_client, browser):
    provider = auth_server.provider(public_client)
    result = link(provider, None, browser)
    revoke(provider, None, result.access_token, "access_token")
    assert api_status(auth_server, result.access_token) == 401
    renewed = tokens.refresh(provider, None, result.refresh_token, now=NOW)
    assert api_status(auth_server, renewed.access_token) == 200


# --- client credentials --------------------------------------------------------------------


def test_client_credentials(auth_server, confidential_client):
    provider = auth_server.provider(
        confidential_client, flow="client_credentials", scopes=("read",)
    )
    result = tokens.client_credentials(provider, CONF_SECRET, now=NOW)
    assert result.refresh_token is None
    assert result.granted_scopes == ("read",)
    assert api_status(auth_server, result.access_token) == 200
    assert auth_server.token_calls == {"client_credentials": 1}
    grant = grant_from_result(provider, result, now=NOW)
    assert grant.flow == "client_credentials" and grant.refresh_token is None


def test_client_credentials_is_refused_to_a_public_client(auth_server, public_client):
    provider = auth_server.provider(public_client, flow="client_credentials")
    with pytest.raises(OAuthError) as info:
        tokens.client_credentials(provider, None, now=NOW)
    assert info.value.error == "invalid_client"


# --- device flow ---------------------------------------------------------------------------


def test_device_flow_with_slow_down(auth_server, public_client, browser, fake_clock):
    """The server answers ``slow_down`` once, then enforces the longer interval on the
    virtual clock: a client that did not add 5 s would be told to slow down again."""
    auth_server.device_interval = 1
    auth_server.device_consent = None  # the user opens the page but decides later
    auth_server.force_slow_down = 1
    fake_clock.on_sleep = lambda n: (
        n == 3 and auth_server.approve_device(browser.announced[0].user_code)
    )
    provider = auth_server.provider(public_client, flow="device_code")

    result = device.run_device_flow(
        provider,
        None,
        announce=browser.visit_device,
        sleep=fake_clock.sleep,
        clock=fake_clock.time,
        now=NOW,
    )
    assert api_status(auth_server, result.access_token) == 200
    assert result.granted_scopes == ("read", "write")
    assert fake_clock.sleeps == [1, 6, 6]
    assert auth_server.device_polls == 3
    (announced,) = browser.announced
    assert announced.verification_uri == auth_server.endpoint("/device")
    assert announced.device_code.reveal() not in repr(announced)


def test_device_flow_approved_immediately(auth_server, confidential_client, browser, fake_clock):
    provider = auth_server.provider(confidential_client, flow="device_code")
    result = device.run_device_flow(
        provider,
        CONF_SECRET,
        announce=browser.visit_device,
        sleep=fake_clock.sleep,
        clock=fake_clock.time,
    )
    assert api_status(auth_server, result.access_token) == 200
    (start,) = requests_to(auth_server, "/device_authorization")
    assert start.headers["authorization"].startswith("Basic ")


def test_device_flow_denied(auth_server, public_client, browser, fake_clock):
    auth_server.device_consent = "deny"
    provider = auth_server.provider(public_client, flow="device_code")
    with pytest.raises(AccessDenied):
        device.run_device_flow(
            provider,
            None,
            announce=browser.visit_device,
            sleep=fake_clock.sleep,
            clock=fake_clock.time,
        )
    assert auth_server.device_polls == 1


def test_device_flow_expired(auth_server, public_client, fake_clock):
    auth_server.device_expires_in = 3
    provider = auth_server.provider(public_client, flow="device_code")
    with pytest.raises(LinkTimeout, match="expired"):
        device.run_device_flow(
            provider, None, announce=lambda a: None, sleep=fake_clock.sleep, clock=fake_clock.time
        )
    assert auth_server.device_polls >= 2


def test_device_poll_once_statuses(auth_server, public_client, fake_clock):
    """What an HTTP surface sees when it polls on behalf of a browser."""
    provider = auth_server.provider(public_client, flow="device_code")
    started = device.start_device_flow(provider, None)
    assert device.poll_once(provider, None, started, now=NOW).status == "authorization_pending"
    assert device.poll_once(provider, None, started, now=NOW).status == "slow_down"
    fake_clock.now += 10
    auth_server.approve_device(started.user_code)
    done = device.poll_once(provider, None, started.device_code, now=NOW)
    assert done.status == "completed"
    assert api_status(auth_server, done.token.access_token) == 200
    again = device.poll_once(provider, None, started.device_code.reveal(), now=NOW)
    assert again.status == "error"  # a device code is single use


# --- discovery -----------------------------------------------------------------------------


def test_discovery_then_client_credentials(auth_server, confidential_client, tmp_path):
    provider = Provider(
        name="internal-api",
        client_id=confidential_client.client_id,
        issuer=auth_server.issuer,
        client_secret_ref="env:SECRET",
        flow="client_credentials",
        scopes=("read",),
    )
    resolved = discovery.resolve_endpoints(provider, cache=tmp_path)
    assert resolved.token_endpoint == auth_server.endpoint("/token")
    assert resolved.revocation_endpoint == auth_server.endpoint("/revoke")
    assert resolved.token_endpoint_auth_method == "client_secret_basic"
    result = tokens.client_credentials(resolved, CONF_SECRET, now=NOW)
    assert api_status(auth_server, result.access_token) == 200

    # A second command resolves from the cache, even with the metadata gone.
    auth_server.metadata_mode = "none"
    before = len(auth_server.requests)
    assert discovery.resolve_endpoints(provider, cache=tmp_path) == resolved
    assert len(auth_server.requests) == before


def test_discovery_with_an_issuer_path(tenant_server, tmp_path):
    client = tenant_server.add_client("t-app", "t-secret")
    for mode, path in (
        ("rfc8414", "/.well-known/oauth-authorization-server/tenants/acme"),
        ("openid", "/tenants/acme/.well-known/openid-configuration"),
    ):
        tenant_server.metadata_mode = mode
        metadata = discovery.discover(tenant_server.issuer, cache=tmp_path / mode)
        assert metadata["issuer"] == tenant_server.issuer
        assert tenant_server.requests[-1].path == path
        assert tenant_server.requests[-1].method == "GET"
    provider = Provider(
        name="tenant",
        client_id=client.client_id,
        issuer=tenant_server.issuer,
        client_secret_ref="env:TENANT_SECRET",
        scopes=("read",),
    )
    resolved = discovery.resolve_endpoints(provider, cache=tmp_path / "openid")
    assert tokens.client_credentials(resolved, Secret("t-secret"), now=NOW).access_token


def test_discovery_issuer_mismatch_is_rejected(auth_server, tmp_path):
    auth_server.metadata_overrides = {"issuer": "https://impostor.example.com"}
    provider = Provider(name="internal-api", client_id="x", issuer=auth_server.issuer)
    with pytest.raises(OAuthError) as info:
        discovery.resolve_endpoints(provider, cache=tmp_path)
    assert info.value.error == "issuer_mismatch"
    assert "internal-api" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_discovered_provider_links_end_to_end(auth_server, public_client, browser, tmp_path):
    provider = Provider(
        name="discovered",
        client_id=public_client.client_id,
        issuer=auth_server.issuer,
        scopes=("read", "admin"),
    )
    resolved = discovery.resolve_endpoints(provider, cache=tmp_path)
    assert resolved.token_endpoint_auth_method == "none"
    result = link(resolved, None, browser)
    assert result.granted_scopes == ("read", "admin")
    params = parse_qs(urlsplit(browser.visited[-1]).query)
    assert params["iss"] == [auth_server.issuer]


def test_explicit_endpoints_override_discovery(auth_server, confidential_client, tmp_path):
    provider = dataclasses.replace(
        auth_server.provider(confidential_client),
        revocation_endpoint=None,
        token_endpoint=auth_server.endpoint("/token"),
    )
    resolved = discovery.resolve_endpoints(provider, cache=tmp_path)
    assert resolved.revocation_endpoint == auth_server.endpoint("/revoke")
    assert resolved.authorization_endpoint == provider.authorization_endpoint
