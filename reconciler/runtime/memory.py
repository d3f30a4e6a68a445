"""The runtime's in-process cache: one entry per (config file, name), kept as long as
``operations.Issued`` allows (its refresh deadline, and while the files it names are unchanged),
so that a warm ``runtime.token()`` costs a few ``os.stat`` calls and a clock read.

Standard library only at import; ``operations`` (and through it the vault) on first use.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from .. import operations
from ..errors import ReconcilerError, message_of
from ..vault.fingerprint import of_file

if TYPE_CHECKING:
    from ..model import Secret
    from ..operations import Issued

#: Environment variable naming the config file when ``config`` is not given.
CONFIG_ENV = "RECONCILER_CONFIG"
DEFAULT_CONFIG = "providers.yaml"


#: The wall clock (epoch seconds) used for deadlines; tests may replace it.
clock = time.time


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
entries: dict[_Key, _Entry] = {}
_locks: dict[_Key, threading.Lock] = {}
_locks_guard = threading.Lock()


#: Configs whose coordination engine a thread of this process follows (or that declare none).
_followed: set[str] = set()


def _reset_locks_after_fork() -> None:
    global _locks_guard
    _locks_guard = threading.Lock()
    _locks.clear()
    _followed.clear()  # the following threads stay behind in the parent


os.register_at_fork(after_in_child=_reset_locks_after_fork)


def resolve_config(config: str | os.PathLike[str] | None) -> str:
    if config is None:
        config = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    return os.path.abspath(os.path.expanduser(os.fspath(config)))


def valid(entry: _Entry) -> bool:
    if entry.deadline is not None and clock() >= entry.deadline:
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


def peek(key: _Key) -> Secret | None:
    """The in-process token when it is still valid (no I/O beyond ``os.stat``)."""
    entry = entries.get(key)
    return entry.secret if entry is not None and valid(entry) else None


def get(key: _Key) -> Secret:
    """The token for ``key``: in-process if valid, else through ``operations.read_token``
    (one caller per key at a time in this process; the others then find it here)."""
    with _lock_for(key):
        secret = peek(key)
        if secret is not None:
            return secret
        return _read(key)


def after_rejection(key: _Key, rejected: Secret) -> Secret | None:
    """A replacement for ``rejected``, which an API answered with 401: the token another
    thread or process already got, else one forced refresh (single-flight under the grant's
    lock). None for a static secret: there is nothing to refresh."""
    with _lock_for(key):
        secret = peek(key)
        if secret is not None and secret != rejected:
            return secret  # another thread replaced it meanwhile
        entries.pop(key, None)
        secret = _read(key)
        if secret != rejected:
            return secret  # another process refreshed it (the on-disk cache has it)
        entries.pop(key, None)
        return _force_refresh(key, rejected)


def after_insufficient_scope(key: _Key, challenge: str) -> ReconcilerError | None:
    """The error to raise for a 403 whose ``challenge`` is ``insufficient_scope``, after the
    grant was marked for a relink that asks for the scopes named; None for another 403."""
    config_path, name = key
    with _lock_for(key):
        try:
            error = operations.insufficient_scope(config_path, name, challenge)
        except Exception as failure:
            _reraise(failure)
        if error is not None:
            entries.pop(key, None)
        return error


def _read(key: _Key) -> Secret:
    """``operations.issue_token``, kept in-process as long as it allows. Call with the key's
    lock held."""
    config_path, name = key
    try:
        issued = operations.issue_token(Path(config_path), name)
    except Exception as error:
        _reraise(error)
    _follow(config_path)
    return _keep(key, issued)


def _follow(config_path: str) -> None:
    """With ``coordination:`` declared, a daemon thread follows the engine (SPEC §7): a token
    another process or machine commits replaces the one kept here at once."""
    if config_path in _followed:
        return
    _followed.add(config_path)
    if operations.coordinated(Path(config_path)):
        threading.Thread(
            target=_following, args=(config_path,), name="reconciler-follow", daemon=True
        ).start()


def _following(config_path: str) -> None:
    stop = threading.Event()
    while True:
        try:
            for name, issued in operations.follow(Path(config_path), stop):
                key = (config_path, name)
                with _lock_for(key):
                    if issued is None:
                        entries.pop(key, None)
                    else:
                        _keep(key, issued)
            return
        except Exception:  # a config being edited, an engine away: follow again shortly
            time.sleep(1.0)


def _force_refresh(key: _Key, rejected: Secret) -> Secret | None:
    config_path, name = key
    try:
        issued = operations.reissue_rejected(Path(config_path), name, rejected)
    except Exception as error:
        _reraise(error)
    return None if issued is None else _keep(key, issued)


def _keep(key: _Key, issued: Issued) -> Secret:
    if issued.watched and (issued.refresh_at is None or clock() < issued.refresh_at):
        entries[key] = _Entry(issued.secret, issued.refresh_at, issued.watched)
    return issued.secret


def _reraise(error: Exception) -> NoReturn:
    """Raise the runtime's exception for an error from the layers below (their messages name
    the grant and what to do, and never hold a token). Anything else is a bug: raised as is."""
    if isinstance(error, ReconcilerError):
        raise error
    if isinstance(error, OSError):
        raise ReconcilerError(message_of(error)) from error
    raise error
