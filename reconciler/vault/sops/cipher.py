"""The sops value envelope and its AES-256-GCM cipher.

Every encrypted leaf is ``ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<t>]``: AES-256
GCM under the file's data key with a 32-byte random IV, a 16-byte tag, and as additional
data the leaf's key path joined with ``:`` plus a trailing ``:`` (list items use the path of
their list). ``t`` is ``str``, ``int``, ``float``, ``bool``, ``time``, ``bytes`` or
``comment``. ``cryptography`` is imported on first use.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import os
import re
from datetime import datetime
from typing import Any

from ..errors import malformed_error, tampered_error
from .scalars import INT64_MAX, INT64_MIN, GoTime, parse_time

NONCE_SIZE = 32
TAG_SIZE = 16
#: How every encrypted value starts.
ENVELOPE_PREFIX = "ENC[AES256_GCM,"
_ENVELOPE = re.compile(r"ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]")


class Comment(str):
    """A comment leaf (from a decrypted ``type:comment`` value); never part of the MAC."""

    __slots__ = ()


def is_comment_envelope(value: object) -> bool:
    """Is ``value`` the still-encrypted envelope of a comment (``type:comment``)?"""
    return (
        isinstance(value, str)
        and value.startswith(ENVELOPE_PREFIX)
        and value.endswith(",type:comment]")
    )


def additional_data(path: tuple[str, ...]) -> bytes:
    """What a leaf's envelope authenticates besides its value: its key path."""
    return (":".join(path) + ":").encode()


_AESGCM: Any = None


def _aesgcm(key: bytes) -> Any:
    global _AESGCM
    if _AESGCM is None:
        # cryptography (~10 ms) only once a value is en- or decrypted, never for a keyless plan
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        _AESGCM = AESGCM
    return _AESGCM(key)


def envelope_type(value: Any) -> str:
    """The ``type:`` sops records for an encrypted value of this kind."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, GoTime | datetime):
        return "time"
    if isinstance(value, bytes):
        return "bytes"
    raise TypeError(f"cannot encrypt a {type(value).__name__} value")


class Encryptor:
    """Seals values under one data key."""

    __slots__ = ("_aes",)

    def __init__(self, data_key: bytes) -> None:
        self._aes = _aesgcm(data_key)

    def holds(self, envelope: str, plaintext: bytes, aad: bytes, kind: str) -> bool:
        """Does ``envelope`` hold exactly ``plaintext`` of type ``kind`` under this key and
        ``aad``? (Then it can be kept as it is.)"""
        m = _ENVELOPE.fullmatch(envelope)
        if m is None or m.group(4) != kind:
            return False
        from cryptography.exceptions import InvalidTag  # loaded with AESGCM, see _aesgcm

        try:
            data, iv, tag = _b64(m.group(1)), _b64(m.group(2)), _b64(m.group(3))
            opened = self._aes.decrypt(iv, data + tag, aad)
        except (binascii.Error, ValueError, InvalidTag):
            return False
        return hmac.compare_digest(opened, plaintext)

    def seal(self, plaintext: bytes, aad: bytes, kind: str) -> str:
        iv = os.urandom(NONCE_SIZE)
        out = self._aes.encrypt(iv, plaintext, aad)
        return (
            f"{ENVELOPE_PREFIX}data:{base64.b64encode(out[:-TAG_SIZE]).decode()},"
            f"iv:{base64.b64encode(iv).decode()},"
            f"tag:{base64.b64encode(out[-TAG_SIZE:]).decode()},type:{kind}]"
        )


def _b64(text: str) -> bytes:
    return binascii.a2b_base64(text, strict_mode=True)


def _convert_decrypted(raw: bytes, kind: str) -> Any:
    """Type a decrypted value like sops' aes.Cipher.Decrypt; ValueError if it cannot."""
    if kind == "str":
        return raw.decode("utf-8")
    text = raw.decode("ascii")
    if kind == "int":
        if not re.fullmatch(r"[-+]?[0-9]+", text):
            raise ValueError("int")
        value = int(text)
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("int")
        return value
    if kind == "float":
        if not text or "_" in text or text != text.strip():
            raise ValueError("float")
        real = float(text)
        if math.isinf(real) and "inf" not in text.lower():
            raise ValueError("float")
        return real
    if kind == "bool":
        if text in ("1", "t", "T", "TRUE", "true", "True"):
            return True
        if text in ("0", "f", "F", "FALSE", "false", "False"):
            return False
        raise ValueError("bool")
    if kind == "time":
        t = parse_time(text, strict_rfc3339=True)
        if t is None:
            raise ValueError("time")
        return t
    if kind == "bytes":
        return raw
    if kind == "comment":
        return Comment(raw.decode("utf-8"))
    raise ValueError("type")


class Decryptor:
    """Opens the envelopes of one file; failures name ``source``, never a value."""

    __slots__ = ("_aes", "source")

    def __init__(self, data_key: bytes, source: object) -> None:
        self._aes = _aesgcm(data_key)
        self.source = source

    def decrypt(self, value: str, path: tuple[str, ...]) -> Any:
        """The typed value of the leaf at ``path``."""
        where = ":".join(path)
        return self._open(
            value,
            additional_data(path),
            where,
            missing=f"the value at {where} should be encrypted but is not",
            damaged=f"the encrypted value at {where} is damaged",
        )

    def decrypt_mac(self, value: str, aad: str) -> Any:
        """The stored MAC (``aad``: the lastmodified text)."""
        return self._open(
            value,
            aad.encode(),
            "the MAC",
            missing="its MAC is missing or not encrypted",
            damaged="its MAC is damaged",
        )

    def _open(self, value: str, aad: bytes, where: str, *, missing: str, damaged: str) -> Any:
        m = _ENVELOPE.match(value)
        if m is None:
            raise tampered_error(self.source, missing)
        try:
            data, iv, tag = _b64(m.group(1)), _b64(m.group(2)), _b64(m.group(3))
        except (binascii.Error, ValueError):
            raise tampered_error(self.source, damaged) from None
        from cryptography.exceptions import InvalidTag  # loaded with AESGCM, see _aesgcm

        kind = m.group(4)
        try:
            raw = self._aes.decrypt(iv, data + tag, aad)
        except (InvalidTag, ValueError):
            raise tampered_error(
                self.source, f"the encrypted value at {where} fails authentication"
            ) from None
        try:
            return _convert_decrypted(raw, kind)
        except (ValueError, UnicodeDecodeError):
            raise malformed_error(
                self.source, f"the value at {where} does not decode as its type {kind!r}"
            ) from None


__all__ = [
    "ENVELOPE_PREFIX",
    "NONCE_SIZE",
    "Comment",
    "Decryptor",
    "Encryptor",
    "additional_data",
    "envelope_type",
    "is_comment_envelope",
]
