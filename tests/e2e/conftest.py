"""Fixtures for end-to-end tests over real HTTP on the loopback interface: the authorization
server with an issuer path, its clients, a scripted browser, a fake clock, and ``e2e``, the real
`reconcile` command run against the server with a leak check after each test (cli_support.py).
May import tests/support.py and this folder's support modules."""

from __future__ import annotations

import pytest

from . import cli_support
from .authserver import AuthServer
from .browser import ScriptedBrowser


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


@pytest.fixture
def e2e(project, auth_server, tmp_path):
    """The real `reconcile` command against the authorization server, with `$BROWSER` set to
    fake_browser.py; after the test, the leak check of cli_support.py."""
    env = {
        **project.env,
        "BROWSER": str(cli_support.browser_launcher(tmp_path / "bin")),
        "E2E_BROWSER_LOG": str(tmp_path / "browser.log"),
    }
    env.pop("DISPLAY", None)
    session = cli_support.E2E(
        project, auth_server, tmp_path, env, sampler=cli_support.CmdlineSampler().start()
    )
    try:
        yield session
        session.check_leaks()
    finally:
        session.sampler.stop()
