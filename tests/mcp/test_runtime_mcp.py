"""``runtime.Auth`` and `reconcile exec` with an MCP grant, against the protected resource of
this folder: a 401 ``invalid_token`` gets one refresh and one retry; a 403
``insufficient_scope`` marks the grant for a relink that asks for the scopes named, and the
error names them."""

from __future__ import annotations

import sys

import httpx2
import pytest

from reconciler import runtime


@pytest.fixture
def linked(cli, resource_server, monkeypatch):
    """`tools` linked through the CLI; this process sees the project as a script would."""
    cli.declare_mcp("tools", resource_server, scopes=["read"])
    cli.write_config()
    ran = cli.run("apply")
    assert ran.code == 0, ran
    for variable in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "SOPS_AGE_KEY_FILE"):
        monkeypatch.setenv(variable, cli.env[variable])
    monkeypatch.delenv("SOPS_AGE_KEY", raising=False)
    runtime.clear()
    yield cli
    runtime.clear()


def test_an_invalid_token_is_refreshed_once_and_the_request_retried(linked, resource_server):
    auth = linked.auth
    with httpx2.Client(auth=runtime.Auth("tools", config=linked.project.config)) as http:
        assert http.get(resource_server.url).status_code == 200
        with auth.lock:
            for token in auth.tokens:
                token.access_revoked = True  # revoked behind our back
        response = http.post(resource_server.url, json={"jsonrpc": "2.0", "id": 1})
    assert response.status_code == 200
    assert auth.token_calls["refresh_token"] == 1
    assert resource_server.refused == 1 and resource_server.accepted == 2
    # The refresh kept the binding: the new token's audience is the MCP server.
    assert auth.tokens[-1].resource == resource_server.url


def test_insufficient_scope_marks_a_relink_that_asks_for_the_scopes(linked, resource_server):
    auth = linked.auth
    resource_server.required_scopes = ("read", "admin")
    with (
        httpx2.Client(auth=runtime.Auth("tools", config=linked.project.config)) as http,
        pytest.raises(runtime.NeedsRelinkError) as caught,
    ):
        http.get(resource_server.url)
    message = str(caught.value)
    assert "admin" in message and "reconcile link tools" in message
    assert auth.token_calls["refresh_token"] == 0
    raw = linked.raw("tools")
    assert raw["status"] == "needs-relink"
    assert "admin" in raw["status_reason"]

    plan = linked.run("plan")
    assert "relink" in plan.stdout + plan.stderr and "admin" in plan.stdout + plan.stderr
    ran = linked.run("apply")
    assert ran.code == 0, ran
    last = [r for r in auth.requests if r.path == "/authorize"][-1]
    assert set(last.query["scope"][0].split()) == {"read", "admin"}
    assert linked.raw("tools")["status"] == "ok"
    runtime.clear()
    with httpx2.Client(auth=runtime.Auth("tools", config=linked.project.config)) as http:
        assert http.get(resource_server.url).status_code == 200


def test_exec_hands_the_command_a_token_the_mcp_server_accepts(linked, resource_server):
    check = (
        "import os, urllib.request as u\n"
        f"r = u.Request({resource_server.url!r}, headers={{'Authorization': "
        "'Bearer ' + os.environ['MCP_TOKEN']})\n"
        "print(u.urlopen(r).status)\n"
    )
    ran = linked.run("exec", "--env", "MCP_TOKEN=tools", "--", sys.executable, "-c", check)
    assert ran.code == 0, ran
    assert ran.stdout.strip() == "200"
    assert resource_server.accepted == 1
