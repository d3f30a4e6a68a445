"""The token cache: what makes an entry a hit, and that nothing else is one."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyrage
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.secret import Secret
from reconciler.vault import cache

TOKEN = "cached-access-token-4f1c9e"


@pytest.fixture
def setup(tmp_path):
    identity = pyrage.x25519.Identity.generate()
    config = tmp_path / "providers.yaml"
    config.write_text("version: 1\n")
    grant = tmp_path / "secrets" / "api.sops.yaml"
    grant.parent.mkdir()
    grant.write_text("grant file\n")
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    return config, grant, [identity], environ


def entry(
    expires_in: float | None = 3600, due_in: float | None = 3300, retry_in: float | None = None
):
    """An entry obtained now, due for a refresh ``due_in`` seconds from now (the fast path
    compares with the clock, not with a constant)."""
    now = datetime.now(UTC)
    return cache.CachedToken(
        access_token=Secret(TOKEN),
        token_type="Bearer",
        expires_at=now + timedelta(seconds=expires_in) if expires_in is not None else None,
        obtained_at=now,
        refresh_at=now + timedelta(seconds=due_in) if expires_in is not None else None,
        retry_at=now + timedelta(seconds=retry_in) if retry_in is not None else None,
    )


def test_round_trip(setup):
    config, grant, identities, environ = setup
    written = entry()
    cache.write(config, "api", grant, written, identities, environ)
    found = cache.read(config, "api", identities, environ)
    assert found is not None
    assert found.access_token.reveal() == TOKEN
    assert found.token_type == "Bearer"
    assert found.expires_at == written.expires_at
    assert found.obtained_at == written.obtained_at
    assert found.refresh_at == written.refresh_at
    assert found.retry_at is None
    assert found.grant_path == str(grant)
    assert cache.fresh_token(str(config), "api", environ | _key_env(identities, config)) == TOKEN


def _key_env(identities, config) -> dict[str, str]:
    key_file = config.parent / "keys.txt"
    key_file.write_text(f"{identities[0]}\n")
    return {"SOPS_AGE_KEY_FILE": str(key_file)}


def test_the_entry_is_encrypted_and_private(setup):
    config, grant, identities, environ = setup
    cache.write(config, "api", grant, entry(), identities, environ)
    path = cache.entry_path(config, "api", environ)
    data = Path(path).read_bytes()
    assert TOKEN.encode() not in data
    assert data.startswith(b"age-encryption.org/v1")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700


def test_a_changed_grant_or_config_file_is_a_miss(setup):
    config, grant, identities, environ = setup
    cache.write(config, "api", grant, entry(), identities, environ)
    config.write_text("version: 1\n# edited\n")
    assert cache.read(config, "api", identities, environ) is None
    # A caller that loaded the config itself does not need it unchanged.
    assert cache.read(config, "api", identities, environ, config_unchanged=False) is not None
    grant.write_text("relinked\n")
    assert cache.read(config, "api", identities, environ, config_unchanged=False) is None


def test_an_entry_under_another_name_is_a_miss(setup):
    """The file name only spreads entries: an entry copied to another grant's name (a hash
    clash) must not hand out its token."""
    config, grant, identities, environ = setup
    cache.write(config, "api", grant, entry(), identities, environ)
    other = cache.entry_path(config, "other", environ)
    assert other != cache.entry_path(config, "api", environ)
    os.replace(cache.entry_path(config, "api", environ), other)
    assert cache.read(config, "other", identities, environ) is None


def test_other_identities_other_formats_and_garbage_are_misses(setup):
    config, grant, identities, environ = setup
    cache.write(config, "api", grant, entry(), identities, environ)
    stranger = [pyrage.x25519.Identity.generate()]
    assert cache.read(config, "api", stranger, environ) is None
    path = cache.entry_path(config, "api", environ)
    recipients = [identities[0].to_public()]
    for plaintext in (b'{"access_token": "x"}', b"garbage\n", b"", b"\xff\xfe"):
        with open(path, "wb") as file:
            file.write(pyrage.encrypt(plaintext, recipients))
        assert cache.read(config, "api", identities, environ) is None
    with open(path, "wb") as file:
        file.write(b"not age at all")
    assert cache.read(config, "api", identities, environ) is None


def test_an_entry_missing_a_field_is_a_miss(setup):
    config, grant, identities, environ = setup
    cache.write(config, "api", grant, entry(), identities, environ)
    path = cache.entry_path(config, "api", environ)
    plaintext = pyrage.decrypt(Path(path).read_bytes(), identities)
    without_expiry = b"\n".join(
        line for line in plaintext.split(b"\n") if not line.startswith(b"expires_at ")
    )
    with open(path, "wb") as file:
        file.write(pyrage.encrypt(without_expiry, [identities[0].to_public()]))
    assert cache.read(config, "api", identities, environ) is None


@pytest.mark.parametrize(
    ("timing", "fresh"),
    [
        ({"expires_in": 3600, "due_in": 3300}, True),
        ({"expires_in": 200, "due_in": -1}, False),  # due for a refresh
        ({"expires_in": None}, True),  # no expiry given
        ({"expires_in": 200, "due_in": -1, "retry_in": 60}, True),  # backing off
        ({"expires_in": -5, "due_in": -300, "retry_in": 60}, False),  # expired anyway
    ],
)
def test_freshness(setup, timing, fresh):
    config, grant, identities, environ = setup
    token = entry(**timing)
    assert token.is_fresh(datetime.now(UTC)) is fresh
    cache.write(config, "api", grant, token, identities, environ)
    served = cache.fresh_token(str(config), "api", environ | _key_env(identities, config))
    assert (served == TOKEN) is fresh


def test_drop(setup):
    config, grant, identities, environ = setup
    cache.write(config, "api", grant, entry(), identities, environ)
    cache.drop(config, "api", environ)
    assert cache.read(config, "api", identities, environ) is None
    cache.drop(config, "api", environ)  # nothing left: no error


@given(st.text())
def test_escaping_round_trips_and_keeps_values_on_one_line(value):
    escaped = cache._escape(value)
    assert "\n" not in escaped
    assert cache._unescape(escaped) == value


def test_values_with_line_breaks_and_backslashes_survive(setup):
    config, grant, identities, environ = setup
    value = "-----BEGIN KEY-----\nline \\n two\\\\\n\\-----END KEY-----\n"
    token = entry()
    token.access_token = Secret(value)
    cache.write(config, "api", grant, token, identities, environ)
    found = cache.read(config, "api", identities, environ)
    assert found is not None and found.access_token.reveal() == value


def test_the_rollback_memory_only_moves_forward(setup, tmp_path):
    _, grant, _, environ = setup
    assert cache.newest_seen(grant, environ) is None
    newer = datetime(2026, 5, 2, 12, 0, tzinfo=UTC)
    cache.remember_seen(grant, newer, environ)
    cache.remember_seen(grant, newer - timedelta(days=1), environ)
    assert cache.newest_seen(grant, environ) == newer
    cache.remember_seen(grant, newer + timedelta(seconds=1), environ)
    assert cache.newest_seen(grant, environ) == newer + timedelta(seconds=1)
    other = tmp_path / "secrets" / "other.sops.yaml"
    assert cache.newest_seen(other, environ) is None  # per grant file
