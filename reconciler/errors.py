"""The one error tree. Every error a user can act on is a ``ReconcilerError``; a face catches
the root once, shows ``str(error)`` (one paragraph naming the file, grant or provider and what
to do) and exits with ``exit_code``. Anything else that escapes is a bug.

    ReconcilerError                 exit_code 1
    ├── ConfigError                 config/errors.py: invalid providers.yaml, unresolvable reference
    │   └── PromptRequired
    ├── VaultError                  vault/errors.py: a grant or SOPS file cannot be used
    │   └── TamperedError, NoIdentityError, DecryptError, MalformedError
    ├── OAuthError                  oauth/errors.py: the provider said no, or could not be reached
    │   └── InvalidGrant, TransientError, AccessDenied, LinkTimeout, ...
    ├── NeedsRelink                 only a new link flow can fix the grant
    ├── Busy                        the grant stayed locked (vault/files.py: LockTimeout)
    └── UserError                   a request the config or the store cannot satisfy
        ├── UndeclaredError         the name is not declared (HTTP 404)
        └── ConflictError           the request contradicts providers.yaml (HTTP 409)

No message ever holds a secret value: the layers that raise scrub what they quote.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """An error the user can act on. ``str()`` is the message; ``hint`` an optional next step
    (kept apart for ``-o json``); ``exit_code`` what the CLI exits with."""

    exit_code: int = 1
    #: What kind of failure, for faces that answer in their own terms (an HTTP status):
    #: config, vault, provider, provider_unavailable, needs_relink, busy, request,
    #: undeclared, conflict.
    kind: str = "error"

    @property
    def hint(self) -> str | None:
        return None


class NeedsRelink(ReconcilerError):
    """The grant is marked ``needs-relink`` (or cannot be refreshed at all): no refresh is
    attempted until ``reconcile link NAME`` runs again."""

    kind = "needs_relink"


class Busy(ReconcilerError):
    """Another writer held the grant's lock for longer than the caller could wait."""

    kind = "busy"


class UserError(ReconcilerError):
    """A request that the config or the store cannot satisfy as asked."""

    kind = "request"


class UndeclaredError(UserError):
    """The name is not declared in ``providers.yaml``: faces never create undeclared grants."""

    kind = "undeclared"


class ConflictError(UserError):
    """The request contradicts ``providers.yaml`` (e.g. writing a secret it sources elsewhere)."""

    kind = "conflict"


def message_of(error: BaseException) -> str:
    """The one-paragraph message a face shows for ``error``: the error's own for the tree, the
    file and reason for an ``OSError``, and the type and text of anything else (a bug)."""
    if isinstance(error, ReconcilerError):
        return str(error)
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}"
    return f"unexpected {type(error).__name__}: {error}"
