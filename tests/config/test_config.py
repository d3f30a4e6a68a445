"""``reconciler.config``: providers.yaml → Desired, and every way it can be wrong."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler import config
from reconciler.config import (
    ConfigError,
    PromptRequired,
    errors,
    load,
    locate,
    resolve_reference,
    schema,
)
from reconciler.config.schemes import file as file_scheme
from reconciler.model import Desired, Notify, Provider, Secret, SecretSpec

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


@pytest.fixture
def sops_rules(monkeypatch: pytest.MonkeyPatch):
    """Stand-in for reconciler.vault.sopsconfig.rule_recipients: {file name: recipients}."""
    import reconciler.vault.sops.rules as keys

    rules: dict[str, tuple[str, ...] | None] = {}
    calls: list[Path] = []

    def rule_recipients(file_path: Path):
        calls.append(Path(file_path))
        return rules.get(Path(file_path).name, rules.get("*"))

    monkeypatch.setattr(keys, "rule_recipients", rule_recipients)
    rules["calls"] = calls  # type: ignore[assignment]
    return rules


# --------------------------------------------------------------------------- the happy path


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


# --------------------------------------------------------------------------- presets


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


# --------------------------------------------------------------------------- bad inputs

BAD = [
    # (name, document, line of the first issue, substrings of the message)
    (
        "broken-yaml",
        "version: 1\nproviders:\n  github:\n    client_id: x\n   scopes: [a]\n",
        5,
        ["invalid YAML", "indentation"],
    ),
    ("unclosed-flow", "version: 1\nproviders: {github: {client_id: x}\n", 3, ["invalid YAML"]),
    (
        "unknown-key",
        minimal("providers:\n  github:\n    preset: github\n    client_id: x\n    scope: [r]\n"),
        8,
        ["$.providers.github.scope", "unknown key `scope`", "did you mean `scopes`?"],
    ),
    (
        "unknown-top-level-key",
        "version: 1\nprovider:\n  github: {}\n",
        2,
        ["unknown key `provider`", "did you mean `providers`?"],
    ),
    (
        "unknown-key-no-suggestion",
        minimal("defaults:\n  zzzzzz: 1\n"),
        5,
        ["unknown key `zzzzzz`", "refresh_before, keepalive"],
    ),
    (
        "wrong-type",
        minimal("providers:\n  g:\n    preset: github\n    client_id: x\n    scopes: repo\n"),
        8,
        ["$.providers.g.scopes", "expected a list, got a string"],
    ),
    (
        "number-client-id",
        minimal("providers:\n  g:\n    preset: github\n    client_id: 12345\n"),
        7,
        ["expected a string, got a number", "quote"],
    ),
    (
        "bad-grant-name",
        minimal("providers:\n  GitHub:\n    preset: github\n    client_id: x\n"),
        5,
        ["invalid name `GitHub`", "did you mean `github`?"],
    ),
    (
        "bad-secret-name",
        minimal("secrets:\n  my.key:\n    value: prompt\n"),
        5,
        ["invalid name `my.key`", "lowercase"],
    ),
    (
        "http-url",
        minimal(
            "providers:\n  c:\n    client_id: x\n"
            "    authorization_endpoint: http://example.com/authorize\n"
            "    token_endpoint: https://example.com/token\n"
        ),
        7,
        ["$.providers.c.authorization_endpoint", "http://example.com/authorize", "https"],
    ),
    (
        "http-localhost-lookalike",
        minimal("providers:\n  c:\n    client_id: x\n    issuer: http://localhost.evil.com\n"),
        7,
        ["localhost.evil.com", "127.0.0.1"],
    ),
    (
        "http-webhook",
        minimal("notify:\n  webhook: http://hooks.example.com/x\n"),
        5,
        ["$.notify.webhook", "https"],
    ),
    ("version-2", "version: 2\n", 1, ["$.version", "unsupported version `2`", "version: 1"]),
    ("version-missing", "providers: {}\n", 1, ["missing required key `version`"]),
    ("version-string", "version: '1'\n", 1, ["$.version", "unsupported version"]),
    (
        "unknown-preset",
        minimal("providers:\n  g:\n    preset: githb\n    client_id: x\n"),
        6,
        ["unknown preset `githb`", "did you mean `github`?", "known presets: asana"],
    ),
    (
        "missing-client-id",
        minimal("providers:\n  g:\n    preset: github\n"),
        5,
        ["$.providers.g", "missing required key `client_id`"],
    ),
    (
        "typo-client-id",
        minimal("providers:\n  g:\n    preset: github\n    clientid: x\n"),
        7,
        ["unknown key `clientid`", "did you mean `client_id`?"],
    ),
    (
        "duplicate-key",
        minimal("providers:\n  g:\n    preset: github\n    client_id: a\n    client_id: b\n"),
        8,
        ["duplicate key `client_id`", "line 7"],
    ),
    (
        "duplicate-grant",
        minimal("secrets:\n  a: {value: prompt}\n  a: {value: prompt}\n"),
        6,
        ["duplicate key `a`"],
    ),
    (
        "provider-and-secret",
        minimal(
            "providers:\n  openai:\n    preset: github\n    client_id: x\n"
            "secrets:\n  openai:\n    value: prompt\n"
        ),
        9,
        ["$.secrets.openai", "both as a provider (line 5) and as a secret"],
    ),
    (
        "bad-duration",
        minimal("defaults:\n  refresh_before: 5 minutes\n"),
        5,
        ["$.defaults.refresh_before", "invalid duration `5 minutes`", "30s, 5m"],
    ),
    (
        "zero-keepalive",
        minimal("defaults:\n  keepalive: 0d\n"),
        5,
        ["keepalive must be longer than 0s"],
    ),
    (
        "bad-flow",
        minimal("providers:\n  g:\n    preset: github\n    client_id: x\n    flow: device\n"),
        8,
        ["`device` is not one of", "did you mean `device_code`?"],
    ),
    (
        "device-flow-without-endpoint",
        minimal("providers:\n  s:\n    preset: slack\n    client_id: x\n    flow: device_code\n"),
        8,
        ["device_authorization_endpoint", "preset `slack` has no device flow"],
    ),
    (
        "no-token-endpoint",
        minimal(
            "providers:\n  c:\n    client_id: x\n"
            "    authorization_endpoint: https://example.com/a\n"
        ),
        5,
        ["no token_endpoint", "issuer"],
    ),
    (
        "no-authorization-endpoint",
        minimal("providers:\n  c:\n    client_id: x\n    token_endpoint: https://e.com/t\n"),
        5,
        ["authorization_endpoint"],
    ),
    (
        "client-credentials-without-secret",
        minimal(
            "providers:\n  c:\n    client_id: x\n    issuer: https://e.com\n"
            "    flow: client_credentials\n"
        ),
        8,
        ["client_credentials", "needs a client_secret"],
    ),
    (
        "secret-method-without-secret",
        minimal(
            "providers:\n  c:\n    client_id: x\n    issuer: https://e.com\n"
            "    token_endpoint_auth_method: client_secret_post\n"
        ),
        8,
        ["client_secret_post", "needs a client_secret"],
    ),
    (
        "preset-vars-without-preset",
        minimal(
            "providers:\n  c:\n    client_id: x\n    issuer: https://e.com\n"
            "    preset_vars: {tenant: t}\n"
        ),
        8,
        ["`preset_vars` needs `preset`"],
    ),
    (
        "unknown-preset-var",
        minimal(
            "providers:\n  m:\n    preset: microsoft\n    client_id: x\n"
            "    preset_vars:\n      tenat: contoso\n"
        ),
        9,
        ["preset `microsoft` has no variable `tenat`", "did you mean `tenant`?"],
    ),
    (
        "bad-preset-var-value",
        minimal(
            "providers:\n  m:\n    preset: microsoft\n    client_id: x\n"
            "    preset_vars:\n      tenant: evil.com/x?\n"
        ),
        9,
        ["$.providers.m.preset_vars.tenant", "invalid value"],
    ),
    (
        "unfilled-placeholder",
        minimal(
            "providers:\n  c:\n    client_id: x\n"
            "    authorization_endpoint: https://e.com/{tenant}/a\n"
            "    token_endpoint: https://e.com/t\n"
        ),
        7,
        ["unfilled placeholder `{tenant}`"],
    ),
    (
        "empty-provider",
        minimal("providers:\n  g:\n"),
        5,
        ["$.providers.g", "expected a mapping, got an empty value"],
    ),
    ("empty-file", "", 1, ["the file is empty", "version: 1"]),
    ("comment-only", "# nothing\n", 1, ["the file is empty"]),
    ("list-document", "- a\n- b\n", 1, ["expected a mapping, got a list"]),
    ("scalar-document", "hello\n", 1, ["expected a mapping, got a string"]),
    ("two-documents", "version: 1\n---\nversion: 1\n", 2, ["invalid YAML", "document"]),
    ("tab-indent", "version: 1\nproviders:\n\tg: {}\n", 3, ["invalid YAML", "tabs"]),
    ("python-tag", "version: !!python/object:os.system 1\n", 1, ["invalid YAML"]),
    ("bad-int-tag", "version: !!int one\n", 1, ["not a valid"]),
    ("set-tag", "version: 1\nproviders: !!set {a}\n", 2, ["unsupported YAML tag"]),
    ("complex-key", "version: 1\n? [a, b]\n: c\n", 2, ["mapping key"]),
    ("recursive-alias", "version: 1\nproviders: &a\n  x: *a\n", 2, ["alias"]),
    (
        "bad-recipient",
        "version: 1\nstore:\n  recipients: [age1...]\n",
        3,
        ["$.store.recipients[0]", "invalid value `age1...`"],
    ),
    (
        "client-id-with-spaces",
        minimal("providers:\n  g:\n    preset: github\n    client_id: ' Iv1.x'\n"),
        7,
        ["$.providers.g.client_id", "no leading or trailing spaces"],
    ),
    (
        "scopes-with-space",
        minimal(
            "providers:\n  g:\n    preset: github\n    client_id: x\n    scopes: [repo user]\n"
        ),
        8,
        ["$.providers.g.scopes[0]", "without spaces"],
    ),
]


@pytest.mark.parametrize(("name", "text", "line", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(tmp_path: Path, name: str, text: str, line: int, expected: list[str]) -> None:
    path = write(tmp_path, text)
    error = error_of(path)
    message = assert_located(error, path, line)
    for part in expected:
        assert part in message, (part, message)


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert "expands to more than" in str(error_of(path))


def test_several_problems_are_listed_most_relevant_first(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n  g:\n    preset: github\n    scope: [a]\nversion: 2\n",
    )
    error = error_of(path)
    lines = str(error).splitlines()
    assert "unsupported version" in lines[0]
    assert any("unknown key `scope`" in line for line in lines[1:])
    assert any("missing required key `client_id`" in line for line in lines[1:])
    assert all(line.startswith(f"{path}:") for line in lines)
    assert len(error.issues) == len(lines)


def test_many_problems_are_capped(tmp_path: Path) -> None:
    body = "".join(f"  p{i}: {{preset: github}}\n" for i in range(12))
    error = error_of(write(tmp_path, minimal("providers:\n" + body)))
    lines = str(error).splitlines()
    assert len(lines) == errors.MAX_ISSUES + 1
    assert "7 more problem(s)" in lines[-1]


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = str(error_of(path))
    assert message.startswith(str(path)) and "no such file" in message
    assert "reconcile init" in message


def test_config_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    assert_located(error_of(path), path, 2)


def test_literal_secret_is_never_echoed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal(
            f"providers:\n  g:\n    preset: github\n    client_id: x\n"
            f"    client_secret: {SECRET_VALUE}\n"
            f"secrets:\n  k:\n    value: {SECRET_VALUE}\nnotify:\n"
            f"  webhook: https://e.com\n  secret: {SECRET_VALUE}\n"
        ),
    )
    message = str(error_of(path))
    assert SECRET_VALUE not in message
    assert "$.providers.g.client_secret" in message
    assert "$.secrets.k.value" in message
    assert "$.notify.secret" in message
    assert "env:NAME" in message


def test_resolved_values_never_appear_in_errors(tmp_path: Path) -> None:
    write(tmp_path, SECRET_VALUE + "\n", "k.txt")
    path = write(
        tmp_path,
        minimal("secrets:\n  good: {value: file:k.txt}\n  bad: {value: env:NOPE}\n"),
    )
    message = str(unresolved_of(path, "bad", environ={"UNRELATED": SECRET_VALUE}))
    assert "NOPE" in message and SECRET_VALUE not in message


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("ref", "files", "environ", "expected"),
    [
        ("env:TOKEN", {}, {"TOKEN": "t0k"}, "t0k"),
        ("env:TOKEN", {}, {"TOKEN": " spaced \n"}, " spaced \n"),
        ("file:k.txt", {"k.txt": "abc\n"}, {}, "abc"),
        ("file:k.txt", {"k.txt": "abc\r\n\n"}, {}, "abc"),
        ("file:k.txt", {"k.txt": "multi\nline\n"}, {}, "multi\nline"),
        ("file:sub/k.txt", {"sub/k.txt": "deep"}, {}, "deep"),
        ("file:~/k.txt", {"home/k.txt": "from-home\n"}, {"HOME": "{tmp}/home"}, "from-home"),
        ("file:{tmp}/abs.txt", {"abs.txt": "absolute"}, {}, "absolute"),
    ],
)
def test_resolve_reference_ok(
    tmp_path: Path, ref: str, files: dict, environ: dict, expected: str
) -> None:
    for name, content in files.items():
        write(tmp_path, content, name)
    environ = {k: v.replace("{tmp}", str(tmp_path)) for k, v in environ.items()}
    secret = resolve_reference(
        ref.replace("{tmp}", str(tmp_path)), base_dir=tmp_path, owner="secret `k`", environ=environ
    )
    assert isinstance(secret, Secret)
    assert secret.reveal() == expected


@pytest.mark.parametrize(
    ("ref", "files", "environ", "expected"),
    [
        ("env:TOKEN", {}, {}, ["environment variable TOKEN is not set", "export TOKEN"]),
        ("env:TOKEN", {}, {"TOKEN": ""}, ["environment variable TOKEN is empty"]),
        ("file:k.txt", {}, {}, ["k.txt does not exist"]),
        ("file:k.txt", {"k.txt": "\n"}, {}, ["is empty"]),
        ("file:k.txt", {"k.txt": ""}, {}, ["is empty"]),
        ("file:sub", {"sub/x": "x"}, {}, ["is a folder"]),
        ("sops:missing.sops.yaml#a.b", {}, {}, ["SOPS file", "does not exist"]),
        ("not-a-ref", {}, {}, ["not a secret reference", "env:NAME"]),
    ],
)
def test_resolve_reference_errors(
    tmp_path: Path, ref: str, files: dict, environ: dict, expected: list[str]
) -> None:
    for name, content in files.items():
        write(tmp_path, content, name)
    with pytest.raises(ConfigError) as caught:
        resolve_reference(ref, base_dir=tmp_path, owner="secret `k`", environ=environ)
    message = str(caught.value)
    assert message.startswith("secret `k`: ")
    if ref != "not-a-ref":
        assert f"reference `{ref}`" in message
    else:
        assert "not-a-ref" not in message
    for part in expected:
        assert part in message, (part, message)


def test_unreadable_file(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    path = write(tmp_path, "x", "k.txt")
    path.chmod(0)
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_reference("file:k.txt", base_dir=tmp_path, owner="o", environ={})


def test_huge_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * (file_scheme.MAX_SECRET_FILE + 10))
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        resolve_reference("file:big", base_dir=tmp_path, owner="o", environ={})


def test_prompt_is_never_resolved(tmp_path: Path) -> None:
    with pytest.raises(PromptRequired):
        resolve_reference("prompt", base_dir=tmp_path, owner="o", environ={})
    assert issubclass(PromptRequired, ConfigError)


@pytest.fixture
def fake_sops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import reconciler.vault.store as store

    documents: dict[str, object] = {}
    calls: list[tuple[Path, object]] = []

    def decrypt_file(path, identities):
        calls.append((Path(path), identities))
        value = documents[Path(path).name]
        if isinstance(value, Exception):
            raise value
        return value

    monkeypatch.setattr(store, "decrypt_file", decrypt_file, raising=False)
    (tmp_path / "team.sops.yaml").write_text("sops: {}\n")
    documents["calls"] = calls
    return documents


def test_sops_reference(tmp_path: Path, fake_sops: dict) -> None:
    fake_sops["team.sops.yaml"] = {
        "services": {"shared": {"token": "tok-1", "port": 8080}, "list": ["a", "b"]},
        "sops": {"mac": "..."},
    }
    identities = [object()]

    def resolve(key: str) -> str:
        return resolve_reference(
            f"sops:team.sops.yaml#{key}",
            base_dir=tmp_path,
            owner="secret `k`",
            environ={},
            identities=identities,
        ).reveal()

    assert resolve("services.shared.token") == "tok-1"
    assert resolve("services.shared.port") == "8080"
    assert resolve("services.list.1") == "b"
    path, passed = fake_sops["calls"][0]
    assert path == tmp_path / "team.sops.yaml" and passed is identities
    with pytest.raises(ConfigError) as caught:
        resolve("services.shared.tokn")
    message = str(caught.value)
    assert "has no key `services.shared.tokn`" in message
    assert "did you mean `token`?" in message and "tok-1" not in message
    with pytest.raises(ConfigError, match="is a mapping, not a value"):
        resolve("services.shared")


def test_sops_empty_value_and_decrypt_failure(tmp_path: Path, fake_sops: dict) -> None:
    fake_sops["team.sops.yaml"] = {"a": ""}
    with pytest.raises(ConfigError, match="is empty"):
        resolve_reference("sops:team.sops.yaml#a", base_dir=tmp_path, owner="o", environ={})
    fake_sops["team.sops.yaml"] = RuntimeError("no identity can decrypt this file")
    with pytest.raises(ConfigError) as caught:
        resolve_reference("sops:team.sops.yaml#a", base_dir=tmp_path, owner="o", environ={})
    assert "cannot decrypt" in str(caught.value) and "SOPS_AGE_KEY" in str(caught.value)


def test_secret_errors_in_load_point_at_the_reference(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal("secrets:\n  openai:\n    value: env:OPENAI_API_KEY\n  ok:\n    value: prompt\n"),
    )
    message = assert_located(unresolved_of(path, "openai"), path, 6)
    assert "$.secrets.openai.value" in message
    assert "secret `openai`" in message and "OPENAI_API_KEY" in message


def test_missing_file_reference_in_load(tmp_path: Path) -> None:
    path = write(tmp_path, minimal("secrets:\n  k:\n    value: file:nope/key.txt\n"))
    message = assert_located(unresolved_of(path, "k"), path, 6)
    assert "secret `k`" in message and str(tmp_path / "nope" / "key.txt") in message


def test_empty_value_in_load(tmp_path: Path) -> None:
    write(tmp_path, "", "empty.txt")
    path = write(tmp_path, minimal("secrets:\n  k:\n    value: file:empty.txt\n"))
    assert "is empty" in assert_located(unresolved_of(path, "k"), path, 6)


# --------------------------------------------------------------------------- recipients


def test_recipients_from_sops_rules(tmp_path: Path, sops_rules: dict) -> None:
    sops_rules["*"] = (RECIPIENT,)
    sops_rules["b.sops.yaml"] = (OTHER,)
    path = write(
        tmp_path,
        minimal(
            "store: {dir: out}\nproviders:\n  a: {preset: github, client_id: x}\n"
            "secrets:\n  b: {value: prompt}\n",
            recipients=False,
        ),
    )
    desired = load(path, environ={})
    assert desired.recipients == {"a": (RECIPIENT,), "b": (OTHER,)}
    assert sorted(sops_rules["calls"]) == [
        tmp_path / "out/a.sops.yaml",
        tmp_path / "out/b.sops.yaml",
    ]


def test_store_recipients_win_over_sops_rules(tmp_path: Path, sops_rules: dict) -> None:
    sops_rules["*"] = (OTHER,)
    path = write(tmp_path, minimal("secrets:\n  b: {value: prompt}\n"))
    assert load(path, environ={}).recipients == {"b": (RECIPIENT,)}
    assert sops_rules["calls"] == []


def test_no_recipients_anywhere(tmp_path: Path, sops_rules: dict) -> None:
    sops_rules["*"] = None
    path = write(
        tmp_path,
        minimal("secrets:\n  b:\n    value: prompt\n  c: {value: prompt}\n", recipients=False),
    )
    message = assert_located(error_of(path), path, 3)
    assert "`b`, `c`" in message
    assert "store.recipients" in message and ".sops.yaml" in message


def test_recipients_from_a_real_sops_yaml(tmp_path: Path) -> None:
    (tmp_path / ".sops.yaml").write_text(
        "creation_rules:\n"
        f"  - path_regex: ^secrets/special\\.sops\\.yaml$\n    age: {OTHER}\n"
        f"  - path_regex: ^secrets/.*\\.sops\\.yaml$\n    age: {RECIPIENT}\n"
    )
    path = write(
        tmp_path,
        minimal(
            "secrets:\n  special: {value: prompt}\n  plain: {value: prompt}\n", recipients=False
        ),
    )
    desired = load(path, environ={})
    assert desired.recipients == {"special": (OTHER,), "plain": (RECIPIENT,)}


def test_broken_sops_yaml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / ".sops.yaml").write_text("creation_rules: 5\n")
    path = write(tmp_path, minimal("secrets:\n  k: {value: prompt}\n", recipients=False))
    message = str(error_of(path))
    assert ".sops.yaml" in message


# --------------------------------------------------------------------------- the rest


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


def test_locate_is_the_fast_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "version: 1\nstore: {dir: out}\nproviders:\n  b: {oops: 1}\nsecrets:\n  a: {value: x}\n",
    )
    store_dir, names = locate(path)
    assert store_dir == tmp_path / "out"
    assert names == ["a", "b"]
    with pytest.raises(ConfigError):
        locate(write(tmp_path, "- 1\n"))
    assert locate(write(tmp_path, "version: 1\n")) == (tmp_path / "secrets", [])


def test_config_error_shape() -> None:
    error = ConfigError("plain message")
    assert str(error) == "plain message" and error.line is None
    issue = config.Issue("bad", "f.yaml", 3, 4, "$.a", "fix it")
    assert str(ConfigError(issue)) == "f.yaml:3:4: $.a: bad (fix it)"
    assert isinstance(ConfigError(issue), Exception)


def test_validator_is_cached() -> None:
    assert schema._validator() is schema._validator()


def test_importing_config_is_cheap() -> None:
    code = (
        "import sys, reconciler.config\n"
        "heavy = [m for m in ('jsonschema', 'httpx2', 'authlib', 'pyrage') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"


def test_locate_does_not_import_jsonschema(tmp_path: Path) -> None:
    path = write(tmp_path, minimal("secrets:\n  a: {value: prompt}\n"))
    code = (
        "import sys, pathlib, reconciler.config as c\n"
        f"c.locate(pathlib.Path({str(path)!r}))\n"
        "print('jsonschema' in sys.modules)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "False"


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


def test_a_sops_rule_with_keys_reconcile_cannot_write_is_an_error(project) -> None:
    """Never silently reduced to its age keys: the CLI exits 1 naming .sops.yaml."""
    rules = project.root / ".sops.yaml"
    rules.write_text(
        f"creation_rules:\n  - path_regex: secrets/\n    age: {project.recipient}\n"
        "    pgp: FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4\n"
    )
    project.write_config("version: 1\nsecrets:\n  openai:\n    value: env:OPENAI_API_KEY\n")
    run = project.reconcile("plan", env={"OPENAI_API_KEY": "sk-1"})
    assert run.code == 1
    assert str(rules) in run.stderr and "pgp keys" in run.stderr
    assert "Traceback" not in run.stderr
    assert not project.store.exists()


def _pem(label: str) -> str:
    return f"-----BEGIN {label}-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAAS\n-----END {label}-----\n"


@pytest.mark.parametrize(
    "content",
    [
        "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQ\n",
        "# created: 2026-01-01T00:00:00Z\n# public key: age1x\nAGE-SECRET-KEY-1ABC\n",
        _pem("OPENSSH PRIVATE KEY"),
        _pem("PRIVATE KEY"),
        _pem("RSA PRIVATE KEY"),
        _pem("ENCRYPTED PRIVATE KEY"),
    ],
)
def test_a_reference_to_a_key_is_refused(tmp_path: Path, content: str) -> None:
    write(tmp_path, content, "key.txt")
    with pytest.raises(ConfigError) as caught:
        resolve_reference("file:key.txt", base_dir=tmp_path, owner="secret `k`", environ={})
    message = str(caught.value)
    assert message.startswith("secret `k`: reference `file:key.txt`: ")
    assert "age identity or a private key" in message
    assert "KEY-" not in message and "MIIB" not in message
    # A public key or a certificate is not a secret key: it stays usable.
    write(tmp_path, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", "c.pem")
    assert resolve_reference("file:c.pem", base_dir=tmp_path, owner="o", environ={})


def test_a_sops_reference_to_an_identity_is_refused(project) -> None:
    """Through the CLI: nothing is written, exit 1, the grant and reference are named."""
    import pyrage

    from reconciler.vault.sops.document import encode_document

    team = project.root / "team.sops.yaml"
    identity = str(pyrage.x25519.Identity.generate())
    team.write_bytes(
        encode_document(
            {"deploy": {"age_key": identity}}, [project.recipient], encrypted_regex=None
        )
    )
    project.write_config(
        f"version: 1\nstore:\n  recipients: [{project.recipient}]\n"
        "secrets:\n  deploy:\n    value: sops:team.sops.yaml#deploy.age_key\n"
    )
    run = project.reconcile("apply")
    assert run.code == 1
    assert "secret `deploy`" in run.stderr
    assert "sops:team.sops.yaml#deploy.age_key" in run.stderr
    assert "age identity or a private key" in run.stderr
    assert identity not in run.stderr + run.stdout and "Traceback" not in run.stderr
    assert project.snapshot() == {}
