"""Fixtures of the OAuth tests: the stub server (support.py), providers pointing at it, and a
project declaring a grant on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.model import Grant, Provider, Secret
from reconciler.vault.store import grant_path, write_grant

from .support import STUB_ACCESS, STUB_CLIENT_SECRET, STUB_REFRESH, StubServer


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


@pytest.fixture
def stub_project(project, stub):
    """``project`` (tests/conftest.py) declaring the grant `api` on the stub server, with
    ``client_secret_post``, ``request_deadline: 1s`` and an expired grant file, so that
    `reconcile token api` refreshes. Returns the grant file's path."""
    project.env["API_CLIENT_SECRET"] = STUB_CLIENT_SECRET
    project.write_config(
        "version: 1\n"
        f"store:\n  dir: secrets\n  recipients: [{project.recipient}]\n"
        "defaults:\n  request_deadline: 1s\n"
        "providers:\n  api:\n    client_id: app-1\n"
        "    client_secret: env:API_CLIENT_SECRET\n"
        "    token_endpoint_auth_method: client_secret_post\n"
        f"    token_endpoint: {stub.url('/token')}\n"
        f"    authorization_endpoint: {stub.url('/authorize')}\n"
        "    scopes: [read]\n"
    )
    now = datetime.now(UTC)
    path = grant_path(project.store, "api")
    grant = Grant(
        name="api",
        kind="oauth2",
        flow="authorization_code",
        client_id="app-1",
        scopes=("read",),
        granted_scopes=("read",),
        token_type="Bearer",
        expires_at=now - timedelta(minutes=1),
        obtained_at=now - timedelta(hours=1),
        access_token=Secret(STUB_ACCESS),
        refresh_token=Secret(STUB_REFRESH),
    )
    write_grant(path, grant, [project.recipient])
    return path
