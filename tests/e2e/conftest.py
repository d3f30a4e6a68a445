"""Fixtures for end-to-end tests over real HTTP on the loopback interface."""

from __future__ import annotations

import pytest

from .authserver import AuthServer
from .browser import ScriptedBrowser


@pytest.fixture
def auth_server():
    """A real Authlib authorization server on 127.0.0.1 (ephemeral port), empty of clients."""
    server = AuthServer().start()
    yield server
    server.stop()


@pytest.fixture
def tenant_server():
    """The same server with an issuer that has a path (RFC 8414 §3.1 path insertion)."""
    server = AuthServer(issuer_path="/tenants/acme").start()
    yield server
    server.stop()


@pytest.fixture
def confidential_client(auth_server):
    return auth_server.add_client("conf-app", "conf-secret-0123456789")


@pytest.fixture
def public_client(auth_server):
    return auth_server.add_client("public-app")


@pytest.fixture
def browser():
    return ScriptedBrowser()


class FakeClock:
    """Virtual seconds shared by the client's ``sleep``/``clock`` and the server's clock."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.on_sleep = None

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))


@pytest.fixture
def fake_clock(auth_server):
    clock = FakeClock()
    auth_server.clock = clock.time
    return clock
