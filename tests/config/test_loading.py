"""``reconciler.config``: providers.yaml → Desired, the happy path: defaults, paths, YAML
features, the bundled example, durations."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from reconciler import config
from reconciler.config import load
from reconciler.model import Desired, Notify, Provider, Secret, SecretSpec

from .support import FULL, OTHER, RECIPIENT, ROOT, SECRET_VALUE, error_of, minimal, write


def test_full_example_loads_into_desired(tmp_path: Path, monkeypatch) -> None:
    import reconciler.vault.store as store

    home = tmp_path / "home"
    write(tmp_path, f"{SECRET_VALUE}\n", "keys/api.txt")
    path = write(tmp_path, FULL)
    monkeypatch.setattr(
        store, "decrypt_file", lambda p, identities: {"custom": {"secret": "s3"}}, raising=False
    )
    environ = {"OPENAI_API_KEY": "sk-openai", "HOME": str(home)}
    desired = load(path, environ=environ)

    assert isinstance(desired, Desired)
    assert desired.path == path.resolve()
    assert desired.store_dir == tmp_path / "grants"
    assert desired.refresh_before == timedelta(minutes=10)
    assert desired.keepalive == timedelta(hours=1, minutes=30)
    assert desired.names() == sorted(
        ["github", "internal-api", "custom", "local", "openai", "anthropic", "from-file"]
    )
    assert set(desired.recipients) == set(desired.names())
    assert all(r == (RECIPIENT, OTHER) for r in desired.recipients.values())
    assert desired.notify == Notify(
        webhook="https://hooks.example.com/reconciler", secret_ref="env:NOTIFY_HMAC_KEY"
    )

    github = desired.providers["github"]
    assert github == Provider(
        name="github",
        client_id="Iv1.0123456789abcdef",
        flow="device_code",
        scopes=("repo", "read:user"),
        client_secret_ref="env:GITHUB_CLIENT_SECRET",
        preset="github",
        issuer=None,
        authorization_endpoint="https://github.com/login/oauth/authorize",
        token_endpoint="https://github.com/login/oauth/access_token",
        device_authorization_endpoint="https://github.com/login/device/code",
        revocation_endpoint=None,
        token_endpoint_auth_method="client_secret_post",
        scope_separator=" ",
        pkce=True,
        authorization_params={},
        token_params={},
        redirect_uri=None,
        quirks=("form_encoded_token_response", "github_grant_deletion"),
        extras={"api_base": "https://api.github.com"},
    )
    internal = desired.providers["internal-api"]
    assert internal.issuer == "https://auth.example.com"
    assert internal.token_endpoint is None and internal.authorization_endpoint is None
    assert internal.flow == "client_credentials"
    assert internal.client_secret_ref == "file:~/.config/internal-api/secret"  # not resolved
    assert internal.token_endpoint_auth_method == "client_secret_basic"
    assert internal.quirks == () and internal.preset is None

    custom = desired.providers["custom"]
    assert custom.token_endpoint_auth_method == "client_secret_post"
    assert custom.authorization_params == {"audience": "api.example.com"}
    assert custom.token_params == {"resource": "https://api.example.com"}
    assert custom.scope_separator == "," and custom.pkce is False
    assert custom.redirect_uri == "http://127.0.0.1:8765/oauth/link/callback"
    assert custom.revocation_endpoint == "https://example.com/oauth/revoke"

    local = desired.providers["local"]
    assert local.token_endpoint == "http://[::1]:9000/token"
    assert local.token_endpoint_auth_method == "none"
    assert local.scopes == ()

    assert desired.secrets["openai"] == SecretSpec(
        "openai", "env:OPENAI_API_KEY", Secret("sk-openai")
    )
    assert desired.secrets["anthropic"] == SecretSpec("anthropic", "prompt", None)
    assert desired.secrets["from-file"].value.reveal() == SECRET_VALUE  # newline stripped
    assert SECRET_VALUE not in repr(desired)


def test_defaults(tmp_path: Path) -> None:
    desired = load(write(tmp_path, "version: 1\n"), environ={})
    assert desired.store_dir == tmp_path / "secrets"
    assert desired.refresh_before == timedelta(minutes=5)
    assert desired.keepalive == timedelta(days=7)
    assert desired.providers == {} and desired.secrets == {} and desired.recipients == {}
    assert desired.notify is None


def test_every_token_exchange_has_a_30_second_deadline_by_default(tmp_path: Path) -> None:
    body = "providers:\n  gh:\n    preset: github\n    client_id: abc\n"
    desired = load(write(tmp_path, minimal(body)), environ={})
    assert desired.providers["gh"].request_deadline == 30.0
    custom = minimal("defaults:\n  request_deadline: 5s\n" + body)
    assert load(write(tmp_path, custom), environ={}).providers["gh"].request_deadline == 5.0


def test_store_dir_is_relative_to_the_config_file(tmp_path: Path, monkeypatch) -> None:
    path = write(
        tmp_path,
        minimal("store:\n  dir: ../vault/grants\n", recipients=False),
        "conf/providers.yaml",
    )
    monkeypatch.chdir("/")
    desired = load(Path(path), environ={})
    assert desired.store_dir == tmp_path / "vault" / "grants"


def test_relative_config_path(tmp_path: Path, monkeypatch) -> None:
    write(tmp_path, minimal("secrets:\n  k: {value: file:k.txt}\n"))
    write(tmp_path, "v\n", "k.txt")
    monkeypatch.chdir(tmp_path)
    desired = load(Path("providers.yaml"), environ={})
    assert desired.path == tmp_path / "providers.yaml"
    assert desired.store_dir == tmp_path / "secrets"
    assert desired.secrets["k"].value.reveal() == "v"


def test_resolve_values_false_reads_nothing(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal("secrets:\n  a: {value: env:MISSING}\n  b: {value: file:missing.txt}\n"),
    )
    desired = load(path, environ={}, resolve_values=False)
    assert desired.secrets["a"] == SecretSpec("a", "env:MISSING", None)
    assert desired.secrets["b"].value is None


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    text = minimal(
        """\
x-common: &common
  preset: google
  client_secret: env:GOOGLE_SECRET
providers:
  work:
    <<: *common
    client_id: work-id
  home:
    <<: *common
    client_id: home-id
    preset: microsoft
"""
    )
    # x-common is not a known key: anchors must live inside known keys.
    assert "unknown key `x-common`" in str(error_of(write(tmp_path, text)))
    text = minimal(
        """\
providers:
  work: &common
    preset: google
    client_id: work-id
    client_secret: env:GOOGLE_SECRET
  home:
    <<: *common
    client_id: home-id
"""
    )
    desired = load(write(tmp_path, text), environ={})
    assert desired.providers["home"].client_id == "home-id"
    assert desired.providers["home"].preset == "google"
    assert desired.providers["home"].client_secret_ref == "env:GOOGLE_SECRET"


def test_example_config_validates(monkeypatch, sops_rules: dict) -> None:
    """examples/providers.yaml resolves offline, and so do its commented-out providers."""
    sops_rules["*"] = (RECIPIENT,)
    example = ROOT / "examples" / "providers.yaml"
    desired = load(example, environ={})
    assert desired.secrets and all(s.value is not None for s in desired.secrets.values()), (
        "the quickstart's secrets must resolve without prompting"
    )
    import yaml

    data = yaml.safe_load(example.read_text())
    assert "recipients" not in data.get("store", {}), "the lead wires a .sops.yaml instead"

    uncommented = []
    in_providers = False
    for line in example.read_text().splitlines():
        if line.startswith("# providers:"):
            in_providers = True
        if in_providers and line.startswith("#"):
            uncommented.append(line[2:])
        else:
            uncommented.append(line)
    text = "\n".join(uncommented)
    assert "providers:\n  github:" in text
    copy = example.parent / ".uncommented-test.yaml"
    try:
        copy.write_text(text)
        desired = load(copy, environ={}, resolve_values=False)
    finally:
        copy.unlink(missing_ok=True)
    assert {"github", "google", "custom"} <= set(desired.providers)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30), ("5m", 300), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("1h30m", 5400)],
)
def test_parse_duration(text: str, expected: int) -> None:
    assert config.parse_duration(text) == timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["", "5", "5 m", "1.5h", "-1m", "5m\n"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        config.parse_duration(text)
