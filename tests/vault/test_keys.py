"""Identity lookup (as sops does it), recipients, .sops.yaml rules, identity generation."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pyrage
import pytest

from reconciler.vault.errors import MalformedError, NoIdentityError
from reconciler.vault.sops import keys
from reconciler.vault.sops.keys import (
    find_identities,
    generate_identity,
    load_identities,
    parse_identities,
    parse_recipient,
    split_recipients,
)
from reconciler.vault.sops.rules import creation_rule_for, find_sops_config, rule_recipients
from tests.identities import bech32_line, post_quantum_identity_line


def new_key() -> tuple[str, str]:
    identity = pyrage.x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def publics(identities) -> list[str]:
    return [str(i.to_public()) for i in identities]


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """A clean environment: an empty HOME, no SOPS variables (never the real ~/.config)."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "PATH": os.environ.get("PATH", "")}


@pytest.fixture(autouse=True)
def no_real_env(tmp_path, monkeypatch):
    for var in (
        "SOPS_AGE_KEY",
        "SOPS_AGE_KEY_FILE",
        "SOPS_AGE_KEY_CMD",
        "SOPS_AGE_SSH_PRIVATE_KEY_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))


# ---------------------------------------------------------------------------------------
# Identities.


def test_parse_identities_skips_comments_and_blank_lines():
    (k1, r1), (k2, r2) = new_key(), new_key()
    text = f"# created: 2026-01-01T00:00:00Z\n# public key: {r1}\n{k1}\n\n  \n# x\n{k2}\r\n"
    assert publics(parse_identities(text)) == [r1, r2]


def test_parse_identities_errors_never_echo_the_key():
    key, _ = new_key()
    broken = key[:-3] + "QQQ"
    with pytest.raises(ValueError) as caught:
        parse_identities(f"# ok\n{broken}\n", "keys.txt")
    assert "line 2" in str(caught.value) and broken not in str(caught.value)
    with pytest.raises(ValueError, match="not an age identity"):
        parse_identities("hello\n")


def test_identities_of_other_kinds_are_skipped_and_the_rest_used(env, tmp_path):
    key, recipient = new_key()
    pq = post_quantum_identity_line()
    plugin = bech32_line("AGE-PLUGIN-YUBIKEY-", os.urandom(16))
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# post-quantum\n{pq}\n{plugin}\n{key}\n")
    report = find_identities({**env, "SOPS_AGE_KEY_FILE": str(key_file)})
    assert publics(report.identities) == [recipient]
    assert report.errors == []
    assert any("line 2" in note and "post-quantum" in note for note in report.skipped)
    assert any("line 3" in note and "plugin" in note for note in report.skipped)
    assert pq not in report.describe() and plugin not in report.describe()
    # Lines that are no identity at all are still refused, as sops refuses them.
    with pytest.raises(ValueError, match="line 1 is not an age identity"):
        parse_identities(f"AGE-SECRET-KEY-PQ-not bech32\n{key}\n")


def test_lookup_order_env_then_file_then_keys_txt(env, tmp_path):
    (k1, r1), (k2, r2), (k3, r3), (k4, r4) = (new_key() for _ in range(4))
    key_file = tmp_path / "custom" / "keys.txt"
    key_file.parent.mkdir()
    key_file.write_text(f"# public key: {r3}\n{k3}\n")
    config = tmp_path / "xdg"
    (config / "sops" / "age").mkdir(parents=True)
    (config / "sops" / "age" / "keys.txt").write_text(f"{k4}\n")
    env.update(
        SOPS_AGE_KEY=f"{k1}\n# comment\n{k2}",
        SOPS_AGE_KEY_FILE=str(key_file),
        XDG_CONFIG_HOME=str(config),
    )
    report = find_identities(env)
    assert publics(report.identities) == [r1, r2, r3, r4]
    assert list(report.found) == [
        "$SOPS_AGE_KEY",
        str(key_file),
        str(config / "sops" / "age" / "keys.txt"),
    ]
    assert publics(load_identities(env)) == [r1, r2, r3, r4]


def test_each_source_alone(env, tmp_path):
    k, r = new_key()
    assert publics(load_identities({**env, "SOPS_AGE_KEY": k})) == [r]
    f = tmp_path / "k.txt"
    f.write_text(k + "\n")
    assert publics(load_identities({**env, "SOPS_AGE_KEY_FILE": str(f)})) == [r]
    default = Path(env["HOME"]) / ".config" / "sops" / "age" / "keys.txt"
    default.parent.mkdir(parents=True)
    default.write_text(k + "\n")
    assert publics(load_identities(env)) == [r]  # XDG_CONFIG_HOME unset: ~/.config


def test_xdg_config_home_wins_over_home_and_must_be_absolute(env, tmp_path):
    k, r = new_key()
    default = Path(env["HOME"]) / ".config" / "sops" / "age" / "keys.txt"
    default.parent.mkdir(parents=True)
    default.write_text(k + "\n")
    xdg = tmp_path / "elsewhere"
    assert load_identities({**env, "XDG_CONFIG_HOME": str(xdg)}) == []
    assert load_identities({**env, "XDG_CONFIG_HOME": "relative/dir"}) == []
    assert publics(load_identities({**env, "XDG_CONFIG_HOME": ""})) == [r]


def test_key_command(env, tmp_path):
    k, r = new_key()
    script = tmp_path / "print-key.py"
    script.write_text(f"print({k!r})\n")
    found = load_identities({**env, "SOPS_AGE_KEY_CMD": f"{sys.executable} {script}"})
    assert publics(found) == [r]


def test_a_broken_source_does_not_hide_the_others(env, tmp_path):
    k, r = new_key()
    env.update(SOPS_AGE_KEY="not-a-key", SOPS_AGE_KEY_FILE=str(tmp_path / "missing.txt"))
    default = Path(env["HOME"]) / ".config" / "sops" / "age" / "keys.txt"
    default.parent.mkdir(parents=True)
    default.write_text(k + "\n")
    report = find_identities(env)
    assert publics(report.identities) == [r]
    assert any("missing.txt: no such file" in e for e in report.errors)
    assert any("SOPS_AGE_KEY" in e for e in report.errors)


def test_no_identity(env):
    assert load_identities(env) == []
    with pytest.raises(NoIdentityError) as caught:
        load_identities(env, required=True)
    message = str(caught.value)
    for where in ("SOPS_AGE_KEY", "SOPS_AGE_KEY_FILE", "keys.txt", "reconcile init"):
        assert where in message


def test_ssh_identities(env, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    explicit = tmp_path / "deploy_key"
    explicit.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    protected = Path(env["HOME"]) / ".ssh" / "id_ed25519"
    protected.parent.mkdir()
    if shutil.which("ssh-keygen"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(protected)],
            check=True,
            capture_output=True,
        )
    else:
        protected.write_text("-----BEGIN OPENSSH " + "PRIVATE KEY-----\nnot really\n")
    report = find_identities({**env, "SOPS_AGE_SSH_PRIVATE_KEY_FILE": str(explicit)})
    assert list(report.found) == [str(explicit)]
    assert any("passphrase" in e for e in report.errors)  # skipped, never prompted


def test_generate_identity(tmp_path):
    path = tmp_path / "cfg" / "sops" / "age" / "keys.txt"
    recipient = generate_identity(path)
    text = path.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# created: ") and lines[1] == f"# public key: {recipient}"
    assert lines[2].startswith("AGE-SECRET-KEY-1") and len(lines) == 3
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert publics(parse_identities(text)) == [recipient]
    with pytest.raises(FileExistsError):
        generate_identity(path)
    assert path.read_text() == text


def test_normalize_and_identity_recipients():
    k, r = new_key()
    ids = keys.normalize_identities([k, pyrage.x25519.Identity.from_str(k)])
    assert keys.identity_recipients(ids) == {r}


# ---------------------------------------------------------------------------------------
# Recipients.


def test_parse_recipient():
    _, r = new_key()
    assert str(parse_recipient(f"  {r} ")) == r
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ssh = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    parse_recipient(ssh)
    parse_recipient(ssh + " user@host")
    # One character changed (always to a different one) breaks the bech32 checksum.
    typo = r[:-1] + ("q" if r[-1] != "q" else "p")
    for bad in ("", "age1notvalid", "ssh-ed25519 AAAA", "pgp:ABCDEF", typo):
        with pytest.raises(ValueError):
            parse_recipient(bad)


def test_split_recipients():
    assert split_recipients("a, b,,c ,a") == ("a", "b", "c")
    assert split_recipients(["a,b", " c "]) == ("a", "b", "c")
    assert split_recipients(None) == () and split_recipients("") == ()
    with pytest.raises(ValueError):
        split_recipients([1])


# ---------------------------------------------------------------------------------------
# .sops.yaml


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    (root / "secrets" / "deep").mkdir(parents=True)
    return root


def test_config_is_found_upward_from_the_files_folder(repo):
    (repo / ".sops.yaml").write_text("creation_rules: []\n")
    (repo / ".sops.yml").write_text("ignored: true\n")
    assert find_sops_config(repo / "secrets" / "deep") == repo / ".sops.yaml"
    nested = repo / "secrets" / ".sops.yaml"
    nested.write_text("creation_rules: []\n")
    assert find_sops_config(repo / "secrets" / "deep") == nested
    assert find_sops_config(repo) == repo / ".sops.yaml"


def test_no_config(repo):
    assert rule_recipients(repo / "secrets" / "a.sops.yaml") is None


def test_first_matching_rule_wins(repo):
    _, r1 = new_key()
    _, r2 = new_key()
    _, r3 = new_key()
    (repo / ".sops.yaml").write_text(
        "creation_rules:\n"
        "  - path_regex: ^secrets/prod/.*\n"
        f"    age: {r1}\n"
        "  - path_regex: secrets/.*\\.sops\\.yaml$\n"
        f"    age: '{r2} , {r3}'\n"
        "  - age:\n"
        f"      - {r1}\n"
    )
    rule = creation_rule_for(repo / "secrets" / "github.sops.yaml")
    assert rule.index == 1 and rule.recipients == (r2, r3)
    assert rule_recipients(repo / "secrets" / "prod" / "x.sops.yaml") == (r1,)
    assert rule_recipients(repo / "other.yaml") == (r1,)  # catch-all rule, list form


def test_path_regex_is_matched_relative_to_the_config_folder(repo, tmp_path):
    _, r = new_key()
    config = repo / ".sops.yaml"
    config.write_text(f"creation_rules:\n  - path_regex: ^secrets/[^/]+$\n    age: {r}\n")
    assert rule_recipients(repo / "secrets" / "a.sops.yaml") == (r,)
    assert rule_recipients(repo / "secrets" / "deep" / "a.sops.yaml") is None
    # a file outside the config folder is matched by its absolute path
    outside = tmp_path / "secrets" / "b.sops.yaml"
    assert rule_recipients(outside, config) is None


def test_key_groups(repo):
    _, r1 = new_key()
    _, r2 = new_key()
    (repo / ".sops.yaml").write_text(
        "creation_rules:\n"
        "  - path_regex: one/\n"
        "    key_groups:\n"
        "      - age:\n"
        f"          - {r1}\n"
        "        merge:\n"
        "          - age:\n"
        f"              - {r2}\n"
        f"              - {r1}\n"
        "  - path_regex: two/\n"
        "    key_groups:\n"
        f"      - age: [{r1}]\n"
        f"      - age: [{r2}]\n"
    )
    assert set(rule_recipients(repo / "one" / "a.sops.yaml")) == {r1, r2}
    with pytest.raises(MalformedError, match="Shamir"):
        rule_recipients(repo / "two" / "a.sops.yaml")


def test_broken_configs_are_reported(repo):
    config = repo / ".sops.yaml"
    config.write_text("creation_rules: [\n")
    with pytest.raises(MalformedError, match=r"\.sops\.yaml: is not valid YAML"):
        rule_recipients(repo / "a.sops.yaml")
    config.write_text("creation_rules:\n  - path_regex: '('\n")
    with pytest.raises(MalformedError, match="not a valid regex"):
        rule_recipients(repo / "a.sops.yaml")
    config.write_text("creation_rules:\n  - age: age1bogus\n")
    with pytest.raises(MalformedError, match="not a valid age recipient"):
        rule_recipients(repo / "a.sops.yaml")
    config.write_text("destination_rules: []\n")
    assert rule_recipients(repo / "a.sops.yaml") is None


def test_rule_keeps_its_encrypted_regex(repo):
    _, r = new_key()
    (repo / ".sops.yaml").write_text(
        f"creation_rules:\n  - age: {r}\n    encrypted_regex: ^value$\n"
    )
    rule = creation_rule_for(repo / "a.sops.yaml")
    assert rule.recipients == (r,) and rule.encrypted_regex == "^value$"


@pytest.mark.parametrize(
    ("rule", "named"),
    [
        ("  - pgp: ABCDEF\n    age: {r}\n", "pgp keys"),
        ("  - kms: arn:aws:kms:eu-west-1:1:key/x\n    age: {r}\n", "kms keys"),
        ("  - key_groups:\n      - age: [{r}]\n        pgp: [ABCDEF]\n", "pgp keys"),
        ("  - age: {r}\n    mac_only_encrypted: true\n", "mac_only_encrypted"),
    ],
)
def test_rules_that_would_not_be_honoured_are_refused(repo, rule, named):
    _, r = new_key()
    config = repo / ".sops.yaml"
    config.write_text("creation_rules:\n" + rule.format(r=r))
    with pytest.raises(MalformedError) as caught:
        rule_recipients(repo / "secrets" / "a.sops.yaml")
    message = str(caught.value)
    assert str(config) in message and "creation_rules[0]" in message and named in message
    assert "store.recipients" in message
