"""Writers' keys in etcd (``custody.keyring``): a value one machine seals opens on another
through the writer's key record, which is sealed to each recipient and to nobody else; a
writer publishes its key once, and puts it back when the record is gone or replaced, so that
nothing it wrote is lost."""

from __future__ import annotations

import pyrage
import pytest

from reconciler.custody import keyring, sealed
from reconciler.custody.etcd_gateway import Gateway

PAYLOAD = b'{"refresh_token": "rt-keyring-canary"}'


@pytest.fixture
def ring(etcd):
    server, namespace = etcd
    gateway = Gateway(server.endpoints)
    prefix = f"{namespace}/keys/".encode()

    def make(*identities, on: Gateway = gateway) -> keyring.Keyring:
        return keyring.Keyring(on, prefix, namespace, list(identities))

    return make, gateway, prefix


def _records(gateway: Gateway, prefix: bytes) -> dict[bytes, tuple[bytes, int]]:
    return {kv.key: (kv.value, kv.mod_revision) for kv in gateway.range(prefix, prefix=True)[1]}


def test_a_value_opens_on_another_machine_through_the_writers_key_record(ring) -> None:
    make, gateway, prefix = ring
    alice, bob, stranger = (pyrage.x25519.Identity.generate() for _ in range(3))
    to = (str(alice.to_public()), str(bob.to_public()))
    blob = make(alice).seal(PAYLOAD, to)
    assert b"rt-keyring-canary" not in blob
    key_id = keyring.key_id_of(blob)
    assert key_id is not None

    records = _records(gateway, prefix)
    assert list(records) == [prefix + key_id.hex().encode()]
    record = records[prefix + key_id.hex().encode()][0]
    assert sealed.is_sealed(record) and record.count(b"age-encryption.org/v1\n") == 2
    with pytest.raises(sealed.Unsealable):
        sealed.unseal(record, [stranger], [])

    assert make(bob).open(blob) == PAYLOAD
    with pytest.raises(sealed.Unsealable, match="none of its keys"):
        make(stranger).open(blob)


def test_a_writer_publishes_its_key_once_and_one_per_set_of_recipients(ring) -> None:
    make, gateway, prefix = ring
    alice, bob = (pyrage.x25519.Identity.generate() for _ in range(2))
    a, b = str(alice.to_public()), str(bob.to_public())
    first = make(alice)
    one = first.seal(PAYLOAD, (a, b))
    first.seal(PAYLOAD, (b, a))
    published = _records(gateway, prefix)
    # Another run of the same machine derives the same key and finds it there.
    again = make(alice).seal(PAYLOAD, (a, b))
    assert keyring.key_id_of(again) == keyring.key_id_of(one)
    assert _records(gateway, prefix) == published
    # Other recipients: another key, that the one left out cannot open.
    alone = first.seal(PAYLOAD, (a,))
    assert keyring.key_id_of(alone) != keyring.key_id_of(one)
    assert len(_records(gateway, prefix)) == 2
    with pytest.raises(sealed.Unsealable):
        make(bob).open(alone)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_lost_or_replaced_key_record_is_put_back_by_its_writer(ring, how: str) -> None:
    make, gateway, prefix = ring
    alice, bob = (pyrage.x25519.Identity.generate() for _ in range(2))
    to = (str(alice.to_public()), str(bob.to_public()))
    blob = make(alice).seal(PAYLOAD, to)
    key = prefix + keyring.key_id_of(blob).hex().encode()
    if how == "deleted":
        gateway.delete(key)
        expected = "is not in the engine"
    else:
        planted = sealed.seal(b"k" * 32, [(r, pyrage.x25519.Recipient.from_str(r)) for r in to])
        gateway.put(key, planted)
        expected = "altered, or its writer's key in the engine was replaced"
    with pytest.raises(sealed.Unsealable, match=expected):
        make(bob).open(blob)
    # The writer's next run checks its record before sealing with it, and puts it back.
    make(alice).seal(PAYLOAD, to)
    assert make(bob).open(blob) == PAYLOAD


def test_values_under_a_lost_record_cost_one_read_not_one_each(ring, monkeypatch) -> None:
    make, gateway, prefix = ring
    alice, bob, carol = (pyrage.x25519.Identity.generate() for _ in range(3))
    to = (str(alice.to_public()), str(bob.to_public()))
    blobs = [make(alice).seal(PAYLOAD, to) for _ in range(20)]
    gateway.delete(prefix + keyring.key_id_of(blobs[0]).hex().encode())
    own = Gateway(gateway.endpoints)  # the reader's reads alone are counted
    reads = []
    real_range = own.range
    monkeypatch.setattr(own, "range", lambda *a, **k: reads.append(a) or real_range(*a, **k))
    reader = make(bob, on=own)
    for blob in blobs:
        with pytest.raises(sealed.Unsealable, match="is not in the engine"):
            reader.open(blob)
    assert len(reads) == 1
    # A writer met for the first time is looked for at once.
    other = make(carol).seal(PAYLOAD, (*to, str(carol.to_public())))
    assert reader.open(other) == PAYLOAD and len(reads) == 2
