"""The data key of a SOPS file: 32 random bytes, age-encrypted and ASCII-armored once per
recipient under ``sops.age[*].enc``. ``pyrage`` is imported on first use.

Rewriting a file for the same recipients keeps its data key and its age entries, as
``sops set`` does, so that a value change is a small diff: the data keys of the files this
process opened are remembered (in memory only, a bounded number) by the SHA-256 of the
file's bytes, so a key is only ever kept for the exact file it was read from.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pyrage

from ..errors import DecryptError, NoIdentityError, source_label, tampered_error
from .metadata import AgeKey, Metadata
from .shamir import combine

if TYPE_CHECKING:
    from .keys import Identities

DATA_KEY_SIZE = 32


def new_data_key() -> bytes:
    return os.urandom(DATA_KEY_SIZE)


#: The most data keys remembered; the oldest are forgotten first.
MAX_REMEMBERED = 256
_opened: dict[bytes, tuple[bytes, tuple[AgeKey, ...]]] = {}


def remember_data_key(raw: bytes, data_key: bytes, age: Sequence[AgeKey]) -> None:
    """Note that ``raw`` (a whole file, with one key group) was opened with ``data_key``."""
    _opened[hashlib.sha256(raw).digest()] = (data_key, tuple(age))
    while len(_opened) > MAX_REMEMBERED:
        try:
            del _opened[next(iter(_opened))]
        except (KeyError, RuntimeError, StopIteration):  # another thread got there first
            break


def kept_data_key(raw: bytes | None, recipients: Sequence[str]) -> tuple[bytes, list[str]] | None:
    """The data key of ``raw`` (the file about to be replaced) and its age entries for
    ``recipients``, in their order, when this process opened that file and it is encrypted
    to exactly these recipients; else None (a new data key is needed)."""
    if raw is None:
        return None
    found = _opened.get(hashlib.sha256(raw).digest())
    if found is None:
        return None
    data_key, age = found
    entries = {key.recipient: key.enc for key in age}
    wanted = [r.strip() for r in recipients]
    if set(wanted) != set(entries) or len(entries) != len(age):
        return None
    return data_key, [entries[r] for r in wanted]


def wrap_data_key(data_key: bytes, recipients: Sequence[Any]) -> list[str]:
    """The armored age ciphertext of ``data_key`` for each (parsed) recipient, in order."""
    return [pyrage.encrypt(data_key, [r], armored=True).decode("ascii") for r in recipients]


def open_data_key(
    meta: Metadata,
    identities: Identities,
    source: object = None,
    preferred_recipients: Iterable[str] = (),
) -> bytes:
    """Decrypt the data key with the first age entry one of ``identities`` opens; for a file
    with several key groups, open one share per group and recombine them."""
    if not identities:
        raise NoIdentityError(
            f"{source_label(source)}: no age identity is available to decrypt it. Like sops, "
            "reconcile looks in $SOPS_AGE_KEY, $SOPS_AGE_KEY_FILE, $SOPS_AGE_KEY_CMD, then "
            "$XDG_CONFIG_HOME/sops/age/keys.txt (default ~/.config/sops/age/keys.txt); set one "
            "of them or run `reconcile init`.",
            source,
        )
    preferred = frozenset(preferred_recipients)
    if meta.key_groups:
        return _open_shares(meta, identities, source, preferred)
    if not meta.age:
        kinds = ", ".join(meta.other_keys) or "no"
        raise DecryptError(
            f"{source_label(source)}: it is encrypted to {kinds} keys but to no age recipient, "
            "so reconcile cannot open it; add an age recipient with `sops updatekeys`.",
            source,
        )
    key = _open_entry(meta.age, identities, source, preferred)
    if key is None:
        listed = ", ".join(meta.recipients)
        raise DecryptError(
            f"{source_label(source)}: none of the {len(identities)} age identities found opens "
            f"it; it is encrypted to {listed}. Use the identity of one of those recipients "
            "(SOPS_AGE_KEY_FILE), or have someone who can decrypt it add your recipient with "
            "`sops updatekeys`.",
            source,
        )
    if len(key) != DATA_KEY_SIZE:
        raise tampered_error(source, "its data key has the wrong size")
    return key


def _open_entry(
    entries: Sequence[AgeKey], identities: Identities, source: object, preferred: frozenset[str]
) -> bytes | None:
    """What the first of ``entries`` that ``identities`` open holds; None if none opens."""
    ours_failed = False
    for entry in sorted(entries, key=lambda k: k.recipient not in preferred):
        try:
            data: bytes = pyrage.decrypt(entry.enc.encode(), list(identities))
            return data
        except (pyrage.DecryptError, ValueError):
            # An entry for a recipient we hold the identity of must open: if it does not,
            # the entry was altered.
            ours_failed = ours_failed or entry.recipient in preferred
    if ours_failed:
        raise tampered_error(source, "the age-encrypted data key for your recipient is damaged")
    return None


def _open_shares(
    meta: Metadata, identities: Identities, source: object, preferred: frozenset[str]
) -> bytes:

    shares: list[bytes] = []
    for group in meta.key_groups:
        share = _open_entry(group, identities, source, preferred)
        if share is not None:
            shares.append(share)
            if len(shares) == meta.shamir_threshold:
                break
    if len(shares) < meta.shamir_threshold:
        raise DecryptError(
            f"{source_label(source)}: its data key is split among {len(meta.key_groups)} key "
            f"groups (Shamir secret sharing) and {meta.shamir_threshold} of them must open it, "
            f"but the {len(identities)} age identities found open {len(shares)}. Make the "
            "identities of enough groups available (SOPS_AGE_KEY_FILE may list several), or "
            "decrypt it with sops where the other keys are.",
            source,
        )
    try:
        key = combine(shares)
    except ValueError:
        key = b""
    if len(key) != DATA_KEY_SIZE:
        raise tampered_error(source, "the shares of its data key do not fit together")
    return key


__all__ = [
    "DATA_KEY_SIZE",
    "kept_data_key",
    "new_data_key",
    "open_data_key",
    "remember_data_key",
    "wrap_data_key",
]
