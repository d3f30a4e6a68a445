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

Importing this module is cheap (standard library only); the vault, the config loader and
httpx2 are imported on first use. ``Auth`` lives in ``reconciler._runtime_auth`` and is
loaded the first time ``runtime.Auth`` is looked up.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, NoReturn

from .errors import NeedsRelink, ReconcilerError, message_of
from .vault.fingerprint import of_file

if TYPE_CHECKING:
    from pathlib import Path

    from ._runtime_auth import Auth
    from .model import Secret

__all__ = ["Auth", "NeedsRelinkError", "RuntimeTokenError", "clear", "token"]

#: Environment variable naming the config file when ``config`` is not given.
CONFIG_ENV = "RECONCILER_CONFIG"
DEFAULT_CONFIG = "providers.yaml"


#: No usable token: the message says why and what to do. It never contains a token.
RuntimeTokenError = ReconcilerError
#: The grant is marked ``needs-relink`` (or has no way to refresh): `reconcile link NAME`.
NeedsRelinkError = NeedsRelink


def token(name: str, config: str | os.PathLike[str] | None = None) -> str:
    """A valid access token for the OAuth grant ``name`` (refreshed if due), or the value of
    the static secret ``name``, as declared in ``config`` (default: ``$RECONCILER_CONFIG``,
    else ``./providers.yaml``). Raises ``RuntimeTokenError``."""
    key = (_config_path(config), name)
    entry = _entries.get(key)
    if entry is not None and _valid(entry):
        return entry.secret.reveal()
    return _get(key).reveal()


def clear() -> None:
    """Forget every token held in this process (the files and the on-disk cache stay)."""
    _entries.clear()


# --- the in-process cache ------------------------------------------------------------------

#: The wall clock (epoch seconds) used for deadlines; tests may replace it.
_clock = time.time


class _Entry:
    __slots__ = ("deadline", "secret", "watched")

    def __init__(
        self,
        secret: Secret,
        deadline: float | None,
        watched: tuple[tuple[str, tuple[int, ...] | None], ...],
    ) -> None:
        self.secret = secret
        self.deadline = deadline
        self.watched = watched

    def __repr__(self) -> str:
        return f"_Entry(secret=***, deadline={self.deadline!r})"


_Key = tuple[str, str]
_entries: dict[_Key, _Entry] = {}
_locks: dict[_Key, threading.Lock] = {}
_locks_guard = threading.Lock()


def _reset_locks_after_fork() -> None:
    global _locks_guard
    _locks_guard = threading.Lock()
    _locks.clear()


os.register_at_fork(after_in_child=_reset_locks_after_fork)


def _config_path(config: str | os.PathLike[str] | None) -> str:
    if config is None:
        config = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    return os.path.abspath(os.path.expanduser(os.fspath(config)))


def _valid(entry: _Entry) -> bool:
    if entry.deadline is not None and _clock() >= entry.deadline:
        return False
    for path, fingerprint in entry.watched:  # noqa: SIM110 (a loop: faster than all())
        if of_file(path) != fingerprint:
            return False
    return True


def _lock_for(key: _Key) -> threading.Lock:
    lock = _locks.get(key)
    if lock is None:
        with _locks_guard:
            lock = _locks.setdefault(key, threading.Lock())
    return lock


def _peek(key: _Key) -> Secret | None:
    """The in-process token when it is still valid (no I/O beyond ``os.stat``)."""
    entry = _entries.get(key)
    return entry.secret if entry is not None and _valid(entry) else None


def _get(key: _Key) -> Secret:
    """The token for ``key``: in-process if valid, else through ``operations.read_token``
    (one caller per key at a time in this process; the others then find it here)."""
    with _lock_for(key):
        secret = _peek(key)
        if secret is not None:
            return secret
        return _read(key)


def _after_rejection(key: _Key, rejected: Secret) -> Secret | None:
    """A replacement for ``rejected``, which an API answered with 401: the token another
    thread or process already got, else one forced refresh (single-flight under the grant's
    lock). None for a static secret: there is nothing to refresh."""
    with _lock_for(key):
        secret = _peek(key)
        if secret is not None and secret != rejected:
            return secret  # another thread replaced it meanwhile
        _entries.pop(key, None)
        secret = _read(key)
        if secret != rejected:
            return secret  # another process refreshed it (the on-disk cache has it)
        _entries.pop(key, None)
        return _force_refresh(key, rejected)


def _read(key: _Key) -> Secret:
    """``operations.read_token``, remembering its answer in-process. Call with the key's
    lock held."""
    from pathlib import Path

    from . import operations
    from .config import locate

    config_path, name = key
    config_file = Path(config_path)
    try:
        config_before = of_file(config_path)
        store_dir, declared = locate(config_file)
        grant_file = _grant_file(store_dir, name) if name in declared else None
        grant_before = of_file(grant_file) if grant_file else None
        secret = operations.read_token(config_file, name)
    except Exception as error:
        _reraise(error)
    if grant_file is not None:
        _remember(key, secret, grant_file, config_before, grant_before)
    return secret


def _force_refresh(key: _Key, rejected: Secret) -> Secret | None:
    from pathlib import Path

    from . import config, grants, operations
    from .vault.keys import load_identities

    config_path, name = key
    config_file = Path(config_path)
    try:
        desired = config.load(config_file, environ=os.environ, resolve_values=False)
        if name not in desired.providers:
            return None
        identities = load_identities(os.environ, required=True)
        grant = grants.refresh(
            desired, name, operations.utcnow(), identities, force=True, rejected=rejected
        )
    except Exception as error:
        _reraise(error)
    if grant.access_token is None:
        raise NeedsRelinkError(
            f"{name}: the grant holds no access token; run `reconcile link {name}`"
        )
    _remember(key, grant.access_token, _grant_file(desired.store_dir, name), None, None)
    return grant.access_token


def _grant_file(store_dir: Path, name: str) -> str:
    from .vault.store import grant_path

    return str(grant_path(store_dir, name))


def _remember(
    key: _Key,
    secret: Secret,
    grant_file: str,
    config_before: tuple[int, ...] | None,
    grant_before: tuple[int, ...] | None,
) -> None:
    """Keep ``secret`` in-process when its validity is known: a static secret until its files
    change; an OAuth token while the on-disk cache entry that records its expiry still is the
    one read here. ``*_before`` are the files' fingerprints from before ``secret`` was read:
    a fingerprint must never be newer than the value it vouches for (a change in between then
    only costs one more read)."""
    from pathlib import Path

    from .vault import cache
    from .vault.keys import load_identities
    from .vault.store import read_grant

    config_path, name = key
    try:
        kind = read_grant(Path(grant_file), None).kind  # plaintext metadata: no decryption
        if kind == "secret":
            if config_before is not None and grant_before is not None:
                watched = ((config_path, config_before), (grant_file, grant_before))
                _entries[key] = _Entry(secret, None, watched)
            return
        # An OAuth token's expiry is in the on-disk cache entry, which ``cache.read`` accepts
        # only while the config and grant files are those it was written beside: taken just
        # before that read, these fingerprints are never newer than what it vouches for.
        entry_file = str(cache.entry_path(Path(config_path), name, os.environ))
        watched = (
            (config_path, of_file(config_path)),
            (grant_file, of_file(grant_file)),
            (entry_file, of_file(entry_file)),
        )
        identities = load_identities(os.environ, required=True)
        cached = cache.read(Path(config_path), name, identities, os.environ)
    except Exception:
        return  # not remembered: the next call asks read_token again
    if cached is None or cached.access_token != secret or None in (w[1] for w in watched):
        return  # no on-disk record of this token's expiry (e.g. no age recipient to cache to)
    deadline = None
    if cached.refresh_at is not None:
        deadline = cached.refresh_at.timestamp()
        if _clock() >= deadline:
            return
    _entries[key] = _Entry(secret, deadline, watched)


def _reraise(error: Exception) -> NoReturn:
    """Raise the runtime's exception for an error from the layers below (their messages name
    the grant and what to do, and never hold a token). Anything else is a bug: raised as is."""
    if isinstance(error, ReconcilerError):
        raise error
    if isinstance(error, OSError):
        raise RuntimeTokenError(message_of(error)) from error
    raise error


def __getattr__(name: str) -> object:
    # ``Auth`` subclasses ``httpx2.Auth``: httpx2 is imported only when it is asked for.
    if name == "Auth":
        from ._runtime_auth import Auth

        globals()["Auth"] = Auth
        return Auth
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
