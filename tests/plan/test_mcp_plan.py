"""The plan for MCP grants (SPEC §8), with plain values: a changed `mcp` URL is a relink; a
registered client is not a changed client_id; cosmetic URL spellings are the same server."""

from __future__ import annotations

import pytest

from reconciler.model import canonical_resource
from reconciler.plan import plan

from .support import NOW, actual, desired, github, oauth_grant

URL = "https://mcp.example.com/mcp"


def mcp_provider(**overrides):
    values = dict(client_id="", flow="authorization_code", scopes=(), mcp=URL)
    values.update(overrides)
    return github(**values)


def mcp_grant(**overrides):
    values = dict(
        flow="authorization_code",
        client_id="registered-123",
        scopes=("read",),
        granted_scopes=("read",),
        resource=URL,
        authorization_server="https://auth.example.com",
        extra={"client_source": "registered"},
    )
    values.update(overrides)
    return oauth_grant(**values)


def reasons(provider, grant) -> list[tuple[str, str]]:
    return [(a.action, a.reason) for a in plan(desired([provider]), actual(grant), NOW).actions]


def test_a_linked_mcp_grant_with_a_registered_client_needs_nothing():
    assert reasons(mcp_provider(), mcp_grant()) == []


@pytest.mark.parametrize(
    "spelling", ["HTTPS://MCP.example.com/mcp", "https://mcp.example.com:443/mcp", URL + "#x"]
)
def test_the_same_url_spelled_otherwise_is_the_same_server(spelling):
    assert canonical_resource(spelling) == URL
    assert reasons(mcp_provider(mcp=spelling), mcp_grant()) == []


def test_a_changed_mcp_url_is_a_relink():
    found = reasons(mcp_provider(mcp="https://mcp.example.com/v2/mcp"), mcp_grant())
    assert found == [("relink", f"MCP server changed from {URL} to https://mcp.example.com/v2/mcp")]


def test_a_client_id_declared_or_removed_is_a_relink():
    assert reasons(mcp_provider(client_id="mine"), mcp_grant()) == [("relink", "client_id changed")]
    declared = mcp_grant(extra={"client_source": "declared"}, client_id="mine")
    assert reasons(mcp_provider(), declared) == [("relink", "client_id removed")]


def test_a_changed_client_metadata_url_is_a_relink():
    grant = mcp_grant(
        client_id="https://c.example/a.json", extra={"client_source": "metadata-document"}
    )
    same = mcp_provider(client_metadata_url="https://c.example/a.json")
    assert reasons(same, grant) == []
    other = mcp_provider(client_metadata_url="https://c.example/b.json")
    assert reasons(other, grant) == [("relink", "client_metadata_url changed")]


def test_scopes_declared_later_are_a_relink():
    assert reasons(mcp_provider(scopes=("read", "write")), mcp_grant()) == [
        ("relink", "scopes not granted: write")
    ]


def test_switching_between_an_mcp_server_and_a_plain_provider_is_a_relink():
    plain = oauth_grant(flow="authorization_code", client_id="cid", granted_scopes=())
    assert reasons(mcp_provider(), plain) == [
        ("relink", "declared as an MCP server, but the grant is not bound to one")
    ]
    provider = github(flow="authorization_code", scopes=("read",))
    assert reasons(provider, mcp_grant(client_id="cid")) == [
        ("relink", "no longer declared as an MCP server")
    ]
