"""Values and helpers shared by the runtime tests: the project whose grant is linked at the test
authorization server, and its providers.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler import operations
from reconciler.model import Browser, Secret

from ..e2e.authserver import AuthServer
from ..e2e.browser import ScriptedBrowser

CLIENT_ID, CLIENT_SECRET = "runtime-app", "runtime-secret-0123456789"


STATIC_VALUE = "sk-static-5f4e3d2c1b0a99887766"


@dataclass
class Project:
    root: Path
    recipient: str
    auth: AuthServer

    @property
    def config(self) -> Path:
        return self.root / "providers.yaml"

    @property
    def store(self) -> Path:
        return self.root / "secrets"

    def grant_file(self, name: str) -> Path:
        return self.store / f"{name}.sops.yaml"

    def link(self, name: str = "api") -> None:
        """Run the real link flow (authorization code + PKCE) with a scripted browser."""
        browser = Browser(open=ScriptedBrowser(), show=lambda line: None, timeout=10)
        operations.link(self.config, name, browser)

    def put_secret(self, name: str, value: str) -> None:
        operations.put_secret(self.config, name, Secret(value))


def providers_yaml(recipient: str, auth: AuthServer) -> str:
    return (
        "version: 1\n"
        "store:\n"
        "  dir: secrets\n"
        f"  recipients: [{recipient}]\n"
        "providers:\n"
        "  api:\n"
        f"    issuer: {auth.issuer}\n"
        f"    authorization_endpoint: {auth.endpoint('/authorize')}\n"
        f"    token_endpoint: {auth.endpoint('/token')}\n"
        f"    device_authorization_endpoint: {auth.endpoint('/device_authorization')}\n"
        f"    revocation_endpoint: {auth.endpoint('/revoke')}\n"
        "    token_endpoint_auth_method: client_secret_basic\n"
        f"    client_id: {CLIENT_ID}\n"
        "    client_secret: env:RUNTIME_CLIENT_SECRET\n"
        "    scopes: [read, write]\n"
        "secrets:\n"
        "  static:\n"
        "    value: prompt\n"
    )
