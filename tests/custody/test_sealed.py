"""Sealed values (``custody.sealed``): each recipient opens its own key, nobody else opens
any, and an altered or truncated value is refused."""

from __future__ import annotations

import pyrage
import pytest

from reconciler.custody import sealed

PAYLOAD = b'{"refresh_token": "rt-sealed-canary"}'


@pytest.fixture(scope="module")
def people() -> list[tuple[object, str]]:
    identities = [pyrage.x25519.Identity.generate() for _ in range(3)]
    return [(i, str(i.to_public())) for i in identities]


def _seal(people) -> bytes:
    return sealed.seal(
        PAYLOAD, [(text, pyrage.x25519.Recipient.from_str(text)) for _, text in people]
    )


def test_every_recipient_opens_it_with_its_label_or_without(people) -> None:
    blob = _seal(people)
    assert PAYLOAD not in blob and b"rt-sealed-canary" not in blob
    for identity, _ in people:
        assert sealed.unseal(blob, [identity], sealed.labels_of([identity])) == PAYLOAD
        assert sealed.unseal(blob, [identity], []) == PAYLOAD  # every key tried


def test_a_recipient_tries_only_its_own_key_first(people, monkeypatch) -> None:
    blob = _seal(people)
    stanzas, _ = sealed._stanzas(blob)
    assert [tag for tag, _ in stanzas] == [sealed.label(text) for _, text in people]
    # Each key is an age file to one recipient: only its owner opens it.
    for (tag, wrapped), (identity, text) in zip(stanzas, people, strict=True):
        assert sealed.labels_of([identity]) == [tag]
        assert len(pyrage.decrypt(wrapped, [identity])) == 32
        others = [i for i, t in people if t != text]
        with pytest.raises(pyrage.DecryptError):
            pyrage.decrypt(wrapped, others)
    # Opening: one age decryption with the label (the last recipient's key is tried first),
    # one per key up to its own without.
    tried: list[bytes] = []
    real = pyrage.decrypt

    def counting(data, identities):
        tried.append(data)
        return real(data, identities)

    monkeypatch.setattr(pyrage, "decrypt", counting)
    last = people[-1][0]
    assert sealed.unseal(blob, [last]) == PAYLOAD and tried == [stanzas[-1][1]]
    tried.clear()
    assert sealed.unseal(blob, [last], []) == PAYLOAD and len(tried) == len(people)


def test_a_stranger_opens_nothing(people) -> None:
    stranger = pyrage.x25519.Identity.generate()
    with pytest.raises(sealed.Unsealable, match="none of its keys"):
        sealed.unseal(_seal(people), [stranger], sealed.labels_of([stranger]))


@pytest.mark.parametrize("where", [5, 40, -20, -1])
def test_an_altered_byte_anywhere_is_refused(people, where: int) -> None:
    blob = bytearray(_seal(people))
    blob[where] ^= 0x01
    identity = people[0][0]
    with pytest.raises(sealed.Unsealable):
        sealed.unseal(bytes(blob), [identity], sealed.labels_of([identity]))


def test_a_truncated_value_is_refused(people) -> None:
    blob = _seal(people)
    identity = people[1][0]
    for size in (0, 4, 5, 30, len(blob) - 40):
        with pytest.raises(sealed.Unsealable):
            sealed.unseal(blob[:size], [identity], [])
