"""A small protected resource (an MCP endpoint's HTTP face) on 127.0.0.1 for the MCP tests.

- ``<path>`` (GET or POST): without a valid token, 401 with the challenge
  ``Bearer error="invalid_token", resource_metadata="<metadata URL>"`` (RFC 9728 §5.1, RFC 6750
  §3); a token is valid when the authorization server's introspection (RFC 7662, over HTTP)
  says it is active and its audience (``aud``) is this resource's URL; a valid token without
  ``required_scopes`` gets 403 ``insufficient_scope`` with the scopes in ``scope``; else 200
  with who the token is for;
- ``/.well-known/oauth-protected-resource<path>``: its RFC 9728 metadata.

Knobs: ``challenge`` (``"metadata"``: with ``resource_metadata``; ``"bare"``: ``Bearer`` only;
``"none"``: 200 without any challenge), ``challenge_scope``, ``serve_metadata``,
``metadata_overrides`` (e.g. another ``resource``), ``required_scopes``.
Observations: ``seen`` (the Authorization header of each request to the endpoint),
``accepted``, ``refused``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2

from tests.support import serve

from .authserver import RS_CLIENT, McpAuthServer

WELL_KNOWN = "/.well-known/oauth-protected-resource"


class ProtectedResource:
    def __init__(self, auth: McpAuthServer, path: str = "/mcp") -> None:
        self.auth = auth
        self.path = path
        self.challenge = "metadata"
        self.challenge_scope: str | None = None
        self.serve_metadata = True
        self.metadata_overrides: dict[str, Any] = {}
        self.required_scopes: tuple[str, ...] = ()
        self.scopes_supported = ["read", "write"]
        self.seen: list[str | None] = []
        self.accepted = 0
        self.refused = 0
        self.url = ""
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> ProtectedResource:
        handler = type("Handler", (_Handler,), {"resource": self})
        self._httpd, self.origin = serve(handler)
        self.url = self.origin + self.path
        self.auth.resources.add(self.url)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def metadata_url(self) -> str:
        return self.origin + WELL_KNOWN + self.path

    def metadata(self) -> dict[str, Any]:
        return {
            "resource": self.url,
            "authorization_servers": [self.auth.issuer],
            "scopes_supported": self.scopes_supported,
            "bearer_methods_supported": ["header"],
            **self.metadata_overrides,
        }

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662, over HTTP, as the resource's own client of the authorization server."""
        response = httpx2.post(
            self.auth.endpoint("/introspect"),
            data={"token": token, "token_type_hint": "access_token"},
            auth=RS_CLIENT,
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def verdict(self, authorization: str | None) -> tuple[int, dict[str, Any], str | None]:
        """(status, body, WWW-Authenticate) for a request with ``authorization``."""
        token = (authorization or "")[7:].strip() if authorization else ""
        if authorization and authorization.lower().startswith("bearer ") and token:
            info = self.introspect(token)
            if info.get("active") and info.get("aud") == self.url:
                granted = set((info.get("scope") or "").split())
                missing = [s for s in self.required_scopes if s not in granted]
                if not missing:
                    return 200, {"ok": True, "sub": info.get("sub"), "scope": info["scope"]}, None
                needed = " ".join(self.required_scopes)
                header = (
                    f'Bearer error="insufficient_scope", scope="{needed}", '
                    f'resource_metadata="{self.metadata_url}", '
                    'error_description="more scopes are needed"'
                )
                return 403, {"error": "insufficient_scope"}, header
        if self.challenge == "none":
            return 200, {"ok": True, "anonymous": True}, None
        parts = ['Bearer error="invalid_token"']
        if self.challenge == "metadata":
            parts.append(f'resource_metadata="{self.metadata_url}"')
        if self.challenge_scope:
            parts.append(f'scope="{self.challenge_scope}"')
        if self.challenge == "bare" and not token:
            parts = ["Bearer"]
        return 401, {"error": "invalid_token"}, ", ".join(parts)


class _Handler(BaseHTTPRequestHandler):
    resource: ProtectedResource
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any], challenge: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if challenge:
            self.send_header("WWW-Authenticate", challenge)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        resource = self.resource
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        if path == WELL_KNOWN + resource.path and self.command == "GET":
            if not resource.serve_metadata:
                self._send(404, {"error": "not_found"})
            else:
                self._send(200, resource.metadata())
            return
        if path != resource.path:
            self._send(404, {"error": "not_found"})
            return
        authorization = self.headers.get("Authorization")
        status, body, challenge = resource.verdict(authorization)
        with resource.lock:
            resource.seen.append(authorization)
            if authorization:
                if status == 200:
                    resource.accepted += 1
                else:
                    resource.refused += 1
        self._send(status, body, challenge)
