"""A value sealed to age recipients, that each recipient opens with one age decryption.

An age file encrypted to several recipients does not say which stanza is whose, so a reader
tries its identity on each stanza in turn: with three recipients, opening a value costs up to
three X25519 operations, and a machine that reads a thousand states (every ``plan``,
``apply`` and ``status`` over shared custody) spends most of its time there. A sealed value is
what SOPS does for a file instead: a fresh 256-bit key per value, age-encrypted to each
recipient on its own under a label (the first 8 bytes of the SHA-256 of the recipient), and
the payload encrypted with that key (ChaCha20-Poly1305, the header as associated data). The
recipients are as public as they are in the grant files; the key and the payload are only
theirs. ::

    b"RCS1" | count (1 byte) | count x (label (8) | length (2, big-endian) | age file)
            | nonce (12) | ChaCha20-Poly1305 ciphertext of the payload
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pyrage

from ..vault.cache import own_recipients

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

MAGIC = b"RCS1"
_LABEL = 8
_KEY = 32
_NONCE = 12


class Unsealable(ValueError):
    """The value is damaged, or none of its keys opens with the identities given."""


def label(recipient: str) -> bytes:
    return hashlib.sha256(recipient.strip().encode("utf-8")).digest()[:_LABEL]


def labels_of(identities: Sequence[Any]) -> list[bytes]:
    """The labels of the recipients of ``identities`` (X25519 ones: the others have no
    public form here, and are tried on every key)."""
    return [label(str(recipient)) for recipient in own_recipients(identities)]


def seal(payload: bytes, recipients: Sequence[tuple[str, Any]]) -> bytes:
    """``payload`` sealed to ``recipients``: (its text, as in the config; parsed pyrage
    recipient) pairs."""
    if not 0 < len(recipients) < 256:
        raise ValueError("a sealed value needs 1 to 255 recipients")
    key = os.urandom(_KEY)
    header = [MAGIC, bytes([len(recipients)])]
    for text, parsed in recipients:
        wrapped = bytes(pyrage.encrypt(key, [parsed]))
        header += [label(text), len(wrapped).to_bytes(2, "big"), wrapped]
    head = b"".join(header)
    nonce = os.urandom(_NONCE)
    return head + nonce + cipher(key).encrypt(nonce, payload, head)


def is_sealed(blob: bytes) -> bool:
    return blob[: len(MAGIC)] == MAGIC


def unseal(blob: bytes, identities: Sequence[Any], labels: Iterable[bytes] | None = None) -> bytes:
    """The payload, opened with ``identities``. The keys under their recipients' labels
    (``labels``, by default ``labels_of(identities)``) are tried first, the others only when
    none of those opens."""
    stanzas, offset = _stanzas(blob)
    mine = set(labels_of(identities) if labels is None else labels)
    ordered = [w for tag, w in stanzas if tag in mine] + [
        w for tag, w in stanzas if tag not in mine
    ]
    for wrapped in ordered:
        try:
            key = bytes(pyrage.decrypt(wrapped, list(identities)))
        except pyrage.DecryptError:
            continue
        if len(key) != _KEY:
            raise Unsealable("the value's key is malformed")
        head, nonce = blob[:offset], blob[offset : offset + _NONCE]
        from cryptography.exceptions import InvalidTag  # loaded with the cipher

        try:
            return cipher(key).decrypt(nonce, blob[offset + _NONCE :], head)
        except InvalidTag:
            raise Unsealable(
                "the value was altered (its authentication tag does not match)"
            ) from None
    raise Unsealable("none of its keys opens with the age identities available")


def _stanzas(blob: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
    if not is_sealed(blob) or len(blob) < len(MAGIC) + 1:
        raise Unsealable("not a sealed value")
    count = blob[len(MAGIC)]
    offset = len(MAGIC) + 1
    stanzas = []
    for _ in range(count):
        tag = blob[offset : offset + _LABEL]
        size = int.from_bytes(blob[offset + _LABEL : offset + _LABEL + 2], "big")
        offset += _LABEL + 2
        wrapped = blob[offset : offset + size]
        if len(tag) != _LABEL or len(wrapped) != size:
            raise Unsealable("the value is truncated")
        stanzas.append((tag, wrapped))
        offset += size
    if len(blob) < offset + _NONCE + 16:
        raise Unsealable("the value is truncated")
    return stanzas, offset


def cipher(key: bytes) -> ChaCha20Poly1305:
    global _ChaCha20Poly1305
    if _ChaCha20Poly1305 is None:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        _ChaCha20Poly1305 = ChaCha20Poly1305
    return _ChaCha20Poly1305(key)


#: The cipher's class, imported with the first value sealed or opened.
_ChaCha20Poly1305: type[ChaCha20Poly1305] | None = None


__all__ = ["MAGIC", "Unsealable", "cipher", "is_sealed", "label", "labels_of", "seal", "unseal"]
