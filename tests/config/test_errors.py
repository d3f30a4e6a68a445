"""``reconciler.config``: every way providers.yaml can be wrong, each one error located at its
file, line and column, without echoing a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import config
from reconciler.config import ConfigError, errors

from .support import SECRET_VALUE, assert_located, error_of, minimal, unresolved_of, write

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


def test_config_error_shape() -> None:
    error = ConfigError("plain message")
    assert str(error) == "plain message" and error.line is None
    issue = config.Issue("bad", "f.yaml", 3, 4, "$.a", "fix it")
    assert str(ConfigError(issue)) == "f.yaml:3:4: $.a: bad (fix it)"
    assert isinstance(ConfigError(issue), Exception)
