"""Which client an MCP grant is linked with (SPEC §8), and how discovery finds the
authorization server when the challenge does not say."""

from __future__ import annotations

import time

import httpx2

from .authserver import McpAuthServer


def _works(cli, name: str, resource) -> None:
    token = cli.run("token", name).stdout.strip()
    response = httpx2.get(resource.url, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_a_bare_challenge_falls_back_to_the_well_known_metadata(cli, resource_server):
    resource_server.challenge = "bare"
    resource_server.challenge_scope = None
    cli.declare_mcp("tools", resource_server)
    cli.write_config()
    assert cli.run("apply").code == 0
    fetched = [r for r in cli.auth.requests if r.path.startswith("/.well-known")]
    assert fetched  # then the authorization server's metadata
    _works(cli, "tools", resource_server)


def test_scopes_come_from_the_challenge_before_the_metadata(cli, resource_server):
    resource_server.challenge_scope = "write"
    cli.declare_mcp("tools", resource_server)
    cli.write_config()
    assert cli.run("apply").code == 0
    (authorize,) = [r for r in cli.auth.requests if r.path == "/authorize"]
    assert authorize.query["scope"] == ["write"]
    assert cli.raw("tools")["granted_scopes"] == ["write"]


def test_a_public_client_is_registered_when_the_server_takes_them(cli, resource_server):
    cli.auth.public_registration = True
    cli.declare_mcp("tools", resource_server)
    cli.write_config()
    assert cli.run("apply").code == 0
    assert cli.auth.registrations[0]["token_endpoint_auth_method"] == "none"
    raw = cli.raw("tools")
    assert "client_secret" not in raw
    assert raw["registration_access_token"].startswith("ENC[AES256_GCM,")
    _works(cli, "tools", resource_server)


def test_a_declared_client_id_is_used_and_nothing_registered(cli, resource_server):
    client = cli.auth.add_client("hand-registered")
    cli.declare_mcp("tools", resource_server, client_id=client.client_id)
    cli.write_config()
    assert cli.run("apply").code == 0
    assert cli.auth.registrations == []
    raw = cli.raw("tools")
    assert raw["client_id"] == "hand-registered"
    assert raw["extra"]["client_source"] == "declared"
    _works(cli, "tools", resource_server)


def test_a_client_id_metadata_document_when_the_server_supports_them(cli, resource_server):
    url = "https://client.example.com/oauth-reconciler.json"
    # The server resolves the document itself; here it knows the client already.
    cli.auth.add_client(url)
    cli.auth.metadata_overrides = {"client_id_metadata_document_supported": True}
    cli.declare_mcp("tools", resource_server, client_metadata_url=url)
    cli.write_config()
    assert cli.run("apply").code == 0
    assert cli.auth.registrations == []
    (authorize,) = [r for r in cli.auth.requests if r.path == "/authorize"]
    assert authorize.query["client_id"] == [url]
    assert cli.raw("tools")["extra"]["client_source"] == "metadata-document"
    _works(cli, "tools", resource_server)


def test_without_support_a_metadata_url_falls_back_to_registration(cli, resource_server):
    cli.declare_mcp("tools", resource_server, client_metadata_url="https://c.example/doc.json")
    cli.write_config()
    assert cli.run("apply").code == 0
    assert len(cli.auth.registrations) == 1


def test_the_registration_is_reused_on_relink(cli, resource_server):
    cli.declare_mcp("tools", resource_server, scopes=["read"])
    cli.write_config()
    assert cli.run("apply").code == 0
    client_id = cli.raw("tools")["client_id"]
    cli.declare_mcp("tools", resource_server, scopes=["read", "write"])
    cli.write_config()
    plan = cli.run("plan")
    assert "scopes not granted: write" in plan.stdout
    assert cli.run("apply").code == 0
    assert len(cli.auth.registrations) == 1
    assert cli.raw("tools")["client_id"] == client_id
    assert cli.raw("tools")["granted_scopes"] == ["read", "write"]


def test_a_forgotten_registration_is_replaced_at_the_next_link(cli, resource_server):
    auth = cli.auth
    auth.token_lifetime = 1
    cli.declare_mcp("tools", resource_server)
    cli.write_config()
    assert cli.run("apply").code == 0
    old = cli.raw("tools")["client_id"]
    auth.forget_client(old)
    time.sleep(1.1)

    ran = cli.run("token", "tools")  # due: the refresh meets invalid_client
    assert ran.code == 1, ran
    assert "Traceback" not in ran.stderr
    raw = cli.raw("tools")
    assert raw["status"] == "needs-relink"
    assert "no longer accepts the registered client" in raw["status_reason"]

    auth.token_lifetime = 3600
    ran = cli.run("apply")
    assert ran.code == 0, ran
    assert len(auth.registrations) == 2
    new = cli.raw("tools")
    assert new["client_id"] != old and new["status"] == "ok"
    _works(cli, "tools", resource_server)


def test_apply_notices_a_new_authorization_server_and_relinks_there(cli, resource_server):
    auth = cli.auth
    auth.token_lifetime = 1
    cli.declare_mcp("tools", resource_server)
    cli.write_config()
    assert cli.run("apply").code == 0
    time.sleep(1.1)

    moved = McpAuthServer().start()
    try:
        moved.resources.add(resource_server.url)
        resource_server.auth = moved  # the MCP server now trusts (and introspects at) it
        ran = cli.run("apply")
        assert ran.code == 1, ran
        assert auth.token_calls["refresh_token"] == 0, "nothing is sent to the old server"
        raw = cli.raw("tools")
        assert raw["status"] == "needs-relink"
        assert moved.issuer in raw["status_reason"]
        plan = cli.run("plan")
        assert "relink" in plan.stdout and moved.issuer in plan.stdout

        ran = cli.run("apply")
        assert ran.code == 0, ran
        raw = cli.raw("tools")
        assert raw["authorization_server"] == moved.issuer
        assert len(moved.registrations) == 1, "a new client, registered at the new server"
        cli.client_secrets.extend(moved.issued_secrets)
        cli.client_secrets.extend(t.access_token for t in moved.tokens)
        cli.client_secrets.extend(t.refresh_token for t in moved.tokens if t.refresh_token)
        _works(cli, "tools", resource_server)
    finally:
        moved.stop()


def test_a_relink_asks_whether_the_registration_is_still_known(cli, resource_server):
    """RFC 7592 §2.1: before reusing a registered client, its configuration endpoint is read
    with the registration access token; a forgotten client is registered again before the
    browser is sent anywhere."""
    auth = cli.auth
    cli.declare_mcp("tools", resource_server, scopes=["read"])
    cli.write_config()
    assert cli.run("apply").code == 0
    old = cli.raw("tools")["client_id"]
    auth.forget_client(old)
    cli.declare_mcp("tools", resource_server, scopes=["read", "write"])
    cli.write_config()

    ran = cli.run("apply")
    assert ran.code == 0, ran
    reads = [r for r in auth.requests if r.method == "GET" and r.path == f"/register/{old}"]
    assert len(reads) == 1
    assert len(auth.registrations) == 2
    assert cli.raw("tools")["client_id"] != old
    _works(cli, "tools", resource_server)
