"""Recombine a data key that sops split among several key groups (Shamir secret sharing).

sops splits the 32-byte data key byte by byte over GF(2^8) (the AES field, reduction
polynomial x^8 + x^4 + x^3 + x + 1) into one share per key group, and encrypts each share
to every key of its group. A share is the polynomials' values followed by one byte, their x
coordinate. Any ``shamir_threshold`` shares give the key back: the value at x = 0 of the
interpolating polynomial (Lagrange), computed here for every byte at once.
"""

from __future__ import annotations

from collections.abc import Sequence

_REDUCE = 0x11B


def _mul(a: int, b: int) -> int:
    """Product in GF(2^8)."""
    out = 0
    while b:
        if b & 1:
            out ^= a
        a <<= 1
        if a & 0x100:
            a ^= _REDUCE
        b >>= 1
    return out


def _inverse(a: int) -> int:
    """a^254 = a^-1 in GF(2^8) (a != 0)."""
    out, power, exponent = 1, a, 254
    while exponent:
        if exponent & 1:
            out = _mul(out, power)
        power = _mul(power, power)
        exponent >>= 1
    return out


def combine(shares: Sequence[bytes]) -> bytes:
    """The secret the ``shares`` (at least the threshold's number of them) were split from.
    Raises ValueError when they cannot belong together (lengths, x coordinates)."""
    if len(shares) < 2:
        raise ValueError("at least two shares are needed")
    size = len(shares[0])
    if size < 2 or any(len(share) != size for share in shares):
        raise ValueError("the shares differ in length")
    xs = [share[-1] for share in shares]
    if 0 in xs or len(set(xs)) != len(xs):
        raise ValueError("the shares' x coordinates are not distinct and non-zero")
    # Lagrange basis at 0: c_i = prod_{m != i} x_m / (x_m - x_i); subtraction is XOR.
    weights = []
    for i, xi in enumerate(xs):
        weight = 1
        for m, xm in enumerate(xs):
            if m != i:
                weight = _mul(weight, _mul(xm, _inverse(xm ^ xi)))
        weights.append(weight)
    secret = bytearray(size - 1)
    for share, weight in zip(shares, weights, strict=True):
        for j in range(size - 1):
            secret[j] ^= _mul(share[j], weight)
    return bytes(secret)


__all__ = ["combine"]
