"""Shared values and helpers of the config tests: recipients, the full example, writing a
providers.yaml, and taking the error of a load apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconciler.config import ConfigError, load

RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


OTHER = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"


ROOT = Path(__file__).resolve().parents[2]


SECRET_VALUE = "sk-live-0123456789-DO-NOT-LEAK"


FULL = f"""\
# yaml-language-server: $schema=../schemas/providers.schema.json
version: 1
store:
  dir: grants
  recipients:
    - {RECIPIENT}
    - {OTHER}
defaults:
  refresh_before: 10m
  keepalive: 1h30m
providers:
  github:
    preset: github
    client_id: Iv1.0123456789abcdef
    client_secret: env:GITHUB_CLIENT_SECRET
    scopes: [repo, read:user]
    flow: device_code
  internal-api:
    issuer: https://auth.example.com
    client_id: reconciler
    client_secret: file:~/.config/internal-api/secret
    flow: client_credentials
    scopes: [api.read]
  custom:
    authorization_endpoint: https://example.com/oauth/authorize
    token_endpoint: https://example.com/oauth/token
    revocation_endpoint: https://example.com/oauth/revoke
    token_endpoint_auth_method: client_secret_post
    authorization_params: {{audience: api.example.com}}
    token_params: {{resource: https://api.example.com}}
    client_id: abc
    client_secret: sops:team.sops.yaml#custom.secret
    scopes: [read]
    scope_separator: ","
    pkce: false
    redirect_uri: http://127.0.0.1:8765/oauth/link/callback
  local:
    authorization_endpoint: http://localhost:9000/authorize
    token_endpoint: http://[::1]:9000/token
    client_id: test
secrets:
  openai:
    value: env:OPENAI_API_KEY
  anthropic:
    value: prompt
  from-file:
    value: file:keys/api.txt
notify:
  webhook: https://hooks.example.com/reconciler
  secret: env:NOTIFY_HMAC_KEY
"""


def write(tmp_path: Path, text: str, name: str = "providers.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def minimal(body: str = "", *, recipients: bool = True) -> str:
    store = f"store:\n  recipients: [{RECIPIENT}]\n" if recipients else ""
    return f"version: 1\n{store}{body}"


def error_of(path: Path, **kwargs) -> ConfigError:
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError) as caught:
        load(path, **kwargs)
    return caught.value


def unresolved_of(path: Path, name: str, **kwargs) -> ConfigError:
    """The error of one secret whose reference does not resolve: the load succeeds, the
    grant is set aside with it (SPEC §3: one failure stays with its grant)."""
    kwargs.setdefault("environ", {})
    desired = load(path, **kwargs)
    assert name not in desired.names() or name in desired.unresolved, desired.unresolved
    error = desired.unresolved[name]
    assert isinstance(error, ConfigError)
    return error


def assert_located(error: ConfigError, path: Path, line: int) -> str:
    """The message starts with `<file>:<line>:<col>: ` and is one paragraph."""
    text = str(error)
    assert text.startswith(f"{path}:{line}:"), text
    assert re.match(rf"{re.escape(str(path))}:{line}:\d+: ", text), text
    assert "\n\n" not in text
    assert error.file == str(path) and error.line == line
    return text
