"""Device flows through `reconcile serve` (RFC 8628), approved at the real authorization server."""

from __future__ import annotations

import pytest

from reconciler.vault.store import grant_path

from .support import approve, decrypt, poll

FIELDS = {
    "device_code",
    "user_code",
    "verification_uri",
    "verification_uri_complete",
    "expires_in",
    "interval",
}


class ASClock:
    """The authorization server's clock, moved by the test (no real waiting between polls)."""

    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def as_clock(auth_server):
    clock = ASClock()
    auth_server.clock = clock
    auth_server.device_consent = None  # the user opens the page but decides later
    return clock


def test_device_flow_start_poll_complete(serve, harness, as_clock):
    _server, client = serve
    auth_server = harness.auth_server
    response = client.post("/v1/links/device", json={"name": "gadget"})
    assert response.status_code == 200, response.text
    started = response.json()
    assert set(started) == FIELDS
    assert started["verification_uri"] == auth_server.endpoint("/device")
    assert started["user_code"] in started["verification_uri_complete"]
    assert started["interval"] == 1 and started["expires_in"] == 600
    # The client gets a handle; the provider's device code stays in the server.
    (provider_code,) = auth_server.device_credentials
    assert started["device_code"] != provider_code and provider_code not in response.text

    assert poll(client, started) == {"poll_status": "authorization_pending", "interval": 1}
    as_clock.now += 2
    approve(auth_server, started)
    assert not grant_path(harness.project.store, "gadget").exists()
    done = poll(client, started)
    assert done["poll_status"] == "completed" and done["entry_id"] == "gadget"
    assert done["granted_scopes"] == ["read", "write"] and done["expires_at"]

    grant = decrypt(harness, "gadget")
    assert grant.flow == "device_code" and grant.granted_scopes == ("read", "write")
    assert grant.refresh_token is not None
    polls = auth_server.device_polls
    # The flow is over: polling it again reaches nobody and completes nothing.
    again = poll(client, started)
    assert again["poll_status"] == "error" and again["error"] == "expired_token"
    assert auth_server.device_polls == polls


def test_a_poll_only_continues_the_flow_it_started(serve, harness, as_clock):
    _server, client = serve
    started = client.post("/v1/links/device", json={"name": "gadget"}).json()
    approve(harness.auth_server, started)
    for name in ("demo", "openai", "nope"):
        refused = poll(client, started, name=name)
        assert refused["poll_status"] == "error", name
    forged = {**started, "device_code": started["device_code"][:-2] + "xx"}
    assert poll(client, forged)["poll_status"] == "error"
    assert harness.auth_server.device_polls == 0
    assert not grant_path(harness.project.store, "demo").exists()
    # The real owner still completes it.
    assert poll(client, started)["poll_status"] == "completed"
    # A device code from the provider itself is not accepted in place of the handle.
    other = client.post("/v1/links/device", json={"name": "gadget"}).json()
    (provider_code,) = harness.auth_server.device_credentials
    assert poll(client, {**other, "device_code": provider_code})["poll_status"] == "error"


def test_slow_down_raises_the_interval(serve, harness, as_clock):
    _server, client = serve
    harness.auth_server.force_slow_down = 1
    started = client.post("/v1/links/device", json={"name": "gadget"}).json()
    assert poll(client, started) == {"poll_status": "slow_down", "interval": 6}
    as_clock.now += 7
    assert poll(client, started) == {"poll_status": "authorization_pending", "interval": 6}


def test_denied_device_flow_is_an_error(serve, harness, as_clock):
    _server, client = serve
    started = client.post("/v1/links/device", json={"name": "gadget"}).json()
    approve(harness.auth_server, started, "deny")
    denied = poll(client, started)
    assert denied["poll_status"] == "error" and denied["error"] == "access_denied"
    assert "denied" in denied["message"]
    assert not grant_path(harness.project.store, "gadget").exists()


def test_device_requests_are_checked(serve, harness):
    _server, client = serve
    for name in ("nope", "openai"):
        response = client.post("/v1/links/device", json={"name": name})
        assert response.status_code == 404, name
    response = client.post("/v1/links/device/poll", json={"name": "gadget", "device_code": 7})
    assert response.status_code == 400
    response = client.post("/v1/links/device", json={"name": "gadget", "scopes": "read"})
    assert response.status_code == 400
    assert harness.auth_server.device_credentials == {}


def test_internal_device_flow(internal, harness, as_clock):
    _server, client = internal
    response = client.post("/internal/oauth-link/v1/device/start", json={"entry_id": "gadget"})
    assert response.status_code == 200, response.text
    started = response.json()
    assert set(started) == FIELDS
    path = "/internal/oauth-link/v1/device/poll"
    assert poll(client, started, path=path)["poll_status"] == "authorization_pending"
    as_clock.now += 2
    approve(harness.auth_server, started)
    done = poll(client, started, path=path)
    assert done["poll_status"] == "completed" and done["entry_id"] == "gadget"
    assert decrypt(harness, "gadget").status == "ok"

    assert client.post(path, json={"entry_id": "gadget"}).status_code == 400
    start = "/internal/oauth-link/v1/device/start"
    assert client.post(start, json={"entry_id": "nope"}).status_code == 404
