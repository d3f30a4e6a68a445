"""An MCP server built with the `mcp` SDK (``MCPServer``, streamable HTTP) and protected by the
test authorization server: the SDK serves its RFC 9728 metadata and answers 401 with the
``resource_metadata`` challenge; tokens are checked by introspection at the authorization
server (RFC 7662) and accepted only when issued for this server (``validate_token_resource``).
It runs under uvicorn on 127.0.0.1, on an ephemeral port, in a thread."""

from __future__ import annotations

import socket
import threading
import time

import httpx2
import uvicorn
from mcp.server import MCPServer
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from .authserver import RS_CLIENT, McpAuthServer


class IntrospectionVerifier:
    """The SDK's ``TokenVerifier``: RFC 7662 introspection at the authorization server."""

    def __init__(self, auth: McpAuthServer) -> None:
        self.auth = auth

    async def verify_token(self, token: str) -> AccessToken | None:
        async with httpx2.AsyncClient(timeout=10) as http:
            response = await http.post(
                self.auth.endpoint("/introspect"), data={"token": token}, auth=RS_CLIENT
            )
        info = response.json()
        if not info.get("active"):
            return None
        return AccessToken(
            token=token,
            client_id=info["client_id"],
            scopes=(info.get("scope") or "").split(),
            expires_at=info.get("exp"),
            resource=info.get("aud"),
            subject=info.get("sub"),
            claims={"iss": info.get("iss")},
        )


class SdkMcpServer:
    def __init__(self, auth: McpAuthServer) -> None:
        self.auth = auth
        self.calls: list[tuple[int, int]] = []
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/mcp"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SdkMcpServer:
        mcp = MCPServer(
            "adder",
            token_verifier=IntrospectionVerifier(self.auth),
            auth=AuthSettings(
                issuer_url=self.auth.issuer,
                resource_server_url=self.url,
                validate_token_resource=True,
                required_scopes=["read"],
            ),
        )

        @mcp.tool()
        def add(a: int, b: int) -> int:
            """Add two numbers."""
            self.calls.append((a, b))
            return a + b

        self.auth.resources.add(self.url)
        config = uvicorn.Config(mcp.streamable_http_app(), log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the MCP server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._socket.close()
