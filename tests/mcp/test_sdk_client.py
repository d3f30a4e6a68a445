"""A real MCP client (the `mcp` SDK's streamable HTTP client) calls a tool on an MCP server built
with the same SDK, protected by the test authorization server, with ``runtime.Auth(NAME)`` after
`reconcile apply` linked the server as a provider."""

from __future__ import annotations

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from reconciler import runtime

from .sdk_server import SdkMcpServer


@pytest.fixture
def sdk_server(auth_server):
    server = SdkMcpServer(auth_server).start()
    yield server
    server.stop()


@pytest.fixture
def in_process(cli, monkeypatch):
    """This process sees the CLI's project as a script would: its age identity and caches."""
    for variable in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "SOPS_AGE_KEY_FILE"):
        monkeypatch.setenv(variable, cli.env[variable])
    monkeypatch.delenv("SOPS_AGE_KEY", raising=False)
    runtime.clear()
    yield cli
    runtime.clear()


def test_the_sdk_client_calls_a_tool_with_runtime_auth(in_process, sdk_server):
    cli = in_process
    cli.config.setdefault("providers", {})["adder"] = {"mcp": sdk_server.url}
    cli.write_config()
    ran = cli.run("apply")
    assert ran.code == 0, ran
    # The scopes came from the SDK's protected resource metadata.
    assert cli.raw("adder")["resource"] == sdk_server.url

    async def call() -> object:
        auth = runtime.Auth("adder", config=cli.project.config)
        async with (
            httpx2.AsyncClient(auth=auth, timeout=30) as http,
            Client(streamable_http_client(sdk_server.url, http_client=http)) as client,
        ):
            return await client.call_tool("add", {"a": 2, "b": 3})

    result = anyio.run(call)
    assert sdk_server.calls == [(2, 3)]
    assert "5" in str(result)


def test_the_sdk_server_refuses_a_token_not_bound_to_it(in_process, sdk_server):
    """The same authorization server's token without the resource binding is refused: the
    binding is what makes the linked grant's token work."""
    auth = in_process.auth
    client = auth.add_client("hand-made", "hand-made-secret-0123456789")
    in_process.client_secrets.append(client.client_secret)
    form = {"grant_type": "client_credentials", "scope": "read"}
    token = httpx2.post(
        auth.endpoint("/token"), data=form, auth=(client.client_id, client.client_secret)
    ).json()["access_token"]
    response = httpx2.post(
        sdk_server.url,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
    )
    assert response.status_code == 401
    assert "resource_metadata=" in response.headers["www-authenticate"]
