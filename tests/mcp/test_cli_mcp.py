"""An MCP server declared with `mcp:` and linked end to end through the real CLI: discovery
(RFC 9728, RFC 8414), dynamic client registration (RFC 7591), and tokens bound to the server
(RFC 8707), against the real authorization server and protected resource of this folder."""

from __future__ import annotations

import time

import httpx2


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
