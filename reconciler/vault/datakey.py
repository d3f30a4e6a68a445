"""The data key of a SOPS file: 32 random bytes, age-encrypted and ASCII-armored once per
recipient under ``sops.age[*].enc``. ``pyrage`` is imported on first use."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import DecryptError, NoIdentityError, source_label, tampered_error
from .metadata import Metadata

DATA_KEY_SIZE = 32


def new_data_key() -> bytes:
    return os.urandom(DATA_KEY_SIZE)


def wrap_data_key(data_key: bytes, recipients: Sequence[Any]) -> list[str]:
    """The armored age ciphertext of ``data_key`` for each (parsed) recipient, in order."""
    import pyrage

    return [pyrage.encrypt(data_key, [r], armored=True).decode("ascii") for r in recipients]


def open_data_key(
    meta: Metadata,
    identities: Sequence[Any],
    source: object = None,
    preferred_recipients: Iterable[str] = (),
) -> bytes:
    """Decrypt the data key with the first age entry one of ``identities`` opens."""
    import pyrage

    if not identities:
        raise NoIdentityError(
            f"{source_label(source)}: no age identity is available to decrypt it. Like sops, "
            "reconcile looks in $SOPS_AGE_KEY, $SOPS_AGE_KEY_FILE, $SOPS_AGE_KEY_CMD, then "
            "$XDG_CONFIG_HOME/sops/age/keys.txt (default ~/.config/sops/age/keys.txt); set one "
            "of them or run `reconcile init`.",
            source,
        )
    if not meta.age:
        kinds = ", ".join(meta.other_keys) or "no"
        raise DecryptError(
            f"{source_label(source)}: it is encrypted to {kinds} keys but to no age recipient, "
            "so reconcile cannot open it; add an age recipient with `sops updatekeys`.",
            source,
        )
    preferred = set(preferred_recipients)
    entries = sorted(meta.age, key=lambda k: k.recipient not in preferred)
    ours_failed = False
    for entry in entries:
        try:
            key = pyrage.decrypt(entry.enc.encode(), list(identities))
        except (pyrage.DecryptError, ValueError):
            # An entry for a recipient we hold the identity of must open: if it does not,
            # the entry was altered.
            ours_failed = ours_failed or entry.recipient in preferred
            continue
        if len(key) != DATA_KEY_SIZE:
            raise tampered_error(source, "its data key has the wrong size")
        return key
    if ours_failed:
        raise tampered_error(source, "the age-encrypted data key for your recipient is damaged")
    listed = ", ".join(meta.recipients)
    raise DecryptError(
        f"{source_label(source)}: none of the {len(identities)} age identities found opens it; "
        f"it is encrypted to {listed}. Use the identity of one of those recipients "
        "(SOPS_AGE_KEY_FILE), or have someone who can decrypt it add your recipient with "
        "`sops updatekeys`.",
        source,
    )


__all__ = ["DATA_KEY_SIZE", "new_data_key", "open_data_key", "wrap_data_key"]
