"""Tokens for the code that calls APIs (SPEC §6).

```python
from reconciler import runtime

token = runtime.token("github")                       # valid access token, refreshed if needed
client = httpx2.Client(auth=runtime.Auth("github"))   # bearer; refresh + one retry on 401
```

The work is done by ``operations.read_token`` (the on-disk token cache, else a single-flight
refresh under the grant's lock) and ``grants.refresh``; this module adds an in-process cache
so that a warm call costs a few ``os.stat`` calls and a clock read, not a decryption.

An in-process entry holds the last token of one (config file, name) with

- its refresh deadline (``plan.schedule``, recorded in the on-disk cache entry; none for
  static secrets and for access tokens that do not expire); it is never used past it;
- the identity (inode, size, mtime, ctime) of the config file, the grant file and, for OAuth
  grants, the on-disk cache entry, taken *before* the value was read: any change (a relink, an
  edit, a `git checkout`, a refresh by another process) sends the next call back to
  ``read_token``.

The in-process cache is ``runtime/memory.py``; ``Auth`` (``runtime/auth.py``) is loaded the
first time ``runtime.Auth`` is looked up. Importing the package is cheap (standard library
only); the vault, the config loader and httpx2 are imported on first use.

May import: ``operations`` (the door), ``errors``, ``model``, ``vault.fingerprint``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import NeedsRelink, ReconcilerError
from . import memory
from .memory import CONFIG_ENV

if TYPE_CHECKING:
    from .auth import Auth

__all__ = ["CONFIG_ENV", "Auth", "NeedsRelinkError", "RuntimeTokenError", "clear", "token"]

#: No usable token: the message says why and what to do. It never contains a token.
RuntimeTokenError = ReconcilerError
#: The grant is marked ``needs-relink`` (or has no way to refresh): `reconcile link NAME`.
NeedsRelinkError = NeedsRelink


def token(name: str, config: str | os.PathLike[str] | None = None) -> str:
    """A valid access token for the OAuth grant ``name`` (refreshed if due), or the value of
    the static secret ``name``, as declared in ``config`` (default: ``$RECONCILER_CONFIG``,
    else ``./providers.yaml``). Raises ``RuntimeTokenError``."""
    key = (memory.resolve_config(config), name)
    entry = memory.entries.get(key)
    if entry is not None and memory.valid(entry):
        return entry.secret.reveal()
    return memory.get(key).reveal()


def clear() -> None:
    """Forget every token held in this process (the files and the on-disk cache stay)."""
    memory.entries.clear()


def __getattr__(name: str) -> object:
    # ``Auth`` subclasses ``httpx2.Auth``: httpx2 is imported only when it is asked for.
    if name == "Auth":
        from .auth import Auth  # httpx2: only when Auth is asked for

        globals()["Auth"] = Auth
        return Auth
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
