"""A grant file that holds no secret and was verified on this machine is not read again
while it is unchanged (``vault.verified``); any change makes it read, and verified, again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.model import Grant, Secret
from reconciler.vault import store
from reconciler.vault.sops.keys import load_identities
from tests.support import new_identity

TOKEN = "rt-verified-canary-7"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, dict[str, str], list[str]]:
    recipient = new_identity(tmp_path / "keys.txt")
    environ = {
        "SOPS_AGE_KEY_FILE": str(tmp_path / "keys.txt"),
        "XDG_CACHE_HOME": str(tmp_path / "c"),
    }
    folder = tmp_path / "secrets"
    folder.mkdir()
    attached = Grant(
        name="attached", kind="oauth2", client_id="cid", scopes=("read",), custody="etcd",
        extra={"coordination": "{}"},
    )  # fmt: skip
    linked = Grant(
        name="linked", kind="oauth2", client_id="cid", refresh_token=Secret(TOKEN),
        obtained_at=datetime(2026, 12, 1, tzinfo=UTC),
    )  # fmt: skip
    store.write_grant(folder / "attached.sops.yaml", attached, [recipient])
    store.write_grant(folder / "linked.sops.yaml", linked, [recipient])
    return folder, environ, [recipient]


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    read: list[str] = []
    real = store._load

    def counting(path, prepared):
        read.append(Path(path).name.split(".")[0])
        return real(path, prepared)

    monkeypatch.setattr(store, "_load", counting)
    return read


def test_an_unchanged_file_without_secrets_is_not_read_again(setup, monkeypatch) -> None:
    folder, environ, _ = setup
    identities = load_identities(environ, required=True)
    first = store.scan(folder, identities, environ)
    read = _reads(monkeypatch)
    second = store.scan(folder, identities, environ)
    assert read == ["linked"]  # the file with a secret is read every time
    assert second.grants["attached"] == first.grants["attached"]
    assert second.grants["attached"].decrypted and second.decrypted
    assert second.grants["linked"].refresh_token.reveal() == TOKEN  # type: ignore[union-attr]
    # Nothing secret is kept: the memory holds the plaintext of the file without one only.
    kept = list((Path(environ["XDG_CACHE_HOME"]) / "oauth-reconciler" / "verified").iterdir())
    assert len(kept) == 1
    text = kept[0].read_text()
    assert TOKEN not in text and '"linked"' not in text and '"attached"' in text


def test_a_changed_file_is_read_and_verified_again(setup, monkeypatch) -> None:
    folder, environ, _ = setup
    identities = load_identities(environ, required=True)
    store.scan(folder, identities, environ)
    path = folder / "attached.sops.yaml"
    path.write_text(path.read_text().replace("- read", "- admin"))  # outside sops: tampered
    read = _reads(monkeypatch)
    again = store.scan(folder, identities, environ)
    assert "attached" in read
    assert "attached" not in again.grants and "MAC" in again.unreadable["attached"]


def test_another_key_or_no_environment_reads_the_files(setup, monkeypatch, tmp_path) -> None:
    folder, environ, _ = setup
    store.scan(folder, load_identities(environ, required=True), environ)
    read = _reads(monkeypatch)
    store.scan(folder, load_identities(environ, required=True), None)
    assert sorted(read) == ["attached", "linked"]
    read.clear()
    new_identity(tmp_path / "other.txt")
    other = {**environ, "SOPS_AGE_KEY_FILE": str(tmp_path / "other.txt")}
    seen = store.scan(folder, load_identities(other, required=True), other)
    assert sorted(read) == ["attached", "attached", "linked", "linked"]  # foreign: then plain
    assert not seen.decrypted


def test_a_removed_file_is_forgotten(setup) -> None:
    folder, environ, _ = setup
    identities = load_identities(environ, required=True)
    store.scan(folder, identities, environ)
    (folder / "attached.sops.yaml").unlink()
    assert "attached" not in store.scan(folder, identities, environ).grants
    kept = next((Path(environ["XDG_CACHE_HOME"]) / "oauth-reconciler" / "verified").iterdir())
    assert '"attached"' not in kept.read_text()
