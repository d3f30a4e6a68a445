"""Why a grant or SOPS file cannot be used. Messages name the file and what to do; they never
carry a plaintext value."""

from __future__ import annotations

from ..errors import ReconcilerError


class VaultError(ReconcilerError):
    """A grant or SOPS file cannot be used. ``str()`` is a one-paragraph user message."""

    kind = "vault"

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path


class TamperedError(VaultError):
    """The MAC does not match, or an encrypted value fails authentication."""


class NoIdentityError(VaultError):
    """No age identity was found where sops looks for one."""


class DecryptError(VaultError):
    """Identities are present but none of them opens the file's data key."""


class MalformedError(VaultError):
    """Not YAML, not a SOPS file, metadata missing, or a leaf of the wrong type."""


def source_label(source: object) -> str:
    """How a message names the file a document came from."""
    return str(source) if source is not None else "<sops document>"


def restore_hint(source: object) -> str:
    """How to put back one damaged file, and only that one: restoring the whole store folder
    would also throw away other grants' uncommitted links and rotated refresh tokens."""
    path = source_label(source)
    return (
        f"Restore this one file from git (`git checkout -- {path}`, or `git restore "
        f"--source=<a good commit> {path}` if the damage is committed), or delete it and "
        "link the grant again."
    )


def tampered_error(source: object, what: str) -> TamperedError:
    return TamperedError(
        f"{source_label(source)}: {what}: it was tampered with (changed outside sops and "
        "reconcile) or is corrupted, so it is not used and will not be rewritten. "
        + restore_hint(source),
        source,
    )


def malformed_error(source: object, what: str) -> MalformedError:
    return MalformedError(
        f"{source_label(source)}: {what}. Fix the file by hand (it is YAML), restore it from "
        "version control, or delete it and let reconcile write it again.",
        source,
    )


__all__ = [
    "DecryptError",
    "MalformedError",
    "NoIdentityError",
    "TamperedError",
    "VaultError",
    "malformed_error",
    "restore_hint",
    "source_label",
    "tampered_error",
]
