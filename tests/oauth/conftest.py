"""A programmable loopback HTTP server that answers like a given provider documents it."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from reconciler.model import Provider


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, list[str]]
    #: The client's (host, port): one per connection.
    peer: tuple[str, int] = ("", 0)

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, dict[str, str], str | bytes | dict]


class StubServer:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        """Plain HTTP, or HTTPS with the server-side context ``tls``."""
        self.routes: dict[tuple[str, str], Callable[[Recorded], Reply]] = {}
        self.requests: list[Recorded] = []
        handler = type("Handler", (_Handler,), {"stub": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def url(self, path: str) -> str:
        return self.base_url + path

    def route(self, method: str, path: str, responder: Callable[[Recorded], Reply]) -> None:
        self.routes[(method, path)] = responder

    def reply(
        self,
        method: str,
        path: str,
        status: int = 200,
        body: str | bytes | dict = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.route(method, path, lambda request: (status, headers or {}, body))

    def replies(self, method: str, path: str, *answers: Reply) -> None:
        """Answer successive requests with ``answers`` (the last one repeats)."""
        queue = list(answers)

        def responder(request: Recorded) -> Reply:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.route(method, path, responder)

    def hits(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    stub: StubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Recorded(
            self.command,
            parts.path,
            {k.lower(): v for k, v in self.headers.items()},
            body,
            parse_qs(parts.query),
            self.client_address[:2],
        )
        self.stub.requests.append(request)
        responder = self.stub.routes.get((self.command, parts.path))
        if responder is None:
            status, headers, payload = 404, {}, {"error": "not_found"}
        else:
            status, headers, payload = responder(request)
        headers = dict(headers)
        if isinstance(payload, dict):
            payload = json.dumps(payload)
            headers.setdefault("Content-Type", "application/json")
        data = payload.encode() if isinstance(payload, str) else payload
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _handle


@pytest.fixture
def stub():
    server = StubServer()
    yield server
    server.close()


@pytest.fixture
def make_provider(stub):
    """A provider whose endpoints all live on the stub server."""

    def make(**overrides: Any) -> Provider:
        values: dict[str, Any] = {
            "name": "acme",
            "client_id": "client-1",
            "authorization_endpoint": stub.url("/authorize"),
            "token_endpoint": stub.url("/token"),
            "device_authorization_endpoint": stub.url("/device"),
            "revocation_endpoint": stub.url("/revoke"),
            "scopes": ("read", "write"),
        }
        values.update(overrides)
        return Provider(**values)

    return make
