"""Fixtures for the runtime tests: an isolated environment (age identity, caches), the real
test authorization server, a project whose OAuth grant is linked through it, and a loopback
API server that checks bearer tokens against the authorization server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler import runtime

from ..e2e.authserver import AuthServer
from ..support import new_identity
from .support import CLIENT_ID, CLIENT_SECRET, STATIC_VALUE, Project, providers_yaml


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """``os.environ`` with a fresh age identity and private config/cache folders; the
    runtime's in-process cache is empty before and after."""
    home = tmp_path / "home"
    home.mkdir()
    key_file = tmp_path / "keys" / "keys.txt"
    recipient = new_identity(key_file)
    for variable in ("SOPS_AGE_KEY", "SOPS_AGE_KEY_CMD", runtime.CONFIG_ENV):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(key_file))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("RUNTIME_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("STATIC_VALUE", STATIC_VALUE)
    runtime.clear()
    yield tmp_path, recipient
    runtime.clear()


@pytest.fixture
def auth_clients() -> dict[str, str | None]:
    return {CLIENT_ID: CLIENT_SECRET}


@pytest.fixture
def project(isolated, auth_server: AuthServer) -> Project:
    """A project with the OAuth grant ``api`` linked at the test authorization server and the
    static secret ``static`` written."""
    tmp_path, recipient = isolated
    root = tmp_path / "project"
    root.mkdir()
    project = Project(root, recipient, auth_server)
    project.config.write_text(providers_yaml(recipient, auth_server))
    project.link("api")
    project.put_secret("static", STATIC_VALUE)
    assert auth_server.token_calls == {"authorization_code": 1}
    return project


@dataclass
class Seen:
    authorization: str | None
    body: bytes


@dataclass
class ApiServer:
    """An API on loopback. A bearer token is accepted when the authorization server knows it
    (valid, not revoked), unless it is in ``reject`` or ``always_401`` is set."""

    auth: AuthServer
    reject: set[str] = field(default_factory=set)
    always_401: bool = False
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tokens(self) -> list[str | None]:
        return [s.authorization[len("Bearer ") :] if s.authorization else None for s in self.seen]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up
            super().handle_error(request, client_address)


@pytest.fixture
def api_server(auth_server: AuthServer) -> Iterator[ApiServer]:
    api = ApiServer(auth_server)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            pass

        def _answer(self) -> None:
            body = self._body()
            authorization = self.headers.get("Authorization")
            with api.lock:
                api.seen.append(Seen(authorization, body))
            token = authorization[7:] if authorization and authorization[:7] == "Bearer " else ""
            ok = (
                not api.always_401
                and token not in api.reject
                and api.auth.bearer_user(authorization) is not None
            )
            status, payload = (200, {"ok": True}) if ok else (401, {"error": "invalid_token"})
            data = json.dumps(payload).encode()
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer error="invalid_token"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        do_GET = do_POST = _answer

    httpd = _QuietServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    api.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield api
    httpd.shutdown()
    httpd.server_close()
