"""The MCP pieces of the OAuth layer on their own (SPEC §8): the challenge parser, the
well-known URLs and canonical URI of RFC 9728 / RFC 8707, discovery against a stub server that
answers as a protected resource would, and RFC 7591 registration: what it sends, what it keeps,
and that no secret reaches a message or a repr."""

from __future__ import annotations

import pytest

from reconciler.model import Grant, Provider, Secret
from reconciler.oauth import mcp
from reconciler.oauth.errors import OAuthError, TransientError
from reconciler.oauth.registration import Client, choose_client, register
from reconciler.oauth.resource import discover_resource, parse_challenge, well_known_urls

REGISTERED_SECRET = "reg-client-secret-0123456789abcdef"
REGISTRATION_TOKEN = "reg-access-token-0123456789abcdef"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer", {}),
        (
            'Bearer error="invalid_token", resource_metadata="https://x/.well-known/a"',
            {"error": "invalid_token", "resource_metadata": "https://x/.well-known/a"},
        ),
        (
            'Basic realm="x", Bearer realm="api", scope="read write"',
            {"realm": "api", "scope": "read write"},
        ),
        (
            'bearer error=insufficient_scope,scope="a \\"b\\""',
            {"error": "insufficient_scope", "scope": 'a "b"'},
        ),
        ('Bearer error="x", DPoP algs="ES256"', {"error": "x"}),
    ],
)
def test_the_bearer_challenge_is_parsed(header, expected):
    assert parse_challenge(header) == expected


@pytest.mark.parametrize("header", [None, "", 'Basic realm="x"', "Bearerish x=1"])
def test_no_bearer_challenge(header):
    assert parse_challenge(header) is None


def test_the_well_known_urls_are_path_aware_then_the_root():
    assert well_known_urls("https://mcp.example.com/v1/mcp/") == [
        "https://mcp.example.com/.well-known/oauth-protected-resource/v1/mcp",
        "https://mcp.example.com/.well-known/oauth-protected-resource",
    ]
    assert well_known_urls("https://mcp.example.com") == [
        "https://mcp.example.com/.well-known/oauth-protected-resource"
    ]


def _mcp_provider(stub, **overrides) -> Provider:
    values = {"name": "tools", "client_id": "", "mcp": stub.url("/mcp"), "request_deadline": 5.0}
    values.update(overrides)
    return Provider(**values)


def _resource_metadata(stub, **overrides):
    return {
        "resource": stub.url("/mcp"),
        "authorization_servers": [stub.url("/as")],
        "scopes_supported": ["read", "write"],
        **overrides,
    }


def test_discovery_follows_the_challenge(stub):
    stub.reply(
        "GET",
        "/mcp",
        401,
        headers={
            "WWW-Authenticate": f'Bearer resource_metadata="{stub.url("/meta")}", scope="read"'
        },
    )
    stub.reply(
        "GET",
        "/meta",
        200,
        headers={"Content-Type": "application/json"},
        body=_resource_metadata(stub),
    )
    found = discover_resource(_mcp_provider(stub))
    assert found.resource == stub.url("/mcp")
    assert found.authorization_server == stub.url("/as")
    assert found.scopes == ("read",)
    assert [r.path for r in stub.requests] == ["/mcp", "/meta"]


def test_without_resource_metadata_the_well_known_urls_are_tried_in_order(stub):
    stub.reply("GET", "/mcp", 401, headers={"WWW-Authenticate": "Bearer"})
    stub.reply(
        "GET",
        "/.well-known/oauth-protected-resource",
        200,
        headers={"Content-Type": "application/json"},
        body=_resource_metadata(stub),
    )
    found = discover_resource(_mcp_provider(stub))
    assert found.scopes == ("read", "write")  # no scope in the challenge: scopes_supported
    assert [r.path for r in stub.requests] == [
        "/mcp",
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ]


def test_a_failing_mcp_server_is_transient(stub):
    stub.reply("GET", "/mcp", 503)
    with pytest.raises(TransientError):
        discover_resource(_mcp_provider(stub))


def test_a_challenge_pointing_at_plain_http_off_loopback_is_refused(stub):
    header = {"WWW-Authenticate": 'Bearer resource_metadata="http://evil.example/meta"'}
    stub.reply("GET", "/mcp", 401, headers=header)
    with pytest.raises(OAuthError, match="not https") as caught:
        discover_resource(_mcp_provider(stub))
    assert caught.value.error == "insecure_endpoint"
    assert [r.path for r in stub.requests] == ["/mcp"]


def _as_metadata(stub, **overrides):
    return {
        "issuer": stub.url("/as"),
        "registration_endpoint": stub.url("/register"),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        **overrides,
    }


def test_registration_sends_rfc7591_metadata_and_keeps_what_comes_back(stub):
    answer = {
        "client_id": "c-1",
        "client_secret": REGISTERED_SECRET,
        "registration_access_token": REGISTRATION_TOKEN,
        "registration_client_uri": stub.url("/register/c-1"),
        "token_endpoint_auth_method": "client_secret_basic",
    }
    stub.reply("POST", "/register", 201, headers={"Content-Type": "application/json"}, body=answer)
    client = register(_mcp_provider(stub), _as_metadata(stub), ("read",))
    (sent,) = stub.hits("/register")
    assert sent.json == {
        "client_name": "oauth-reconciler (tools)",
        "redirect_uris": ["http://127.0.0.1/oauth/link/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "read",
    }
    assert client.client_id == "c-1" and client.source == "registered"
    assert client.client_secret == Secret(REGISTERED_SECRET)
    assert client.registration_access_token == Secret(REGISTRATION_TOKEN)
    assert client.token_endpoint_auth_method == "client_secret_basic"
    for shown in (repr(client), str(client)):
        assert REGISTERED_SECRET not in shown and REGISTRATION_TOKEN not in shown


def test_a_bound_provider_and_its_grant_record_show_no_secret(stub):
    client = Client(
        "c-1",
        "registered",
        "client_secret_basic",
        Secret(REGISTERED_SECRET),
        Secret(REGISTRATION_TOKEN),
    )
    binding = mcp.Binding(stub.url("/mcp"), stub.url("/as"), client)
    provider = mcp._bound(
        _mcp_provider(stub), binding, {"token_endpoint": stub.url("/token")}, ("read",)
    )
    assert (
        provider.token_params["resource"]
        == provider.authorization_params["resource"]
        == stub.url("/mcp")
    )
    grant = mcp.record(provider, Grant(name="tools", kind="oauth2"))
    assert grant.registration_access_token == Secret(REGISTRATION_TOKEN)
    for shown in (repr(provider), repr(grant), repr(binding)):
        assert REGISTERED_SECRET not in shown and REGISTRATION_TOKEN not in shown


def test_a_refused_registration_names_the_error_and_echoes_no_secret(stub):
    refusal = {"error": "invalid_redirect_uri", "error_description": "no loopback\x1b[31m here"}
    stub.reply("POST", "/register", 400, headers={"Content-Type": "application/json"}, body=refusal)
    with pytest.raises(OAuthError) as caught:
        register(_mcp_provider(stub), _as_metadata(stub), ())
    message = str(caught.value)
    assert message.startswith("tools: the authorization server refused to register a client")
    assert "invalid_redirect_uri: no loopback\\x1b[31m here" in message
    assert "Nothing was written" in message


def test_public_clients_are_preferred_and_the_default_is_basic(stub):
    stub.reply(
        "POST",
        "/register",
        201,
        headers={"Content-Type": "application/json"},
        body={"client_id": "p"},
    )
    public = register(_mcp_provider(stub), _as_metadata(stub), ())
    assert public.token_endpoint_auth_method == "none" and public.client_secret is None
    register(
        _mcp_provider(stub), _as_metadata(stub, token_endpoint_auth_methods_supported=None), ()
    )
    assert stub.hits("/register")[-1].json["token_endpoint_auth_method"] == "client_secret_basic"


def test_the_client_comes_from_the_declaration_then_a_document_then_registration(stub):
    metadata = _as_metadata(stub, client_id_metadata_document_supported=True)
    declared = choose_client(_mcp_provider(stub, client_id="mine"), metadata, (), None, "x")
    assert (declared.client_id, declared.source) == ("mine", "declared")
    url = "https://c.example/doc.json"
    document = choose_client(_mcp_provider(stub, client_metadata_url=url), metadata, (), None, "x")
    assert (document.client_id, document.source) == (url, "metadata-document")
    assert not stub.requests


def test_a_stored_client_of_another_authorization_server_is_not_reused(stub):
    stub.reply(
        "POST",
        "/register",
        201,
        headers={"Content-Type": "application/json"},
        body={"client_id": "new"},
    )
    grant = Grant(
        name="tools",
        kind="oauth2",
        client_id="old",
        authorization_server="https://old.example",
        extra={"client_source": "registered"},
    )
    same = choose_client(_mcp_provider(stub), _as_metadata(stub), (), grant, "https://old.example")
    assert same.client_id == "old"
    other = choose_client(_mcp_provider(stub), _as_metadata(stub), (), grant, stub.url("/as"))
    assert other.client_id == "new"
