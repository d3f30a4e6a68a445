"""An MCP server declared with `mcp:` and linked end to end through the real CLI: discovery
(RFC 9728, RFC 8414), dynamic client registration (RFC 7591), and tokens bound to the server
(RFC 8707), against the real authorization server and protected resource of this folder."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx2

from reconciler import operations


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_apply_links_an_mcp_server_with_a_registered_client(cli, resource_server):
    auth = cli.auth
    cli.declare_mcp("tools", resource_server)
    cli.write_config()

    ran = cli.run("apply")
    assert ran.code == 0, ran

    # One client was registered, for the loopback redirect, as a confidential client (the
    # server offers no public clients here).
    assert len(auth.registrations) == 1
    registration = auth.registrations[0]
    assert registration["redirect_uris"] == ["http://127.0.0.1/oauth/link/callback"]
    assert registration["grant_types"] == ["authorization_code", "refresh_token"]
    assert registration["token_endpoint_auth_method"] == "client_secret_basic"
    client_id = registration_id = next(iter(auth.registration_tokens))

    # The grant file: the client in the clear, its secrets encrypted, the binding in the clear.
    raw = cli.raw("tools")
    assert raw["client_id"] == client_id
    assert raw["resource"] == resource_server.url
    assert raw["authorization_server"] == auth.issuer
    assert raw["extra"]["client_source"] == "registered"
    for leaf in ("client_secret", "registration_access_token", "access_token", "refresh_token"):
        assert raw[leaf].startswith("ENC[AES256_GCM,"), leaf
    plain = cli.sops_decrypt("tools")
    assert plain["client_secret"] == auth.clients[client_id].client_secret
    assert plain["registration_access_token"] == auth.registration_tokens[registration_id]
    # Neither shows in the file's bytes nor in anything apply printed (the leak check of the
    # `cli` fixture then scans every file, output and command line of the test as well).
    text = cli.grant_file("tools").read_text()
    for secret in (plain["client_secret"], plain["registration_access_token"]):
        assert secret not in text
        assert secret not in ran.stdout + ran.stderr

    # Every authorization and token request named the resource.
    authorize = [r for r in auth.requests if r.path == "/authorize"]
    assert [r.query["resource"] for r in authorize] == [[resource_server.url]]
    token_requests = [r for r in auth.requests if r.path == "/token"]
    assert [r.form["resource"] for r in token_requests] == [[resource_server.url]]

    # The token works at the MCP server it is bound to.
    ran = cli.run("token", "tools")
    assert ran.code == 0, ran
    token = ran.stdout.strip()
    assert httpx2.get(resource_server.url, headers=_bearer(token)).status_code == 200

    # A second apply changes nothing and registers nothing.
    before = cli.grant_file("tools").read_bytes()
    assert cli.run("apply").code == 0
    assert cli.grant_file("tools").read_bytes() == before
    assert len(auth.registrations) == 1


def test_a_token_for_another_mcp_server_is_refused(cli, resource_server, other_resource):
    cli.declare_mcp("one", resource_server)
    cli.declare_mcp("two", other_resource)
    cli.write_config()
    assert cli.run("apply").code == 0

    one = cli.run("token", "one").stdout.strip()
    two = cli.run("token", "two").stdout.strip()
    assert httpx2.get(resource_server.url, headers=_bearer(one)).status_code == 200
    assert httpx2.get(other_resource.url, headers=_bearer(two)).status_code == 200
    refused = httpx2.get(resource_server.url, headers=_bearer(two))
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert httpx2.get(other_resource.url, headers=_bearer(one)).status_code == 401


def test_a_refresh_keeps_the_resource_binding(cli, resource_server):
    auth = cli.auth
    auth.token_lifetime = 2
    cli.declare_mcp("tools", resource_server, scopes=["read"])
    cli.write_config()
    assert cli.run("apply").code == 0
    first = cli.run("token", "tools").stdout.strip()
    auth.token_lifetime = 3600
    time.sleep(2.2)

    ran = cli.run("token", "tools")
    assert ran.code == 0, ran
    fresh = ran.stdout.strip()
    assert fresh != first
    refreshes = [r for r in auth.requests if r.form.get("grant_type") == ["refresh_token"]]
    assert refreshes
    assert all(r.form["resource"] == [resource_server.url] for r in refreshes)
    assert auth.find_token(fresh, "access_token").resource == resource_server.url
    assert httpx2.get(resource_server.url, headers=_bearer(fresh)).status_code == 200
    assert cli.raw("tools")["resource"] == resource_server.url


def test_a_link_through_the_http_surface_stores_the_registered_client(
    cli, resource_server, monkeypatch
):
    """`reconcile serve` starts and finishes a link with the operations used here: the client
    is registered when the link starts, and stored with the grant when it completes."""
    cli.declare_mcp("tools", resource_server)
    cli.write_config()
    for variable in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "SOPS_AGE_KEY_FILE"):
        monkeypatch.setenv(variable, cli.env[variable])
    config = cli.project.config

    request = operations.prepare_link(config, "tools")
    assert len(cli.auth.registrations) == 1
    assert request.provider.token_params["resource"] == resource_server.url
    pending = operations.begin_browser_link(
        request, "http://127.0.0.1:8765/oauth/link/callback", operations.utcnow
    )
    answer = httpx2.get(pending.authorization_url)  # the browser, approving
    assert answer.status_code == 302
    params = parse_qs(urlsplit(answer.headers["location"]).query)
    grant = operations.complete_browser_link(config, "tools", pending, params, operations.utcnow)

    assert grant.resource == resource_server.url
    raw = cli.raw("tools")
    assert raw["extra"]["client_source"] == "registered"
    assert raw["registration_access_token"].startswith("ENC[AES256_GCM,")
    assert raw["client_secret"].startswith("ENC[AES256_GCM,")
    assert httpx2.get(resource_server.url, headers=_bearer(grant.access_token.reveal())).is_success


def test_revoke_uses_the_recorded_client_and_authorization_server(cli, resource_server):
    cli.declare_mcp("tools", resource_server)
    cli.write_config()
    assert cli.run("apply").code == 0
    token = cli.run("token", "tools").stdout.strip()
    client_id = cli.raw("tools")["client_id"]

    ran = cli.run("revoke", "tools", "--yes")
    assert ran.code == 0, ran
    assert not cli.grant_file("tools").exists()
    revocations = [r for r in cli.auth.requests if r.path == "/revoke"]
    assert revocations and all(r.headers.get("authorization") for r in revocations)
    assert cli.auth.find_token(token, "access_token").access_revoked
    assert cli.latest(cli.auth.clients[client_id]).refresh_revoked
    assert httpx2.get(resource_server.url, headers=_bearer(token)).status_code == 401
