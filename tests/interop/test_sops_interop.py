"""Byte compatibility with the real ``sops`` (and ``age``) binaries, in both directions.

Every sops call runs in a temporary working folder with ``SOPS_AGE_KEY_FILE`` pointing at a
temporary key file and ``HOME`` at a temporary folder, so the real ~/.config is never used.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyrage
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.config.references import resolve_reference
from reconciler.model import Grant, Secret
from reconciler.vault.errors import VaultError
from reconciler.vault.sops import document as sops
from reconciler.vault.sops import keys
from reconciler.vault.sops import rules as sopsconfig
from reconciler.vault.sops.scalars import UnsupportedValue, to_bytes
from reconciler.vault.sops.syntax import compose_documents, scalar_value
from reconciler.vault.store import (
    DecryptError,
    TamperedError,
    decrypt_file,
    grant_path,
    read_grant,
    write_grant,
)
from tests.identities import post_quantum_identity_line
from tests.support import new_identity, sops_binary

SOPS = sops_binary()
#: Optional system tools (not test dependencies); without them the tests use the library.
AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")

REGEX = sops.GRANT_ENCRYPTED_REGEX


@dataclasses.dataclass
class Key:
    file: Path
    identity: object
    recipient: str


class Env:
    """A temporary world for sops: cwd, HOME, key files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.work = root / "work"
        self.home.mkdir(parents=True)
        self.work.mkdir()
        self.keys = [self._key(i) for i in range(3)]

    def _key(self, i: int) -> Key:
        path = self.root / f"key{i}.txt"
        if AGE_KEYGEN:
            subprocess.run([AGE_KEYGEN, "-o", str(path)], check=True, capture_output=True)
        else:
            keys.generate_identity(path)
        identity = keys.parse_identities(path.read_text())[0]
        return Key(path, identity, str(identity.to_public()))

    def sops(
        self, *args: str, key: Key | None = None, check: bool = True, extra_env=None
    ) -> subprocess.CompletedProcess:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "SOPS_DISABLE_VERSION_CHECK": "1",
            "SOPS_AGE_KEY_FILE": str((key or self.keys[0]).file),
            **(extra_env or {}),
        }
        done = subprocess.run(
            [SOPS, *args], cwd=self.work, env=env, capture_output=True, text=True, timeout=60
        )
        if check and done.returncode != 0:
            raise AssertionError(f"sops {' '.join(args)} failed: {done.stderr}")
        return done


@pytest.fixture
def world(tmp_path, monkeypatch) -> Env:
    for var in ("SOPS_AGE_KEY", "SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY_CMD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    return Env(tmp_path)


def grant(**changes) -> Grant:
    base = Grant(
        name="github",
        kind="oauth2",
        flow="authorization_code",
        client_id="12345",
        token_endpoint="https://github.com/login/oauth/access_token",
        scopes=("repo", "read:user", "yes"),
        granted_scopes=("repo",),
        token_type="bearer",
        status_reason="invalid_grant: it's # revoked",
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
        obtained_at=datetime(2025, 12, 31, 23, tzinfo=UTC),
        access_token=Secret("gho_access"),
        refresh_token=Secret("ghr_refresh: with 'quotes' and\nnewline"),
        extra={"instance_url": "https://x.example.com"},
    )
    return dataclasses.replace(base, **changes)


def store_file(world: Env, name: str = "github") -> Path:
    folder = world.work / "secrets"
    folder.mkdir(exist_ok=True)
    return grant_path(folder, name)


# ---------------------------------------------------------------------------------------
# Our files → sops


def test_sops_decrypts_our_file_with_each_recipient(world):
    path = store_file(world)
    g = grant()
    write_grant(path, g, [k.recipient for k in world.keys[:2]])
    for key in world.keys[:2]:
        out = yaml.safe_load(world.sops("-d", str(path), key=key).stdout)
        assert out["access_token"] == "gho_access"
        assert out["refresh_token"] == "ghr_refresh: with 'quotes' and\nnewline"
        assert out["scopes"] == ["repo", "read:user", "yes"]
        assert out["client_id"] == "12345"
        assert out["status_reason"] == "invalid_grant: it's # revoked"
        assert out["extra"] == {"instance_url": "https://x.example.com"}
        assert "sops" not in out
    # a recipient not in the file cannot
    assert world.sops("-d", str(path), key=world.keys[2], check=False).returncode != 0


def test_sops_extract_value(world):
    path = store_file(world, "openai")
    write_grant(
        path,
        Grant(name="openai", kind="secret", value=Secret("sk-abc:#é")),
        [world.keys[0].recipient],
    )
    assert world.sops("-d", "--extract", '["value"]', str(path)).stdout == "sk-abc:#é"
    assert world.sops("-d", "--extract", '["kind"]', str(path)).stdout == "secret"


def test_sops_rejects_what_we_reject(world):
    path = store_file(world)
    write_grant(path, grant(), [world.keys[0].recipient])
    path.write_text(path.read_text().replace("    - read:user\n", "    - admin:org\n"))
    done = world.sops("-d", str(path), check=False)
    assert done.returncode != 0 and "MAC mismatch" in done.stderr
    with pytest.raises(TamperedError):
        read_grant(path, [world.keys[0].identity])


def test_updatekeys_with_a_sops_yaml_then_we_read(world):
    path = store_file(world)
    k0, k1, k2 = world.keys
    write_grant(path, grant(), [k0.recipient])
    (world.work / ".sops.yaml").write_text(
        "creation_rules:\n"
        "  - path_regex: secrets/.*\\.sops\\.yaml$\n"
        f"    age: {k1.recipient},{k2.recipient}\n"
    )
    world.sops("updatekeys", "-y", str(path), key=k0)
    back = read_grant(path, [k2.identity])
    assert back.recipients == (k1.recipient, k2.recipient)
    assert back.refresh_token.reveal() == grant().refresh_token.reveal()
    assert read_grant(path, [k1.identity]).access_token.reveal() == "gho_access"
    with pytest.raises(DecryptError):
        read_grant(path, [k0.identity])
    # and our .sops.yaml reading agrees with sops about the recipients
    assert sopsconfig.rule_recipients(path) == (k1.recipient, k2.recipient)


def test_rotate_then_we_read(world):
    path = store_file(world)
    write_grant(path, grant(), [world.keys[0].recipient, world.keys[1].recipient])
    before = yaml.safe_load(path.read_text())["sops"]["age"][0]["enc"]
    world.sops("rotate", "-i", str(path))
    after = yaml.safe_load(path.read_text())["sops"]["age"][0]["enc"]
    assert before != after
    for key in world.keys[:2]:
        back = read_grant(path, [key.identity])
        assert back.access_token.reveal() == "gho_access"
        assert back.expires_at == datetime(2026, 1, 1, tzinfo=UTC)


def test_sops_set_then_we_read(world):
    path = store_file(world)
    write_grant(path, grant(), [world.keys[0].recipient])
    world.sops("set", str(path), '["scopes"][1]', '"admin:org"')
    world.sops("set", str(path), '["access_token"]', '"gho_new"')
    world.sops("set", str(path), '["expires_at"]', '"2027-02-03T04:05:06Z"')
    assert b"gho_new" not in path.read_bytes()
    back = read_grant(path, [world.keys[0].identity])
    assert back.scopes == ("repo", "admin:org", "yes")
    assert back.access_token.reveal() == "gho_new"
    assert back.expires_at == datetime(2027, 2, 3, 4, 5, 6, tzinfo=UTC)


def changed_lines(before: bytes, after: bytes) -> list[str]:
    """The lines of ``after`` that a line diff against ``before`` marks as new."""
    diff = difflib.ndiff(before.decode().splitlines(), after.decode().splitlines())
    return [line[2:] for line in diff if line.startswith("+ ")]


def data_key_of(text: bytes, key: Key) -> bytes:
    """The data key of a file, opened with ``key`` straight from its first age entry."""
    return pyrage.decrypt(yaml.safe_load(text)["sops"]["age"][0]["enc"].encode(), [key.identity])


def changed_keys(lines: list[str]) -> set[str]:
    """The keys of changed ``key: value`` lines."""
    return {line.strip().split(":")[0] for line in lines}


def test_sops_set_on_our_file_is_a_small_diff(world):
    path = store_file(world)
    write_grant(path, grant(), [world.keys[0].recipient, world.keys[1].recipient])
    ours = path.read_bytes()
    world.sops("set", str(path), '["status_reason"]', '"rotated"')
    changed = changed_lines(ours, path.read_bytes())
    # sops keeps the data key and re-emits the age entries: same text, same indentation.
    assert changed[0] == "status_reason: rotated"
    assert changed_keys(changed[1:]) <= {"lastmodified", "mac"}


def test_our_rewrite_keeps_the_data_key_while_the_recipients_stay(world):
    path = store_file(world)
    both = [world.keys[0].recipient, world.keys[1].recipient]
    write_grant(path, grant(), both)
    first = path.read_bytes()
    linked = read_grant(path, [world.keys[0].identity])
    rotated = dataclasses.replace(linked, refresh_token=Secret("ghr_rotated"))
    write_grant(path, rotated, both)
    second = path.read_bytes()
    changed = changed_lines(first, second)
    # Like `sops set`: the data key, its age entries and the unchanged access token stay.
    assert changed[0].startswith("refresh_token: ENC[")
    assert changed_keys(changed[1:]) <= {"lastmodified", "mac"}, changed
    read_grant(path, [world.keys[1].identity])
    write_grant(path, dataclasses.replace(rotated, status="needs-relink"), both)
    changed = changed_lines(second, path.read_bytes())
    assert changed[0] == "status: needs-relink"
    assert changed_keys(changed[1:]) <= {"lastmodified", "mac"}, changed
    assert world.sops("-d", "--extract", '["refresh_token"]', str(path)).stdout == "ghr_rotated"
    assert data_key_of(path.read_bytes(), world.keys[0]) == data_key_of(first, world.keys[0])
    # Fewer recipients: a new data key, so the removed one cannot read what comes next.
    read_grant(path, [world.keys[0].identity])
    write_grant(path, linked, [world.keys[0].recipient])
    assert data_key_of(path.read_bytes(), world.keys[0]) != data_key_of(first, world.keys[0])


def test_a_shamir_grant_file_is_not_rewritten_to_one_group(world):
    (world.work / ".sops.yaml").write_text(shamir_rules([k.recipient for k in world.keys]))
    path = store_file(world)
    path.write_text(PLAIN_GRANT)
    world.sops("-e", "-i", str(path))
    before = path.read_bytes()
    back = read_grant(path, [k.identity for k in world.keys[:2]])
    with pytest.raises(VaultError, match="Shamir"):
        write_grant(path, back, [k.recipient for k in world.keys])
    assert path.read_bytes() == before


def test_sops_edit_with_an_editor_then_we_read(world):
    path = store_file(world)
    write_grant(path, grant(), [world.keys[0].recipient])
    editor = world.root / "editor.py"
    editor.write_text(
        "import sys\n"
        "p = sys.argv[1]\n"
        "t = open(p).read().replace('token_type: bearer', 'token_type: Bearer')\n"
        "t = t.replace('obtained_at: 2025-12-31T23:00:00Z', 'obtained_at: 2025-12-31 23:30:00')\n"
        "open(p, 'w').write(t + '# edited by hand\\n')\n"
    )
    world.sops("edit", str(path), extra_env={"EDITOR": f"{sys.executable} {editor}"})
    back = read_grant(path, [world.keys[0].identity])
    assert back.token_type == "Bearer"
    assert back.obtained_at == datetime(2025, 12, 31, 23, 30, tzinfo=UTC)


def test_ssh_recipient_decrypts_with_sops(world):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = world.root / "id_ed25519"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    path = store_file(world)
    write_grant(path, grant(), [public.decode() + " me@host"])
    out = world.sops(
        "-d",
        "--extract",
        '["access_token"]',
        str(path),
        extra_env={"SOPS_AGE_SSH_PRIVATE_KEY_FILE": str(private)},
    )
    assert out.stdout == "gho_access"


def test_generated_identity_works_with_age_and_sops(world):
    key_file = world.root / "generated" / "keys.txt"
    recipient = keys.generate_identity(key_file)
    if AGE_KEYGEN:
        derived = subprocess.run(
            [AGE_KEYGEN, "-y", str(key_file)], check=True, capture_output=True, text=True
        )
        assert derived.stdout.strip() == recipient
    if AGE:
        sealed = pyrage.encrypt(b"hello", [pyrage.x25519.Recipient.from_str(recipient)])
        opened = subprocess.run(
            [AGE, "-d", "-i", str(key_file)], input=sealed, check=True, capture_output=True
        )
        assert opened.stdout == b"hello"
    path = store_file(world)
    write_grant(path, grant(), [recipient])
    out = world.sops(
        "-d", "--extract", '["access_token"]', str(path), key=Key(key_file, None, recipient)
    )
    assert out.stdout == "gho_access"


# ---------------------------------------------------------------------------------------
# sops files → us


PLAIN_GRANT = """\
# a hand-written grant
name: github
kind: oauth2
status: ok
flow: device_code
client_id: '0x10'
token_endpoint: https://github.com/login/oauth/access_token
scopes:
  - repo
  - yes
granted_scopes: [repo]
token_type: bearer
expires_at: 2026-01-01T00:00:00Z
obtained_at: 2025-12-31 23:00:00
extra:
  instance_url: https://x.example.com
  note: ~
access_token: gho_access
refresh_token: ghr_refresh
"""


def test_we_read_a_grant_encrypted_by_sops(world):
    plain = world.work / "plain.yaml"
    plain.write_text(PLAIN_GRANT)
    recipients = f"{world.keys[0].recipient},{world.keys[1].recipient}"
    out = world.sops("-e", "--age", recipients, "--encrypted-regex", REGEX, str(plain))
    path = store_file(world)
    path.write_text(out.stdout)
    assert "gho_access" not in out.stdout
    for key in world.keys[:2]:
        back = read_grant(path, [key.identity])
        assert back.scopes == ("repo", "yes")
        assert back.client_id == "0x10"
        assert back.expires_at == datetime(2026, 1, 1, tzinfo=UTC)
        assert back.obtained_at == datetime(2025, 12, 31, 23, tzinfo=UTC)
        assert back.access_token.reveal() == "gho_access"
        assert back.recipients == (world.keys[0].recipient, world.keys[1].recipient)
    with pytest.raises(TamperedError):
        path.write_text(out.stdout.replace("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"))
        read_grant(path, [world.keys[0].identity])


def test_a_grant_file_whose_mac_skips_plaintext_is_refused(world):
    plain = world.work / "plain.yaml"
    plain.write_text(PLAIN_GRANT)
    recipient = world.keys[0].recipient
    out = world.sops(
        "-e", "--mac-only-encrypted", "--encrypted-regex", REGEX, "--age", recipient, str(plain)
    )
    path = store_file(world)
    path.write_text(out.stdout.replace("    - repo\n", "    - repo\n    - admin\n", 1))
    assert "admin" in world.sops("-d", str(path)).stdout  # sops does not notice the change
    for identities in (None, [world.keys[0].identity]):
        with pytest.raises(VaultError, match="mac_only_encrypted"):
            read_grant(path, identities)


def test_we_read_a_sops_yaml_key_groups_file(world):
    (world.work / ".sops.yaml").write_text(
        "creation_rules:\n"
        "  - path_regex: \\.sops\\.yaml$\n"
        f"    encrypted_regex: '{REGEX}'\n"
        "    key_groups:\n"
        f"      - age: ['{world.keys[0].recipient}', '{world.keys[1].recipient}']\n"
    )
    path = store_file(world)
    path.write_text(PLAIN_GRANT)
    world.sops("-e", "-i", str(path))
    back = read_grant(path, [world.keys[1].identity])
    assert back.refresh_token.reveal() == "ghr_refresh"
    assert sopsconfig.rule_recipients(path) == (world.keys[0].recipient, world.keys[1].recipient)


def shamir_rules(recipients: list[str], threshold: int = 2) -> str:
    """A .sops.yaml splitting the data key among one key group per recipient."""
    groups = "".join(f"      - age: ['{r}']\n" for r in recipients)
    return (
        "creation_rules:\n"
        "  - path_regex: \\.sops\\.yaml$\n"
        f"    encrypted_regex: '{REGEX}'\n"
        f"    shamir_threshold: {threshold}\n"
        f"    key_groups:\n{groups}"
    )


def test_we_read_a_shamir_file_with_enough_key_groups(world):
    (world.work / ".sops.yaml").write_text(shamir_rules([k.recipient for k in world.keys]))
    path = store_file(world)
    path.write_text(PLAIN_GRANT)
    world.sops("-e", "-i", str(path))
    assert "shamir_threshold: 2" in path.read_text()
    plain = read_grant(path, None)  # plan and status: no key needed
    assert plain.scopes == ("repo", "yes") and not plain.decrypted
    assert plain.recipients == tuple(k.recipient for k in world.keys)
    for pair in ((0, 1), (0, 2), (1, 2)):
        back = read_grant(path, [world.keys[i].identity for i in pair])
        assert back.refresh_token.reveal() == "ghr_refresh"
    with pytest.raises(DecryptError, match=r"3 key groups .* 2 of them must open it"):
        read_grant(path, [world.keys[1].identity])


def test_a_shamir_grant_is_listed_by_plan_and_status(project):
    others = [new_identity(project.root.parent / f"group{i}.txt") for i in (1, 2)]
    (project.root / ".sops.yaml").write_text(shamir_rules([project.recipient, *others]))
    project.store.mkdir()
    path = project.store / "openai.sops.yaml"
    path.write_text("name: openai\nkind: secret\nvalue: sk-1\n")
    sops = [SOPS, "-e", "-i", str(path)]
    subprocess.run(sops, cwd=project.root, env=project.env, check=True, capture_output=True)
    recipients = ", ".join([project.recipient, *others])
    project.write_config(
        f"version: 1\nstore:\n  recipients: [{recipients}]\n"
        "secrets:\n  openai:\n    value: prompt\n"
    )
    status = project.reconcile("status", "-o", "json")
    assert status.code == 0, status.stderr
    (entry,) = json.loads(status.stdout)["grants"]
    assert entry["name"] == "openai" and entry["status"] == "ok"
    plan = project.reconcile("plan", "--exit-code", env={"SOPS_AGE_KEY_FILE": "/nonexistent"})
    assert plan.code == 0, plan.stderr + plan.stdout


GENERIC = """\
# top comment
db:
  password: p4ss  # inline comment
  port: 5432
  ratio: 0.25
  big: 1e3
  tls: true
  hex: 0x1F
  when: 2026-01-01
  empty: ""
  nothing: null
list:
  - a
  - k: v
    n: 1
  - [1, 2.5, false]
public_unencrypted: visible
"""


def test_decrypt_file_reads_a_default_sops_file(world):
    plain = world.work / "other.yaml"
    plain.write_text(GENERIC)
    path = world.work / "other.sops.yaml"
    path.write_text(world.sops("-e", "--age", world.keys[0].recipient, str(plain)).stdout)
    assert "p4ss" not in path.read_text() and "visible" in path.read_text()
    data = decrypt_file(path, [world.keys[0].identity])
    assert data == {
        "db": {
            "password": "p4ss",
            "port": 5432,
            "ratio": 0.25,
            "big": 1000.0,
            "tls": True,
            "hex": 31,
            "when": datetime(2026, 1, 1, tzinfo=UTC),
            "empty": "",
            "nothing": None,
        },
        "list": ["a", {"k": "v", "n": 1}, [1, 2.5, False]],
        "public_unencrypted": "visible",
    }


def test_a_keys_file_with_a_post_quantum_identity_works_for_sops_and_us(world):
    path = store_file(world)
    write_grant(path, grant(), [world.keys[0].recipient])
    key_file = world.root / "mixed-keys.txt"
    key_file.write_text(
        f"# post-quantum\n{post_quantum_identity_line()}\n{world.keys[0].file.read_text()}"
    )
    mixed = Key(key_file, None, "")
    assert world.sops("-d", "--extract", '["name"]', str(path), key=mixed).stdout == "github"
    identities = keys.load_identities({"SOPS_AGE_KEY_FILE": str(key_file)}, required=True)
    assert read_grant(path, identities).access_token.reveal() == "gho_access"


COMMENTS_LIST = """\
lorem: ipsum
dolor:
    - sit
    # this is a comment
    - amet
nested:
    - a
    # two
    # comments
    - - b
      # inner
      - c
"""


def test_comments_inside_lists_are_not_elements(world):
    plain = world.work / "comments_list.yaml"
    plain.write_text(COMMENTS_LIST)
    path = world.work / "comments_list.sops.yaml"
    path.write_text(world.sops("-e", "--age", world.keys[0].recipient, str(plain)).stdout)
    assert "type:comment" in path.read_text()  # sops keeps them as encrypted list items
    shown = yaml.safe_load(world.sops("-d", str(path)).stdout)
    assert shown["dolor"] == ["sit", "amet"]
    assert decrypt_file(path, [world.keys[0].identity]) == shown
    # Without a key (plan, status) the lists have their real length too.
    assert sops.load_document(path.read_bytes(), None, path).data["dolor"][1].startswith("ENC[")
    assert len(sops.load_document(path.read_bytes(), None, path).data["dolor"]) == 2
    value = resolve_reference(
        f"sops:{path}#dolor.1",
        base_dir=world.work,
        owner="secret `x`",
        environ={},
        identities=[world.keys[0].identity],
    )
    assert value.reveal() == "amet"


# ---------------------------------------------------------------------------------------
# Differential: scalar spellings typed as Go's yaml.v3 types them.

ATOMS = [
    "0", "1", "7", "9", "12", "0x", "0o", "0b", "1F", "_", ".", "e", "E", "+", "-", "5",
    "inf", ".inf", ".nan", "true", "True", "yes", "no", "null", "~", "on", "NULL", "FALSE",
    "2026-01-01", "2026-1-2", "T", "t", " ", "10:20:30", "Z", "+02:00", ".5", "1e3", ":",
    "a", "0777", "9223372036854775807", "1_0", ",25",
]  # fmt: skip

FIXED = [
    "2026-01-01T00:00:00Z", "yes", "1.0", "0x10", "~", "42", "-0", "1e3", ".5", "0o17",
    "017", "08", "1_000", "2001-12-14 21:59:43.10", "2026-01-01t10:20:30+02:00", "TRUE",
    "2026-01-01T10:00:00.123456789123Z", "-.inf", ".NaN", "+12", "0b11", "1.", "3e-400",
    ".51_0", "._5", ".5e1_0", "1__0", "0x_1F", "-0b1_1",
]  # fmt: skip


def _usable(text: str) -> bool:
    if not text or text != text.strip() or "  " in text:
        return False
    try:
        node = compose_documents(f"k: {text}\n")[0].value[0][1]
        scalar_value(node)
    except (VaultError, UnsupportedValue):
        return False
    return node.id == "scalar" and not node.style and node.value == text


def _differential(world: Env, scalars: list[str]) -> None:
    """sops encrypts ``k<i>: S`` (plaintext) and ``e<i>: S`` (encrypted, typed); we put the
    original spellings back in place of sops' canonical re-emission, and both sops and we
    must verify the MAC; our typed values must match what sops decrypts to."""
    lines = []
    for i, text in enumerate(scalars):
        lines += [f"k{i}: {text}", f"e{i}: {text}"]
    plain = world.work / "scalars.yaml"
    plain.write_text("\n".join(lines) + "\n")
    enc = world.sops("-e", "--age", world.keys[0].recipient, "--encrypted-regex", "^e", str(plain))
    text = enc.stdout
    for i, s in enumerate(scalars):
        text, n = re.subn(rf"^k{i}: .*$", lambda _m, s=s, i=i: f"k{i}: {s}", text, flags=re.M)
        assert n == 1
    path = world.work / "scalars.sops.yaml"
    path.write_text(text)
    decrypted = world.sops("-d", str(path))  # sops accepts the original spellings
    ours = sops.load_document(path.read_bytes(), [world.keys[0].identity], path).data
    theirs = compose_documents(decrypted.stdout)[0]
    theirs_values = {k.value: scalar_value(v) for k, v in theirs.value}
    for i, s in enumerate(scalars):
        for key in (f"k{i}", f"e{i}"):
            mine, reference = ours[key], theirs_values[key]
            if reference is None:
                assert mine is None, (s, key)
            else:
                assert to_bytes(mine) == to_bytes(reference), (s, key, mine, reference)


def test_fixed_scalar_spellings_match_sops(world):
    _differential(world, [s for s in FIXED if _usable(s)])


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.lists(st.sampled_from(ATOMS), min_size=1, max_size=4).map("".join).filter(_usable),
        min_size=1,
        max_size=25,
    )
)
def test_random_scalar_spellings_match_sops(world, scalars):
    _differential(world, scalars)
