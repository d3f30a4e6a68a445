"""Fixtures for MCP servers as providers (SPEC §8), over real HTTP on loopback: the
authorization server with dynamic registration, resource indicators and introspection
(authserver.py), a protected resource that checks its tokens' audience (resource.py), and
``cli``, the real `reconcile` command with the scripted browser and the leak check of
tests/e2e/cli_support.py, which here also looks for the registered clients' secrets and
registration access tokens. Every test here is marked ``e2e`` (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import cli_support

from .authserver import RS_CLIENT, McpAuthServer
from .resource import ProtectedResource


@pytest.fixture
def auth_server() -> Iterator[McpAuthServer]:
    server = McpAuthServer().start()
    yield server
    server.stop()


@pytest.fixture
def resource_server(auth_server: McpAuthServer) -> Iterator[ProtectedResource]:
    server = ProtectedResource(auth_server).start()
    yield server
    server.stop()


@pytest.fixture
def other_resource(auth_server: McpAuthServer) -> Iterator[ProtectedResource]:
    """A second MCP server of the same authorization server, at another URL."""
    server = ProtectedResource(auth_server, path="/other/mcp").start()
    yield server
    server.stop()


@pytest.fixture
def cli(project, auth_server: McpAuthServer, tmp_path) -> Iterator[McpSession]:
    env = {
        **project.env,
        "BROWSER": str(cli_support.browser_launcher(tmp_path / "bin")),
        "E2E_BROWSER_LOG": str(tmp_path / "browser.log"),
    }
    env.pop("DISPLAY", None)
    session = McpSession(
        project, auth_server, tmp_path, env, sampler=cli_support.CmdlineSampler().start()
    )
    try:
        yield session
        session.client_secrets.extend(session.registered_secrets())
        session.check_leaks()
    finally:
        session.sampler.stop()


class McpSession(cli_support.E2E):
    auth: McpAuthServer

    def declare_mcp(self, name: str, resource: ProtectedResource, **fields: Any) -> dict:
        entry: dict[str, Any] = {"mcp": resource.url, **fields}
        self.config.setdefault("providers", {})[name] = entry
        return entry

    def registered_secrets(self) -> list[str]:
        """The client secrets and registration access tokens the server handed out."""
        with self.auth.lock:
            return [*self.auth.issued_secrets, RS_CLIENT[1]]
