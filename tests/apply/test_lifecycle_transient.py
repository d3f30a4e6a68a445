"""A provider failing transiently (5xx, 429 + Retry-After) never costs a still-valid token:
the old grant is kept, the token is served, and the provider is left alone for a while."""

from __future__ import annotations

import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler import operations
from reconciler.model import Grant, Secret
from reconciler.vault.store import grant_path, write_grant
from tests.support import new_identity

ACCESS = "at-still-valid-7c1d9e0f2a3b"
REFRESH = "rt-kept-4b5a6c7d8e9f"


class Unavailable(BaseHTTPRequestHandler):
    """A token endpoint that is down: 503 with Retry-After, counting the calls."""

    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"error": "temporarily_unavailable"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "120")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def endpoint():
    Unavailable.calls = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token"
    server.shutdown()
    server.server_close()


@pytest.fixture
def project(tmp_path: Path, monkeypatch, endpoint: str):
    home = tmp_path / "home"
    key_file = tmp_path / "keys.txt"
    recipient = new_identity(key_file)
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(key_file))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    config = tmp_path / "providers.yaml"
    config.write_text(
        "version: 1\n"
        f"store:\n  dir: secrets\n  recipients: [{recipient}]\n"
        "providers:\n  api:\n    client_id: app\n"
        f"    token_endpoint: {endpoint}\n"
        f"    authorization_endpoint: {endpoint.replace('/token', '/authorize')}\n"
        "    scopes: [read]\n"
    )
    return config, recipient


def write(config: Path, recipient: str, expires_in: timedelta) -> Path:
    now = operations.utcnow()
    grant = Grant(
        name="api",
        kind="oauth2",
        flow="authorization_code",
        client_id="app",
        scopes=("read",),
        granted_scopes=("read",),
        token_type="Bearer",
        expires_at=now + expires_in,
        obtained_at=now - timedelta(hours=1),
        access_token=Secret(ACCESS),
        refresh_token=Secret(REFRESH),
    )
    path = grant_path(config.parent / "secrets", "api")
    write_grant(path, grant, [recipient])
    return path


def test_a_due_but_valid_token_is_served_and_the_provider_left_alone(project):
    config, recipient = project
    path = write(config, recipient, timedelta(minutes=2))  # inside refresh_before (5m)
    before = path.read_bytes()
    assert operations.read_token(config, "api").reveal() == ACCESS
    assert Unavailable.calls == 1
    for _ in range(3):  # backing off: no new attempt before Retry-After
        assert operations.read_token(config, "api").reveal() == ACCESS
    assert Unavailable.calls == 1
    assert path.read_bytes() == before, "the grant file is kept as it was"


def test_an_expired_token_is_an_error_and_the_grant_is_kept(project):
    config, recipient = project
    path = write(config, recipient, -timedelta(minutes=1))
    before = path.read_bytes()
    with pytest.raises(Exception) as raised:
        operations.read_token(config, "api")
    message = str(raised.value)
    assert "503" in message and "api" in message
    assert ACCESS not in message and REFRESH not in message
    assert path.read_bytes() == before
    assert Unavailable.calls == 1


def test_apply_reports_the_kept_token(project):
    config, recipient = project
    write(config, recipient, timedelta(minutes=2))
    state = operations.load_state(config)
    plan = operations.make_plan(state, operations.utcnow())
    assert [(a.name, a.action) for a in plan.actions] == [("api", "refresh")]
    [outcome] = list(operations.run_apply(state, plan, operations.utcnow()))
    assert outcome.result == "done"
    assert "kept the current token" in outcome.message
