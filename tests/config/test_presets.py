"""``reconciler.config``: a provider's preset fills what providers.yaml leaves out, and what it
says wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config import load

from .support import minimal, write


def test_explicit_fields_override_the_preset(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal(
            """\
providers:
  g:
    preset: google
    client_id: c
    client_secret: env:S
    token_endpoint: https://proxy.example.com/token
    scopes: [https://www.googleapis.com/auth/drive.readonly]
    pkce: false
    scope_separator: ","
    token_endpoint_auth_method: client_secret_basic
    authorization_params:
      prompt: select_account
      include_granted_scopes: null
      login_hint: me@example.com
      max_age: 3600
      flag: true
"""
        ),
    )
    provider = load(path, environ={}).providers["g"]
    assert provider.token_endpoint == "https://proxy.example.com/token"
    assert provider.authorization_endpoint == "https://accounts.google.com/o/oauth2/v2/auth"
    assert provider.scopes == ("https://www.googleapis.com/auth/drive.readonly",)
    assert provider.pkce is False
    assert provider.scope_separator == ","
    assert provider.token_endpoint_auth_method == "client_secret_basic"
    assert provider.authorization_params == {
        "access_type": "offline",
        "prompt": "select_account",
        "login_hint": "me@example.com",
        "max_age": "3600",
        "flag": "true",
    }
    assert provider.quirks == ("incremental_consent",)


def test_default_scopes_come_from_the_preset(tmp_path: Path) -> None:
    path = write(tmp_path, minimal("providers:\n  a: {preset: atlassian, client_id: c}\n"))
    provider = load(path, environ={}).providers["a"]
    assert provider.scopes == ("read:me", "offline_access")
    assert provider.authorization_params == {"audience": "api.atlassian.com", "prompt": "consent"}
    path = write(
        tmp_path, minimal("providers:\n  a: {preset: atlassian, client_id: c, scopes: []}\n")
    )
    assert load(path, environ={}).providers["a"].scopes == ()


@pytest.mark.parametrize(
    ("body", "method"),
    [
        ("preset: github\n    client_secret: env:S", "client_secret_post"),
        ("preset: github", "none"),
        ("preset: notion\n    client_secret: env:S", "client_secret_basic"),
        ("issuer: https://id.example.com\n    client_secret: env:S", "client_secret_basic"),
        ("issuer: https://id.example.com", "none"),
        (
            "issuer: https://id.example.com\n    token_endpoint_auth_method: none\n"
            "    client_secret: env:S",
            "none",
        ),
    ],
)
def test_token_endpoint_auth_method_default(tmp_path: Path, body: str, method: str) -> None:
    path = write(tmp_path, minimal(f"providers:\n  p:\n    client_id: c\n    {body}\n"))
    assert load(path, environ={}).providers["p"].token_endpoint_auth_method == method
