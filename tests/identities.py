"""Age identity lines of kinds reconcile does not use, well-formed as age and sops read them."""

from __future__ import annotations

import os

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _bech32_checksum(hrp: str, data: list[int]) -> list[int]:
    """BIP 173: the six checksum characters (as 5-bit values) for ``hrp`` and ``data``."""
    values = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + data + [0] * 6
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i, g in enumerate((0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)):
            check ^= g if (top >> i) & 1 else 0
    check ^= 1
    return [(check >> 5 * (5 - i)) & 31 for i in range(6)]


def bech32_line(hrp: str, payload: bytes) -> str:
    """An upper-case bech32 string, the form of age identity lines."""
    acc, bits, data = 0, 0, []
    for byte in payload:
        acc, bits = (acc << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            data.append((acc >> bits) & 31)
    if bits:
        data.append((acc << (5 - bits)) & 31)
    hrp = hrp.lower()
    chars = "".join(_BECH32[d] for d in data + _bech32_checksum(hrp, data))
    return f"{hrp}1{chars}".upper()


def post_quantum_identity_line() -> str:
    """A well-formed age post-quantum (ML-KEM-768 + X25519) identity line, as age 1.3 and
    sops 3.11 read it: a random 32-byte seed under ``AGE-SECRET-KEY-PQ-``."""
    return bech32_line("AGE-SECRET-KEY-PQ-", os.urandom(32))
