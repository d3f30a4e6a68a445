"""The keys that values in etcd are sealed with: this machine's own, and those of the other
writers, as the engine keeps them under ``<namespace>/keys/<id>``.

A value sealed to its recipients one by one (``sealed``) costs an X25519 operation per
recipient to write and one to open, and every machine opens every state it plans from (a
thousand grants: a thousand per ``plan``, ``apply`` or ``status``). A writer instead seals
what it writes with a key of its own, derived from its age identity, the namespace and the
recipients (HKDF-SHA256): the same on every run, never stored on this machine, and a new one
when the recipients change. Sealed to those recipients once, it is kept in the engine under
an id derived with it; a value is then ::

    b"RCK1" | key id (8) | nonce (12) | ChaCha20-Poly1305 ciphertext (the header as
                                        associated data)

and opening it costs an AEAD decryption once a process has opened its writer's key (one age
decryption per writer). A writer never takes a key from the engine to seal with: one planted
there can only make a reader fail to open values (as deleting them would), never make a writer
seal to it. A writer whose identity is not among the recipients seals each value to them
(``sealed``); values written that way, or as plain age files before either, still open.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyrage

from ..vault.cache import own_recipients
from ..vault.sops.keys import parse_recipient
from . import sealed

if TYPE_CHECKING:
    from .etcd_gateway import Gateway

MAGIC = b"RCK1"
_ID = 8
_KEY = 32
_NONCE = 12
_HEAD = len(MAGIC) + _ID
_SALT = b"oauth-reconciler etcd value key v1"
#: Seconds before a key id the engine did not have is looked for there again: values under a
#: lost record cost one read a second, not one each; a new writer's id is looked for at once.
REREAD_MISSING = 1.0


def derive(identity: str, namespace: str, recipients: Sequence[str]) -> tuple[bytes, bytes]:
    """(key id, key) of the writer holding ``identity`` (its secret, as age writes it), for
    values sealed to ``recipients`` under ``namespace``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = namespace.encode("utf-8") + b"\0" + "\n".join(sorted(recipients)).encode("utf-8")
    out = HKDF(algorithm=hashes.SHA256(), length=_ID + _KEY, salt=_SALT, info=info).derive(
        identity.encode("utf-8")
    )
    return out[:_ID], out[_ID:]


def seal_under(key_id: bytes, key: bytes, payload: bytes) -> bytes:
    head = MAGIC + key_id
    nonce = os.urandom(_NONCE)
    return head + nonce + sealed.cipher(key).encrypt(nonce, payload, head)


def key_id_of(blob: bytes) -> bytes | None:
    """The id of the key ``blob`` is sealed with (None: not sealed under a writer's key)."""
    if blob[: len(MAGIC)] != MAGIC:
        return None
    if len(blob) < _HEAD + _NONCE + 16:
        raise sealed.Unsealable("the value is truncated")
    return blob[len(MAGIC) : _HEAD]


def open_under(key: bytes, blob: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag  # loaded with the cipher

    cipher = sealed.cipher(key)
    try:
        return cipher.decrypt(blob[_HEAD : _HEAD + _NONCE], blob[_HEAD + _NONCE :], blob[:_HEAD])
    except InvalidTag:
        raise sealed.Unsealable(
            "the value was altered, or its writer's key in the engine was replaced (its "
            "authentication tag does not match)"
        ) from None


class Keyring:
    """Seals and opens the values under one namespace: ``prefix`` is ``<namespace>/keys/``."""

    def __init__(
        self, gateway: Gateway, prefix: bytes, namespace: str, identities: Sequence[Any] | None
    ) -> None:
        self.gateway = gateway
        self.prefix = prefix
        self.namespace = namespace
        self.identities = list(identities or ())
        #: Key id -> key: this machine's, once its record is in the engine; others' once opened.
        self._keys: dict[bytes, bytes] = {}
        #: Recipients -> (key id, key) of this machine's own key for them (None: not one of them).
        self._own: dict[tuple[str, ...], tuple[bytes, bytes] | None] = {}
        #: The key records as last read from the engine: key id -> sealed key.
        self._records: dict[bytes, bytes] = {}
        #: Ids that last read did not find, and when it was (monotonic).
        self._missing: set[bytes] = set()
        self._read_at = 0.0

    def seal(self, payload: bytes, recipients: Sequence[str]) -> bytes:
        own = self._own_key(tuple(sorted(r.strip() for r in recipients)))
        if own is None:
            return sealed.seal(payload, [(r, parse_recipient(r)) for r in recipients])
        key_id, key = own
        if self._keys.get(key_id) != key:
            self._publish(key_id, key, recipients)
        return seal_under(key_id, key, payload)

    def open(self, blob: bytes) -> bytes:
        """The payload of a value (``sealed.Unsealable`` or ``pyrage.DecryptError`` when it
        does not open)."""
        key_id = key_id_of(blob)
        if key_id is not None:
            return open_under(self._key(key_id), blob)
        if sealed.is_sealed(blob):
            return sealed.unseal(blob, self.identities)
        return bytes(pyrage.decrypt(blob, self.identities))

    def _own_key(self, recipients: tuple[str, ...]) -> tuple[bytes, bytes] | None:
        if recipients not in self._own:
            x25519 = [i for i in self.identities if hasattr(i, "to_public")]
            mine = {str(r): i for i, r in zip(x25519, own_recipients(x25519), strict=True)}
            writer = next((mine[r] for r in recipients if r in mine), None)
            self._own[recipients] = (
                derive(str(writer), self.namespace, recipients) if writer is not None else None
            )
        return self._own[recipients]

    def _publish(self, key_id: bytes, key: bytes, recipients: Sequence[str]) -> None:
        """This machine's key for ``recipients`` in the engine, unless it is there already."""
        try:
            there = self._key(key_id)
        except sealed.Unsealable:
            there = None
        if there != key:
            record = sealed.seal(key, [(r, parse_recipient(r)) for r in recipients])
            self.gateway.put(self.prefix + key_id.hex().encode(), record)
        self._keys[key_id] = key

    def _read_records(self) -> None:
        """Every writer's record at once: a reader meets a few writers, usually all of them."""
        _, found = self.gateway.range(self.prefix, prefix=True)
        records = {}
        for kv in found:
            try:
                key_id = bytes.fromhex(kv.key[len(self.prefix) :].decode("ascii"))
            except ValueError:  # not a key record (nor anything this module wrote)
                continue
            if len(key_id) == _ID:
                records[key_id] = kv.value
        self._records, self._missing, self._read_at = records, set(), time.monotonic()

    def _key(self, key_id: bytes) -> bytes:
        known = self._keys.get(key_id)
        if known is not None:
            return known
        if key_id not in self._records and (
            key_id not in self._missing or time.monotonic() - self._read_at > REREAD_MISSING
        ):
            self._read_records()
        record = self._records.get(key_id)
        if record is None:
            self._missing.add(key_id)
            raise sealed.Unsealable(
                f"the key it was sealed with ({key_id.hex()}) is not in the engine"
            )
        key = sealed.unseal(record, self.identities)
        if len(key) != _KEY:
            raise sealed.Unsealable(f"the key it was sealed with ({key_id.hex()}) is malformed")
        self._keys[key_id] = key
        return key


__all__ = ["MAGIC", "Keyring", "derive", "key_id_of", "open_under", "seal_under"]
