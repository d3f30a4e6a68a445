"""Bad input from an MCP server or its authorization server: one clear error each, naming the
grant and the URL, no traceback, and nothing written."""

from __future__ import annotations

import json

import pytest


def _fails_cleanly(cli, *needles: str) -> str:
    ran = cli.run("apply")
    assert ran.code == 1, ran
    assert "Traceback" not in ran.stderr
    assert cli.project.snapshot() == {}, "nothing may be written"
    for needle in needles:
        assert needle in ran.stderr, ran.stderr
    as_json = cli.run("link", "tools", "-o", "json")
    assert as_json.code == 1, as_json
    message = json.loads(as_json.stdout)["error"]["message"]
    assert message.startswith("tools: "), message
    assert cli.project.snapshot() == {}
    return message


@pytest.fixture
def declared(cli, resource_server):
    cli.declare_mcp("tools", resource_server)
    cli.write_config()
    return cli


def test_metadata_for_another_resource_is_refused(declared, resource_server):
    resource_server.metadata_overrides = {"resource": "http://127.0.0.1:9/elsewhere"}
    message = _fails_cleanly(declared, "RFC 9728 §3.3", "http://127.0.0.1:9/elsewhere")
    assert resource_server.url in message
    assert declared.auth.registrations == []


def test_an_authorization_server_off_loopback_without_https_is_refused(declared, resource_server):
    resource_server.metadata_overrides = {"authorization_servers": ["http://auth.example.com"]}
    message = _fails_cleanly(declared, "'http://auth.example.com'", "not https")
    assert "nothing was written" in message.lower()


def test_a_registration_error_is_reported(declared):
    declared.auth.registration_refused = True
    message = _fails_cleanly(declared, "refused to register a client", "invalid_client_metadata")
    assert "loopback redirect URIs are not allowed here" in message
    assert declared.auth.registrations == []
    assert not [r for r in declared.auth.requests if r.path == "/authorize"]


def test_a_server_without_a_challenge_is_reported(declared, resource_server):
    resource_server.challenge = "none"
    resource_server.serve_metadata = False
    message = _fails_cleanly(declared, "without an OAuth challenge")
    assert "/.well-known/oauth-protected-resource/mcp (HTTP 404)" in message


def test_no_registration_endpoint_and_no_client_id(declared):
    declared.auth.metadata_overrides = {"registration_endpoint": None}
    message = _fails_cleanly(declared, "offers no dynamic client registration")
    assert "client_id" in message


def test_an_authorization_server_without_pkce_s256_is_refused(declared):
    declared.auth.metadata_overrides = {"code_challenge_methods_supported": ["plain"]}
    message = _fails_cleanly(declared, "PKCE with S256")
    assert declared.auth.issuer in message
    assert declared.auth.registrations == []


def test_an_mcp_server_is_not_linked_with_a_device_code(declared):
    ran = declared.run("link", "tools", "--device")
    assert ran.code == 1, ran
    assert "linked in a browser" in ran.stderr and "--no-browser" in ran.stderr
    assert declared.project.snapshot() == {}
    assert declared.auth.registrations == []
