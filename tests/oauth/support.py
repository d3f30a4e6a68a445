"""Shared by the OAuth tests: a programmable loopback HTTP server that answers like a given
provider documents it (``StubServer``), the values of the stub's grant, and provider responses."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

from tests.support import serve

SLACK_V2 = {
    # https://api.slack.com/methods/oauth.v2.access (user token install)
    "ok": True,
    "app_id": "A0KRD7HC3",
    "authed_user": {
        "id": "U1234",
        "scope": "chat:write,channels:history",
        "access_token": "xoxp-1234",
        "token_type": "user",
        "refresh_token": "xoxe-1-user",
        "expires_in": 43200,
    },
    "scope": "commands",
    "token_type": "bot",
    "access_token": "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy",
    "bot_user_id": "U0KRQLJ9H",
    "team": {"name": "Slack Softball Team", "id": "T9TK3CUKW"},
    "enterprise": None,
    "is_enterprise_install": False,
}


Reply = tuple[int, dict[str, str], str | bytes | dict | Iterable[bytes]]


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


class StubServer:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        """Plain HTTP, or HTTPS with the server-side context ``tls``."""
        self.routes: dict[tuple[str, str], Callable[[Recorded], Reply]] = {}
        self.requests: list[Recorded] = []
        handler = type("Handler", (_Handler,), {"stub": self})
        self.httpd, self.base_url = serve(handler, tls)

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
        if not isinstance(payload, str | bytes):
            self._stream(status, headers, payload)
            return
        data = payload.encode() if isinstance(payload, str) else payload
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, status: int, headers: dict[str, str], chunks: Iterable[bytes]) -> None:
        chunked = "Content-Length" not in headers
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up
            self.close_connection = True

    do_GET = do_POST = do_DELETE = _handle


#: The credentials of the `api` grant of ``stub_project``. The client secret has characters that
#: read differently in a form body, in JSON and in base64, as a provider may echo them.
STUB_ACCESS = "at-stale-5f1e2d3c4b5a69"


STUB_REFRESH = "rt-live+9a8b/7c6d=5e4f"


STUB_CLIENT_SECRET = 'cs-s3cret+/=&"ü-0042'


def echo(request):
    """A token endpoint that quotes the whole request back in its error description: the form
    body as sent, the form as JSON, and the Authorization header."""
    described = (
        f"bad request {request.body.decode()} as json {json.dumps(request.form)} "
        f"with {request.headers.get('authorization', 'no authorization')}"
    )
    return 400, {}, {"error": "invalid_grant", "error_description": described}


def every_form(client_id: str, *secrets: str) -> list[str]:
    """Each secret raw, form- and URL-encoded, JSON-escaped; the Basic credentials in base64."""
    forms = []
    for value in secrets:
        forms += [value, quote_plus(value), quote(value, safe=""), json.dumps(value)[1:-1]]
    pair = f"{client_id}:{STUB_CLIENT_SECRET}".encode("latin-1")
    return [*forms, base64.b64encode(pair).decode()]


#: A body is sent whole, or (an iterable of chunks) as it is produced: chunked unless the
#: headers give a Content-Length.
