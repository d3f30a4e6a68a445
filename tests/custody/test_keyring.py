"""Values sealed under a writer's key (``custody.keyring``), without the engine: the key is
derived, the same each run and a different one for other recipients, a namespace or another
writer; a value opens only under its key and unaltered; a writer that is not a recipient seals
to each recipient, and values written before the keyring still open. The key records in etcd
are tested in ``tests/cluster/test_keyring.py``."""

from __future__ import annotations

import pyrage
import pytest

from reconciler.custody import keyring, sealed
from reconciler.custody.etcd_gateway import Gateway
from reconciler.custody.etcd_records import decrypt, encrypt
from reconciler.vault.errors import VaultError

PAYLOAD = b'{"refresh_token": "rt-keyring-canary"}'
#: Nothing listens there: a keyring that contacted the engine would fail.
NOWHERE = Gateway(["http://127.0.0.1:9"])


@pytest.fixture(scope="module")
def people() -> list[tuple[object, str]]:
    identities = [pyrage.x25519.Identity.generate() for _ in range(3)]
    return [(i, str(i.to_public())) for i in identities]


def test_a_writer_key_is_derived_the_same_each_time_and_differs_with_any_input(people) -> None:
    (alice, a), (bob, b), (_, c) = people
    key_id, key = keyring.derive(str(alice), "acme", [a, b])
    assert len(key_id) == 8 and len(key) == 32
    assert keyring.derive(str(alice), "acme", [b, a]) == (key_id, key)  # order is no input
    others = [
        keyring.derive(str(bob), "acme", [a, b]),
        keyring.derive(str(alice), "acme/other", [a, b]),
        keyring.derive(str(alice), "acme", [a, b, c]),
    ]
    assert all(k != key and i != key_id for i, k in others)


def test_a_value_opens_under_its_key_only(people) -> None:
    key_id, key = keyring.derive(str(people[0][0]), "acme", [people[0][1]])
    blob = keyring.seal_under(key_id, key, PAYLOAD)
    assert b"rt-keyring-canary" not in blob
    assert keyring.key_id_of(blob) == key_id
    assert keyring.open_under(key, blob) == PAYLOAD
    assert keyring.seal_under(key_id, key, PAYLOAD) != blob  # a fresh nonce each time
    _, other = keyring.derive(str(people[1][0]), "acme", [people[0][1]])
    with pytest.raises(sealed.Unsealable, match="altered"):
        keyring.open_under(other, blob)


@pytest.mark.parametrize("where", [4, 11, 12, 30, -1])
def test_an_altered_byte_in_the_id_nonce_or_ciphertext_is_refused(people, where: int) -> None:
    key_id, key = keyring.derive(str(people[0][0]), "acme", [people[0][1]])
    blob = bytearray(keyring.seal_under(key_id, key, PAYLOAD))
    blob[where] ^= 0x01
    with pytest.raises(sealed.Unsealable):
        keyring.open_under(key, bytes(blob))


def test_a_truncated_value_is_refused(people) -> None:
    key_id, key = keyring.derive(str(people[0][0]), "acme", [people[0][1]])
    blob = keyring.seal_under(key_id, key, PAYLOAD)
    for size in (4, 12, 24, 39):
        with pytest.raises(sealed.Unsealable, match="truncated"):
            keyring.key_id_of(blob[:size])
    with pytest.raises(sealed.Unsealable, match="altered"):
        keyring.open_under(key, blob[:-1])


def test_a_writer_not_among_the_recipients_seals_to_each_without_the_engine(people) -> None:
    (alice, a), (bob, b), (carol, _) = people
    writer = keyring.Keyring(NOWHERE, b"acme/keys/", "acme", [carol])
    record = {"generation": 7, "grant": {"name": "api"}}
    blob = encrypt(record, (a, b), writer)
    assert sealed.is_sealed(blob) and keyring.key_id_of(blob) is None
    for reader in (alice, bob):
        assert decrypt(blob, keyring.Keyring(NOWHERE, b"acme/keys/", "acme", [reader])) == record
    with pytest.raises(VaultError, match="cannot be decrypted"):
        decrypt(blob, writer)


def test_values_written_before_the_keyring_still_open(people) -> None:
    identity, text = people[2]
    reader = keyring.Keyring(NOWHERE, b"acme/keys/", "acme", [identity])
    older = bytes(pyrage.encrypt(b'{"generation": 6}', [identity.to_public()]))
    assert decrypt(older, reader) == {"generation": 6}
    sealed_each = sealed.seal(b'{"generation": 5}', [(text, identity.to_public())])
    assert decrypt(sealed_each, reader) == {"generation": 5}
    with pytest.raises(VaultError, match="cannot be decrypted"):
        decrypt(older, keyring.Keyring(NOWHERE, b"acme/keys/", "acme", [people[0][0]]))
