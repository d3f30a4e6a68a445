"""``reconciler.config``: secret references (env:, file:, sops:, prompt) and their errors,
which stay with their grant."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config import ConfigError, PromptRequired, resolve_reference
from reconciler.config.schemes import file as file_scheme
from reconciler.model import Secret

from .support import assert_located, minimal, unresolved_of, write


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


def _pem(label: str) -> str:
    return f"-----BEGIN {label}-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAAS\n-----END {label}-----\n"


def _age_identity() -> str:
    import pyrage

    return str(pyrage.x25519.Identity.generate())


@pytest.mark.parametrize(
    "content",
    [
        _age_identity() + "\n",
        "# created: 2026-01-01T00:00:00Z\n# public key: age1x\n" + _age_identity() + "\n",
        _pem("OPENSSH PRIVATE KEY"),
        _pem("PRIVATE KEY"),
        _pem("RSA PRIVATE KEY"),
        _pem("ENCRYPTED PRIVATE KEY"),
    ],
    ids=["age-identity", "age-keys-file", "openssh", "pkcs8", "rsa", "encrypted-pkcs8"],
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
