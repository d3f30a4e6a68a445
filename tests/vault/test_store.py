"""Grant files ⇄ model.Grant: round trips, tamper detection, errors, scan, atomicity."""

from __future__ import annotations

import base64
import dataclasses
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyrage
import pytest
import yaml

from reconciler.model import ENCRYPTED_FIELDS, Actual, Grant, Secret
from reconciler.vault.sops import cipher
from reconciler.vault.sops import document as sops
from reconciler.vault.store import (
    DecryptError,
    MalformedError,
    NoIdentityError,
    TamperedError,
    VaultError,
    decrypt_file,
    delete_grant,
    grant_path,
    read_grant,
    scan,
    write_grant,
)

ACCESS = "gho_ACCESS-token-value-1234567890"
REFRESH = "ghr_REFRESH-token-value-0987654321"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test may see the real key locations."""
    for var in (
        "SOPS_AGE_KEY",
        "SOPS_AGE_KEY_FILE",
        "SOPS_AGE_KEY_CMD",
        "SOPS_AGE_SSH_PRIVATE_KEY_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))


@pytest.fixture
def identity():
    return pyrage.x25519.Identity.generate()


@pytest.fixture
def recipient(identity):
    return str(identity.to_public())


@pytest.fixture
def store_dir(tmp_path):
    d = tmp_path / "secrets"
    d.mkdir()
    return d


def oauth_grant(name="github", **changes) -> Grant:
    grant = Grant(
        name=name,
        kind="oauth2",
        status="ok",
        flow="device_code",
        client_id="Iv1.0123456789abcdef",
        token_endpoint="https://github.com/login/oauth/access_token",
        scopes=("repo", "read:user"),
        granted_scopes=("repo", "read:user"),
        token_type="bearer",
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
        obtained_at=datetime(2025, 12, 31, 23, 0, tzinfo=UTC),
        access_token=Secret(ACCESS),
        refresh_token=Secret(REFRESH),
        extra={"instance_url": "https://example.my.salesforce.com"},
    )
    return dataclasses.replace(grant, **changes)


def written(path: Path, grant: Grant, recipients) -> bytes:
    write_grant(path, grant, recipients)
    return path.read_bytes()


# ---------------------------------------------------------------------------------------
# Round trips.


def test_round_trip_decrypted(store_dir, identity, recipient):
    grant = oauth_grant()
    path = grant_path(store_dir, "github")
    written = write_grant(path, grant, [recipient])
    back = read_grant(path, [identity])
    expected = dataclasses.replace(
        grant,
        recipients=(recipient,),
        decrypted=True,
        sealed=frozenset({"access_token", "refresh_token"}),
        modified=written,  # the file's version: its sops `lastmodified`
    )
    assert back == expected
    assert back.access_token.reveal() == ACCESS and back.refresh_token.reveal() == REFRESH
    assert back.expires_at.tzinfo is not None


def test_round_trip_without_identity_reads_metadata_only(store_dir, recipient):
    path = grant_path(store_dir, "github")
    write_grant(path, oauth_grant(), [recipient])
    back = read_grant(path, None)
    assert not back.decrypted
    assert all(getattr(back, f) is None for f in ENCRYPTED_FIELDS)
    assert back.sealed == {"access_token", "refresh_token"}
    assert back.scopes == ("repo", "read:user")
    assert back.expires_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert back.recipients == (recipient,)


def test_secret_grant_round_trip(store_dir, identity, recipient):
    grant = Grant(name="openai", kind="secret", value=Secret("sk-" + "x" * 40))
    path = grant_path(store_dir, "openai")
    write_grant(path, grant, [recipient])
    back = read_grant(path, [identity])
    assert back.value.reveal() == "sk-" + "x" * 40
    assert back.kind == "secret" and back.scopes == () and back.extra == {}


def test_only_set_fields_are_written_in_a_fixed_order(store_dir, recipient):
    path = grant_path(store_dir, "github")
    text = written(path, oauth_grant(status_reason=None, id_token=None), [recipient]).decode()
    keys = [line.split(":")[0] for line in text.splitlines() if re.match(r"^[a-z_]+:", line)]
    assert keys == [
        "name",
        "kind",
        "status",
        "flow",
        "client_id",
        "token_endpoint",
        "scopes",
        "granted_scopes",
        "token_type",
        "expires_at",
        "obtained_at",
        "extra",
        "access_token",
        "refresh_token",
        "sops",
    ]
    assert "expires_at: 2026-01-01T00:00:00Z" in text
    minimal = written(
        grant_path(store_dir, "x"), Grant(name="x", kind="secret", value=Secret("v")), [recipient]
    ).decode()
    assert [
        line.split(":")[0] for line in minimal.splitlines() if re.match(r"^[a-z_]+:", line)
    ] == [
        "name",
        "kind",
        "status",
        "value",
        "sops",
    ]


def test_no_plaintext_secret_in_the_file(store_dir, recipient):
    path = grant_path(store_dir, "github")
    data = written(path, oauth_grant(client_secret=Secret("client-SECRET-zz")), [recipient])
    for secret in (ACCESS, REFRESH, "client-SECRET-zz"):
        assert secret.encode() not in data
    for field in ("access_token", "refresh_token", "client_secret"):
        assert re.search(rf"^{field}: ENC\[AES256_GCM,.*type:str\]$", data.decode(), re.M)


def test_strings_needing_quotes_round_trip(store_dir, identity, recipient):
    grant = oauth_grant(
        client_id="12345",
        status="needs-relink",
        status_reason="invalid_grant: the token was revoked # by user\n(twice)",
        scopes=("yes", "true", "0x10", "1.0", "2026-01-01", "read: all", "~", ""),
        extra={"n": "null", "é": "ünïcode ✓", "value": "hidden extra"},
        access_token=Secret(""),
    )
    path = grant_path(store_dir, "github")
    data = written(path, grant, [recipient])
    assert b"hidden extra" not in data  # extra keys matching the regex are encrypted too
    back = read_grant(path, [identity])
    for field in ("client_id", "status", "status_reason", "scopes", "extra"):
        assert getattr(back, field) == getattr(grant, field)
    assert back.access_token == Secret("")
    assert "access_token" not in back.sealed
    plain = read_grant(path, None)
    assert plain.extra == {"n": "null", "é": "ünïcode ✓"}


def test_timestamps_are_written_in_utc_whole_seconds(store_dir, identity, recipient):
    tz = datetime(2026, 1, 1, 12, 0, 0, 123456).astimezone().tzinfo
    when = datetime(2026, 6, 1, 12, 30, 15, 999999, tzinfo=tz)
    path = grant_path(store_dir, "github")
    write_grant(path, oauth_grant(expires_at=when), [recipient])
    back = read_grant(path, [identity])
    assert back.expires_at == when.astimezone(UTC).replace(microsecond=0)


def test_several_recipients_each_decrypt_alone(store_dir, identity, recipient):
    others = [pyrage.x25519.Identity.generate() for _ in range(2)]
    recipients = [recipient, *(str(o.to_public()) for o in others)]
    path = grant_path(store_dir, "github")
    write_grant(path, oauth_grant(), recipients)
    for ident in (identity, *others):
        back = read_grant(path, [ident])
        assert back.access_token.reveal() == ACCESS
        assert back.recipients == tuple(recipients)


def test_ssh_ed25519_recipient(store_dir, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    ssh_recipient = public.decode() + " me@example"
    path = grant_path(store_dir, "github")
    write_grant(path, oauth_grant(), [ssh_recipient])
    ssh_identity = pyrage.ssh.Identity.from_buffer(private)
    assert read_grant(path, [ssh_identity]).refresh_token.reveal() == REFRESH
    assert read_grant(path, None).recipients == (ssh_recipient,)


def test_identities_may_be_given_as_strings(store_dir, identity, recipient):
    path = grant_path(store_dir, "github")
    write_grant(path, oauth_grant(), [recipient])
    assert read_grant(path, [f"# comment\n{identity}\n"]).decrypted


# ---------------------------------------------------------------------------------------
# Tamper detection: every change is refused, by name, without the plaintext.


def _flip_b64(text: str, field: str, part: str = "data") -> str:
    m = re.search(rf"^({field}: ENC\[AES256_GCM,.*?{part}:)([^,]+)", text, re.M)
    raw = bytearray(base64.b64decode(m.group(2)))
    raw[0] ^= 0x01
    return text[: m.start(2)] + base64.b64encode(bytes(raw)).decode() + text[m.end(2) :]


def _flip_mac(text: str) -> str:
    m = re.search(r"^(    mac: ENC\[AES256_GCM,data:)([^,]+)", text, re.M)
    raw = bytearray(base64.b64decode(m.group(2)))
    raw[5] ^= 0x80
    return text[: m.start(2)] + base64.b64encode(bytes(raw)).decode() + text[m.end(2) :]


TAMPERS = {
    "value byte": lambda t: _flip_b64(t, "access_token"),
    "value iv": lambda t: _flip_b64(t, "refresh_token", "iv"),
    "value tag": lambda t: _flip_b64(t, "access_token", "tag"),
    "value swapped": lambda t: (
        t.replace("access_token: ENC", "tmp: ENC")
        .replace("refresh_token: ENC", "access_token: ENC")
        .replace("tmp: ENC", "refresh_token: ENC")
    ),
    "scope changed": lambda t: t.replace("    - read:user\n", "    - admin:org\n", 1),
    "scope added": lambda t: t.replace("scopes:\n", "scopes:\n    - admin:org\n", 1),
    "scope removed": lambda t: t.replace("    - read:user\n", "", 1),
    "scopes reordered": lambda t: t.replace(
        "scopes:\n    - repo\n    - read:user\n", "scopes:\n    - read:user\n    - repo\n", 1
    ),
    "expires_at changed": lambda t: t.replace(
        "expires_at: 2026-01-01T00:00:00Z", "expires_at: 2027-01-01T00:00:00Z"
    ),
    "expires_at removed": lambda t: t.replace("expires_at: 2026-01-01T00:00:00Z\n", ""),
    "status changed": lambda t: t.replace("status: ok", "status: needs-relink"),
    "leaf added": lambda t: t.replace("kind: oauth2\n", "kind: oauth2\nnote: hi\n"),
    "extra changed": lambda t: t.replace("example.my.salesforce.com", "evil.example.com"),
    "mac byte": _flip_mac,
    "mac removed": lambda t: re.sub(r"^    mac: .*$", "    mac: ''", t, flags=re.M),
    "lastmodified": lambda t: re.sub(
        r'lastmodified: "(\d{4})', lambda m: f'lastmodified: "{int(m.group(1)) + 1}', t
    ),
    "value made plaintext": lambda t: re.sub(
        r"^access_token: ENC\[.*$", "access_token: stolen", t, flags=re.M
    ),
    "value broken envelope": lambda t: t.replace(
        "access_token: ENC[AES256_GCM", "access_token: ENC[AES128_GCM"
    ),
    "data key damaged": lambda t: re.sub(
        r"(-----BEGIN AGE ENCRYPTED FILE-----\n\s+)(\S{8})",
        lambda m: m.group(1) + ("A" * 8 if m.group(2) != "A" * 8 else "B" * 8),
        t,
        count=1,
    ),
}


@pytest.mark.parametrize("how", list(TAMPERS))
def test_tampering_is_detected(store_dir, identity, recipient, how):
    path = grant_path(store_dir, "github")
    original = written(path, oauth_grant(), [recipient]).decode()
    assert read_grant(path, [identity]).decrypted  # the untouched file is fine
    tampered = TAMPERS[how](original)
    assert tampered != original
    path.write_text(tampered)
    with pytest.raises(TamperedError) as caught:
        read_grant(path, [identity])
    message = str(caught.value)
    assert str(path) in message and "tampered" in message
    assert ACCESS not in message and REFRESH not in message
    assert path.read_text() == tampered  # never rewritten
    # scan reports it and carries on
    actual = scan(store_dir, [identity])
    assert "github" in actual.unreadable and "github" not in actual.grants


def test_wrong_identity_is_a_decrypt_error(store_dir, recipient):
    path = grant_path(store_dir, "github")
    write_grant(path, oauth_grant(), [recipient])
    stranger = pyrage.x25519.Identity.generate()
    with pytest.raises(DecryptError) as caught:
        read_grant(path, [stranger])
    assert recipient in str(caught.value) and str(path) in str(caught.value)
    assert not isinstance(caught.value, TamperedError)


def test_no_identity_is_its_own_error(store_dir, recipient):
    path = grant_path(store_dir, "github")
    write_grant(path, oauth_grant(), [recipient])
    with pytest.raises(NoIdentityError, match="SOPS_AGE_KEY_FILE"):
        read_grant(path, [])
    with pytest.raises(NoIdentityError):
        scan(store_dir, [])


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda t: t.replace("kind: oauth2", "kind: robot"), "`kind` must be one of"),
        (lambda t: t.replace("name: github", "name: gitlab"), "does not match the file name"),
        (lambda t: t.replace("name: github\n", "name: github\nsops: {}\n"), "appears twice"),
        (lambda t: t.replace("sops:", "notsops:"), "no `sops` metadata"),
        (lambda t: "just: [broken\n", "not valid YAML"),
    ],
)
def test_malformed_grant_files(store_dir, identity, recipient, edit, problem):
    path = grant_path(store_dir, "github")
    path.write_text(edit(written(path, oauth_grant(), [recipient]).decode()))
    with pytest.raises(MalformedError, match=re.escape(problem)):
        read_grant(path, None)


def test_wrong_leaf_type_is_malformed(store_dir, identity, recipient):
    path = grant_path(store_dir, "github")
    write_grant(path, oauth_grant(), [recipient])
    path.write_text(
        path.read_text().replace("scopes:\n    - repo\n    - read:user\n", "scopes: repo\n")
    )
    with pytest.raises(MalformedError, match="list of strings"):
        read_grant(path, None)


def test_missing_file_is_a_vault_error(store_dir):
    with pytest.raises(VaultError, match="no such grant file"):
        read_grant(store_dir / "nope.sops.yaml", None)


# ---------------------------------------------------------------------------------------
# Scan.


def test_scan_reads_every_file_and_isolates_bad_ones(store_dir, identity, recipient):
    for i in range(5):
        write_grant(grant_path(store_dir, f"g{i}"), oauth_grant(f"g{i}"), [recipient])
    (store_dir / "g2.sops.yaml").write_text("not: [yaml\n")
    (store_dir / "BAD NAME.sops.yaml").write_text("x: 1\n")
    (store_dir / "notes.txt").write_text("ignored")
    (store_dir / ".g1.sops.yaml.abc.tmp").write_text("ignored")
    (store_dir / "g1.sops.yaml.lock").write_text("")
    actual = scan(store_dir, [identity])
    assert isinstance(actual, Actual) and actual.decrypted
    assert sorted(actual.grants) == ["g0", "g1", "g3", "g4"]
    assert sorted(actual.unreadable) == ["BAD NAME", "g2"]
    assert "not valid YAML" in actual.unreadable["g2"]
    assert actual.grants["g0"].access_token.reveal() == ACCESS

    plain = scan(store_dir, None)
    assert not plain.decrypted and sorted(plain.grants) == ["g0", "g1", "g3", "g4"]
    assert all(not g.decrypted and g.access_token is None for g in plain.grants.values())


def test_scan_with_a_key_that_opens_no_file_reads_metadata_as_without_one(
    store_dir, identity, recipient
):
    for name in ("a", "b"):
        write_grant(grant_path(store_dir, name), oauth_grant(name), [recipient])
    reviewer = pyrage.x25519.Identity.generate()
    actual = scan(store_dir, [reviewer])
    assert not actual.decrypted and not actual.unreadable
    assert sorted(actual.grants) == ["a", "b"]
    assert actual.grants["a"].scopes == ("repo", "read:user")
    assert actual.grants["a"].access_token is None
    assert "not a recipient" in actual.sealed_reason and recipient in actual.sealed_reason


def test_scan_with_a_key_that_opens_some_files_reports_the_others(store_dir, identity, recipient):
    write_grant(grant_path(store_dir, "mine"), oauth_grant("mine"), [recipient])
    other = str(pyrage.x25519.Identity.generate().to_public())
    write_grant(grant_path(store_dir, "theirs"), oauth_grant("theirs"), [other])
    actual = scan(store_dir, [identity])
    assert actual.decrypted and actual.sealed_reason is None
    assert sorted(actual.grants) == ["mine"]
    assert "theirs.sops.yaml" in actual.unreadable["theirs"]


def test_scan_of_a_missing_folder_is_empty(tmp_path):
    assert scan(tmp_path / "missing", None) == Actual(grants={}, unreadable={}, decrypted=False)


def test_scan_without_identity_decrypts_nothing(store_dir, recipient, monkeypatch):
    write_grant(grant_path(store_dir, "a"), oauth_grant("a"), [recipient])

    def boom(*args, **kwargs):
        raise AssertionError("nothing may be decrypted without an identity")

    monkeypatch.setattr(pyrage, "decrypt", boom)
    monkeypatch.setattr(cipher, "_aesgcm", boom)
    assert scan(store_dir, None).grants["a"].scopes == ("repo", "read:user")


# ---------------------------------------------------------------------------------------
# Writes, deletes, generic decryption.


def test_failed_encryption_leaves_the_old_file_intact(store_dir, identity, recipient, monkeypatch):
    path = grant_path(store_dir, "github")
    write_grant(path, oauth_grant(), [recipient])
    before = path.read_bytes()
    calls = {"n": 0}
    real = cipher.Encryptor.seal

    def failing_seal(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash halfway through encryption")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cipher.Encryptor, "seal", failing_seal)
    with pytest.raises(RuntimeError, match="halfway"):
        write_grant(path, oauth_grant(access_token=Secret("new-token")), [recipient])
    assert path.read_bytes() == before
    assert sorted(p.name for p in store_dir.iterdir()) == ["github.sops.yaml"]
    monkeypatch.undo()
    assert read_grant(path, [identity]).access_token.reveal() == ACCESS


def test_failed_write_leaves_the_old_file_intact(store_dir, recipient, monkeypatch):
    path = grant_path(store_dir, "github")
    write_grant(path, oauth_grant(), [recipient])
    before = path.read_bytes()

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(VaultError, match="No space") as raised:
        write_grant(path, oauth_grant(scopes=("other",)), [recipient])
    assert str(raised.value).startswith(f"{path}: cannot be written")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in store_dir.iterdir()) == ["github.sops.yaml"]


def test_write_needs_recipients_and_a_matching_name(store_dir, recipient):
    with pytest.raises(VaultError, match="no age recipients"):
        write_grant(grant_path(store_dir, "github"), oauth_grant(), [])
    with pytest.raises(VaultError, match="not an age recipient"):
        write_grant(grant_path(store_dir, "github"), oauth_grant(), ["bogus"])
    with pytest.raises(ValueError, match="belongs in"):
        write_grant(grant_path(store_dir, "other"), oauth_grant(), [recipient])
    assert list(store_dir.iterdir()) == []


def test_grant_path_validates_names(tmp_path):
    assert grant_path(tmp_path, "my-api_2") == tmp_path / "my-api_2.sops.yaml"
    for bad in ("../etc", "Upper", "", "a/b", "-x", "x" * 64):
        with pytest.raises(ValueError):
            grant_path(tmp_path, bad)


def test_delete_grant(store_dir, recipient, monkeypatch):
    path = grant_path(store_dir, "github")
    write_grant(path, oauth_grant(), [recipient])
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    delete_grant(path)
    assert not path.exists() and synced  # the folder was fsynced
    delete_grant(path)  # idempotent


def test_decrypt_file_returns_plain_python(tmp_path, identity, recipient):
    path = tmp_path / "other.sops.yaml"
    data = {
        "db": {"password": "p4ssw0rd-xyz", "port": 5432, "tls": True, "ratio": 0.5},
        "list": ["a", {"b": "c"}],
        "when": datetime(2026, 1, 1, tzinfo=UTC),
    }
    path.write_bytes(sops.encode_document(data, [recipient], encrypted_regex=None))
    assert b"p4ssw0rd-xyz" not in path.read_bytes()
    assert decrypt_file(path, [identity]) == data
    with pytest.raises(NoIdentityError):
        decrypt_file(path, [])


def test_grant_repr_and_errors_hide_secrets(store_dir, identity, recipient):
    grant = oauth_grant()
    assert ACCESS not in repr(grant) and REFRESH not in str(grant)
    path = grant_path(store_dir, "github")
    write_grant(path, grant, [recipient])
    back = read_grant(path, [identity])
    assert ACCESS not in repr(back) and REFRESH not in repr(back)
    actual = scan(store_dir, [identity])
    assert ACCESS not in repr(actual)


def test_module_import_leaves_aes_for_the_first_decryption():
    """Reading plaintext metadata (plan, status without a key) never loads cryptography; the
    token fast path, which loads none of this module, is checked in tests/cli."""
    import subprocess
    import sys

    code = (
        "import sys, reconciler.vault.store\n"
        "heavy = [m for m in ('cryptography', 'httpx2', 'authlib') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert done.stdout.strip() == ""


def test_expiry_comparisons_work_with_aware_now(store_dir, identity, recipient):
    path = grant_path(store_dir, "github")
    write_grant(path, oauth_grant(), [recipient])
    back = read_grant(path, None)
    now = datetime(2025, 12, 31, 23, 30, tzinfo=UTC)
    assert back.expires_at - now == timedelta(minutes=30)


def test_sops_edited_timestamp_forms_are_accepted(store_dir, identity, recipient):
    """A quoted timestamp (string) and an unquoted one (YAML timestamp) hash the same."""
    path = grant_path(store_dir, "github")
    text = written(path, oauth_grant(), [recipient]).decode()
    path.write_text(
        text.replace("expires_at: 2026-01-01T00:00:00Z", "expires_at: '2026-01-01T00:00:00Z'")
    )
    assert read_grant(path, [identity]).expires_at == datetime(2026, 1, 1, tzinfo=UTC)
    doc = yaml.safe_load(path.read_text())
    assert doc["expires_at"] == "2026-01-01T00:00:00Z"
