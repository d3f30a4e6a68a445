"""The two gates of `reconcile serve` and where its local secret comes from, over real HTTP."""

from __future__ import annotations

import socket
import stat

import pytest

from reconciler.model import Secret
from reconciler.server import gates

from .support import CONTROL_SECRET, ENV_TOKEN

# --- local gate ------------------------------------------------------------------------------


def test_status_needs_the_local_secret(serve, harness):
    _server, client = serve
    missing = client.get("/v1/status", token=None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"] == "unauthorized"

    wrong = client.get("/v1/status", token=harness.local_secret()[:-1] + "x")
    assert wrong.status_code == 401 and "invalid_token" in wrong.headers["www-authenticate"]
    other_scheme = client.get(
        "/v1/status", token=None, headers={"Authorization": f"Basic {harness.local_secret()}"}
    )
    assert other_scheme.status_code == 401
    assert client.get("/v1/status", token="x").status_code == 401

    assert client.get("/v1/status").status_code == 200


def test_every_v1_route_is_gated_even_unknown_ones(serve):
    _server, client = serve
    for method, path in [
        ("POST", "/v1/links"),
        ("POST", "/v1/links/device"),
        ("POST", "/v1/links/device/poll"),
        ("PUT", "/v1/secrets/openai"),
        ("DELETE", "/v1/secrets/openai"),
        ("GET", "/v1/status"),
        ("GET", "/v1/nothing-here"),
    ]:
        response = client.request(method, path, token=None, json={"name": "demo"})
        assert response.status_code == 401, (method, path)


def test_foreign_host_header_is_refused(serve, harness):
    """A DNS-rebinding page reaches 127.0.0.1 with its own host name in `Host`."""
    server, client = serve
    port = server.port
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", "127.0.0.1"):
        response = client.get("/v1/status", headers={"Host": host})
        assert response.status_code == 421, host
        assert response.json()["error"] == "misdirected_request"
    for host in (f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert client.get("/v1/status", headers={"Host": host}).status_code == 200, host


def test_non_loopback_peer_is_refused_by_the_gate():
    """The peer check, on a scope as uvicorn builds it (a real outside peer needs a second
    network interface; see the next test)."""
    secret = Secret("s" * 40)
    hosts = gates.allowed_hosts(8765)
    headers = [(b"host", b"127.0.0.1:8765"), (b"authorization", b"Bearer " + b"s" * 40)]
    for peer in ("192.168.1.20", "10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", "", None):
        scope = {"type": "http", "client": (peer, 5555) if peer is not None else None}
        refusal = gates.check_local({**scope, "headers": headers}, secret, hosts)
        assert refusal is not None and refusal.status == 403, peer
    for peer in ("127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"):
        scope = {"type": "http", "client": (peer, 5555), "headers": headers}
        assert gates.check_local(scope, secret, hosts) is None, peer
    # A repeated Authorization or Host header is refused, whatever its values.
    doubled = [*headers, (b"authorization", b"Bearer " + b"s" * 40)]
    scope = {"type": "http", "client": ("127.0.0.1", 1), "headers": doubled}
    assert gates.check_local(scope, secret, hosts).status == 401


def _outside_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_outside_peer_is_refused_over_http(harness):
    address = _outside_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    server = harness.start("--host", "0.0.0.0", "--allow-remote")
    assert "warning:" in server.output
    client = server.client(harness.local_secret())
    client.base = f"http://{address}:{server.port}"
    response = client.get("/v1/status", headers={"Host": f"127.0.0.1:{server.port}"})
    assert response.status_code == 403
    client.base = server.url
    assert client.get("/v1/status").status_code == 200


def test_non_loopback_host_needs_allow_remote(harness):
    refused = harness.run_to_exit("--host", "0.0.0.0")
    assert refused.proc.returncode == 1
    assert "--allow-remote" in refused.output and "Traceback" not in refused.output


# --- the local secret ------------------------------------------------------------------------


def test_secret_file_is_created_0600_and_reused(harness):
    first = harness.start()
    path = harness.token_file
    assert str(path) in first.output and "(created)" in first.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    secret = harness.local_secret()
    assert len(secret) >= 32 and secret not in first.output
    assert first.stop() == 0

    second = harness.start()
    assert str(path) in second.output and "(created)" not in second.output
    assert harness.local_secret() == secret
    assert second.client(secret).get("/v1/status").status_code == 200


def test_env_token_wins_over_the_file(harness):
    old = harness.start()
    file_secret = harness.local_secret()
    old.stop()
    server = harness.start(env={"RECONCILER_SERVE_TOKEN": ENV_TOKEN})
    assert "$RECONCILER_SERVE_TOKEN" in server.output and ENV_TOKEN not in server.output
    client = server.client(ENV_TOKEN)
    assert client.get("/v1/status").status_code == 200
    assert client.get("/v1/status", token=file_secret).status_code == 401


def test_env_token_alone_creates_no_file(harness):
    server = harness.start(env={"RECONCILER_SERVE_TOKEN": ENV_TOKEN})
    assert server.client(ENV_TOKEN).get("/v1/status").status_code == 200
    assert not harness.token_file.exists()


def test_short_env_token_is_refused(harness):
    refused = harness.run_to_exit(env={"RECONCILER_SERVE_TOKEN": "short"})
    assert refused.proc.returncode == 1 and "RECONCILER_SERVE_TOKEN" in refused.output


def test_secret_file_readable_by_others_is_refused(harness):
    harness.start().stop()
    harness.token_file.chmod(0o644)
    refused = harness.run_to_exit()
    assert refused.proc.returncode == 1 and "chmod 600" in refused.output


# --- control-plane gate ----------------------------------------------------------------------

INTERNAL = [
    "/internal/oauth-link/v1/start",
    "/internal/oauth-link/v1/device/start",
    "/internal/oauth-link/v1/device/poll",
    "/internal/outbound-secrets/v1/put",
    "/internal/outbound-secrets/v1/delete",
]


@pytest.mark.parametrize(
    "secret",
    [None, "", "x" * 31, "z" * 40, "abcdefg" * 6],
    ids=["unset", "empty", "31 chars", "one repeated char", "7 distinct chars"],
)
def test_internal_routes_are_not_mounted_without_a_long_random_secret(harness, secret):
    env = {} if secret is None else {"RECONCILER_CONTROL_PLANE_SECRET": secret}
    server = harness.start(env=env)
    client = server.client(harness.local_secret())
    for path in INTERNAL:
        headers = {"x-control-plane-secret": secret or "x" * 31}
        response = client.post(path, json={"key": "openai"}, headers=headers)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"
    if secret and len(secret) < 32:
        assert "shorter than 32" in server.output
    elif secret:
        assert "fewer than 8 different characters" in server.output
        assert secret not in server.output


def test_internal_routes_need_the_control_plane_secret(internal):
    server, client = internal
    assert "/internal/* mounted" in server.output
    for path in INTERNAL:
        body = {"key": "openai", "entry_id": "demo"}
        missing = client.post(path, json=body, headers={"x-control-plane-secret": None})
        assert missing.status_code == 401, path
        wrong = client.post(path, json=body, headers={"x-control-plane-secret": "y" * 46})
        assert wrong.status_code == 401, path
        prefix = client.post(
            path, json=body, headers={"x-control-plane-secret": CONTROL_SECRET[:-1]}
        )
        assert prefix.status_code == 401, path


def test_exactly_32_characters_mounts_the_routes(harness):
    secret = "0123abcd" * 4
    server = harness.start(env={"RECONCILER_CONTROL_PLANE_SECRET": secret})
    client = server.client(None)
    response = client.post(
        "/internal/outbound-secrets/v1/delete",
        json={"key": "openai"},
        headers={"x-control-plane-secret": secret},
    )
    assert response.status_code == 204


def test_the_gates_are_never_mixed(internal, harness):
    server, client = internal
    # The control-plane secret does not open /v1, nor the local secret /internal.
    assert client.get("/v1/status").status_code == 401
    local = server.client(harness.local_secret())
    response = local.post("/internal/outbound-secrets/v1/delete", json={"key": "openai"})
    assert response.status_code == 401
    assert local.get("/v1/status").status_code == 200


def test_errors_are_json_and_not_cached(serve):
    _server, client = serve
    for response in (
        client.get("/nothing"),
        client.get("/v1/status", token=None),
        client.request("PATCH", "/v1/status"),
    ):
        assert set(response.json()) == {"error", "message"}
        assert response.headers["cache-control"] == "no-store"
