"""The access-token cache outside the repository (SPEC §2, the churn rule).

A refresh that keeps the same refresh token must not rewrite the committed grant file, so the
new short-lived access token lives here: one age-encrypted entry per (config, grant) in
``$XDG_CACHE_HOME/oauth-reconciler/tokens/``. An entry is valid only while the config file and
the grant file are the very files it was written beside (same inode, size and mtime), so a
relink, an edit or a `git checkout` silently invalidates it.

Reading an entry is the hot path of `reconcile token` and `runtime.token()`, so this module
imports only ``os`` and pyrage there: no YAML, no AES, no HTTP stack, and not even ``json``,
``re``, ``pathlib``, ``hashlib`` or ``datetime``, which together cost a cold process more than
the whole read (``bench/token_read.py``). Entries are a few ``key value`` lines, with
backslashes and line breaks in values escaped.

Beside it, the rollback memory: the newest version of each grant file this machine has seen
(``remember_seen``, at the end of this module).
"""

from __future__ import annotations

import os
import time

import pyrage

from ..secret import Secret
from .fingerprint import of_file

TYPE_CHECKING = False  # not typing's: see reconciler.cli
if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime
    from pathlib import Path

    from .sops.keys import Identities

#: The first line of every entry; an entry in any other format is a miss.
FORMAT = "oauth-reconciler token cache 3"
#: The fields every entry has, one ``key value`` line each.
FIELDS = frozenset({
    "key", "config_file", "grant_path", "grant_file", "access_token", "token_type",
    "expires_at", "obtained_at", "refresh_at", "retry_at",
})  # fmt: skip


class CachedToken:
    """One cache entry (a plain class: ``dataclasses`` alone would cost the fast path ~10 ms)."""

    __slots__ = (
        "access_token",
        "expires_at",
        "generation",
        "grant_path",
        "obtained_at",
        "refresh_at",
        "retry_at",
        "token_type",
    )

    def __init__(
        self,
        access_token: Secret,
        token_type: str | None,
        expires_at: datetime | None,
        obtained_at: datetime | None,
        refresh_at: datetime | None,
        grant_path: str = "",
        retry_at: datetime | None = None,
        generation: int | None = None,
    ) -> None:
        self.access_token = access_token
        self.token_type = token_type
        self.expires_at = expires_at
        self.obtained_at = obtained_at
        #: When the token is due for a refresh (``plan.schedule.access_deadline``, computed
        #: by the writer under the config of the time); None: never.
        self.refresh_at = refresh_at
        #: The grant file the entry was written beside (filled in by ``read``).
        self.grant_path = grant_path
        #: After a transient failure to refresh: no new attempt before this moment.
        self.retry_at = retry_at
        #: For a grant kept in the coordination engine: the state's generation the token
        #: belongs to (a newer generation there replaces the entry); None otherwise.
        self.generation = generation

    def is_fresh(self, now: datetime) -> bool:
        """Usable as is: not yet due for a refresh, or not yet expired while a refresh is
        backing off after a transient failure."""
        return _usable(
            _timestamp(self.expires_at),
            _timestamp(self.refresh_at),
            _timestamp(self.retry_at),
            now.timestamp(),
        )

    def backing_off(self, now: datetime) -> bool:
        return self.retry_at is not None and now < self.retry_at


def _usable(
    expires_at: float | None, refresh_at: float | None, retry_at: float | None, now: float
) -> bool:
    """``CachedToken.is_fresh`` on POSIX timestamps."""
    if refresh_at is None or now < refresh_at:
        return expires_at is None or now < expires_at
    return retry_at is not None and now < retry_at and (expires_at is None or now < expires_at)


def cache_dir(environ: Mapping[str, str]) -> str:
    base = environ.get("XDG_CACHE_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "oauth-reconciler", "tokens")


def entry_path(config_path: str | os.PathLike[str], name: str, environ: Mapping[str, str]) -> str:
    """Where the entry for ``name`` of the config at ``config_path`` lives."""
    return _entry_file(_key(config_path, name), environ)


def own_recipients(identities: Identities | None) -> list[object]:
    """The recipients of this machine's own identities (X25519 ones), to encrypt what only
    this machine reads (the token cache, escrows, mirrors); each computed once."""
    found = []
    for identity in identities or ():
        known = _own.get(id(identity))
        if known is None and hasattr(identity, "to_public"):
            # Kept with the identity, so that its id is not reused meanwhile.
            known = _own[id(identity)] = (identity, identity.to_public())
        if known is not None:
            found.append(known[1])
    return found


#: id(identity) -> (identity, its recipient).
_own: dict[int, tuple[object, object]] = {}


def _key(config_path: str | os.PathLike[str], name: str) -> str:
    """What an entry is for: the resolved config path and the grant name."""
    path = os.fspath(config_path)
    resolved = _resolved.get(path)
    if resolved is None:
        resolved = _resolved[path] = os.path.realpath(path)
    return f"{resolved}\0{name}"


#: Config paths as resolved by this process (a process that reads a thousand entries would
#: otherwise resolve the same path a thousand times).
_resolved: dict[str, str] = {}


def _entry_file(key: str, environ: Mapping[str, str]) -> str:
    """The file name is a hash of ``key``; it only spreads entries out. The entry itself
    records its key, so a clash costs a cache miss, never a wrong token."""
    hashed = _hashed.get(key)
    if hashed is None:
        hashed = _hashed[key] = _hash(key)
    return os.path.join(cache_dir(environ), f"{hashed}.age")


#: Entry keys' hashes, as computed by this process.
_hashed: dict[str, str] = {}


def _hash(key: str) -> str:
    """64-bit FNV-1a (a few lines of Python cost less than importing ``hashlib`` or ``zlib``)."""
    digest = 0xCBF29CE484222325
    for byte in key.encode("utf-8", "surrogateescape"):
        digest = ((digest ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{digest:016x}"


def read(
    config_path: str | os.PathLike[str],
    name: str,
    identities: Identities,
    environ: Mapping[str, str],
    *,
    config_unchanged: bool = True,
) -> CachedToken | None:
    """The cached token, or None when there is none or it no longer matches the files.

    The entry records the grant file's path, so no config parsing is needed to check it. The
    fast path (no config parsed) also needs the config file unchanged, for the entry's
    deadline and grant path to hold; a caller that loaded the config itself passes
    ``config_unchanged=False``, so that an edit elsewhere in the config costs no refresh."""
    entry = _read_entry(config_path, name, identities, environ, config_unchanged)
    if entry is None:
        return None
    try:
        return CachedToken(
            access_token=Secret(entry["access_token"]),
            token_type=entry["token_type"] or None,
            expires_at=_moment(entry["expires_at"]),
            obtained_at=_moment(entry["obtained_at"]),
            refresh_at=_moment(entry["refresh_at"]),
            grant_path=entry["grant_path"],
            retry_at=_moment(entry["retry_at"]),
            generation=int(entry["generation"]) if entry.get("generation") else None,
        )
    except (ValueError, TypeError, OverflowError):
        return None  # not written by us: a miss


def _read_entry(
    config_path: str | os.PathLike[str],
    name: str,
    identities: Identities,
    environ: Mapping[str, str],
    config_unchanged: bool,
) -> dict[str, str] | None:
    """The entry's fields (unescaped), if it exists, decrypts, is for (``config_path``,
    ``name``) and still matches the files on disk."""
    key = _key(config_path, name)
    try:
        with open(_entry_file(key, environ), "rb") as file:
            blob = file.read()
        entry = _decode(pyrage.decrypt(blob, list(identities)))
    except (OSError, ValueError, pyrage.DecryptError):
        return None
    if entry is None or entry["key"] != key:
        return None
    if config_unchanged and entry["config_file"] != _print(of_file(config_path)):
        return None
    if entry["grant_file"] != _print(of_file(entry["grant_path"])):
        return None
    return entry


def _encode(fields: dict[str, str]) -> bytes:
    lines = [FORMAT] + [f"{key} {_escape(value)}" for key, value in fields.items()]
    return "\n".join(lines).encode("utf-8", "surrogateescape")


def _decode(plaintext: bytes) -> dict[str, str] | None:
    """The fields of an entry; None for any other format."""
    lines = plaintext.decode("utf-8", "surrogateescape").split("\n")
    if lines[0] != FORMAT:
        return None
    fields = {}
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        fields[key] = _unescape(value)
    return fields if fields.keys() >= FIELDS else None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _unescape(value: str) -> str:
    # Pairs of backslashes are split off first, so every backslash left starts a ``\n``.
    return "\\".join(part.replace("\\n", "\n") for part in value.split("\\\\"))


def _print(found: tuple[int, ...] | None) -> str:
    return " ".join(map(str, found)) if found is not None else "-"


def _number(text: str) -> float | None:
    return None if text == "-" else float(text)


def _moment(text: str) -> datetime | None:
    from datetime import UTC, datetime  # not at the top: see the module docstring

    timestamp = _number(text)
    return datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None


def _timestamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _stamp(moment: datetime | None) -> str:
    return repr(moment.timestamp()) if moment is not None else "-"


def write(
    config_path: Path,
    name: str,
    grant_path: Path,
    token: CachedToken,
    identities: Identities,
    environ: Mapping[str, str],
) -> None:
    """Store ``token`` encrypted to the local identities (the cache is for this machine only)."""
    from pathlib import Path  # writes only, as the next import

    from .files import replace_cache_file  # writes only: the read path stays lean

    recipients = own_recipients(identities)
    if not recipients:
        return  # no identity we can encrypt to: the grant file stays the only copy
    key = _key(config_path, name)
    fields = {
        "key": key,
        "config_file": _print(of_file(config_path)),
        "grant_path": str(grant_path),
        "grant_file": _print(of_file(grant_path)),
        "access_token": token.access_token.reveal(),
        "token_type": token.token_type or "",
        "expires_at": _stamp(token.expires_at),
        "obtained_at": _stamp(token.obtained_at),
        "refresh_at": _stamp(token.refresh_at),
        "retry_at": _stamp(token.retry_at),
    }
    if token.generation is not None:
        fields["generation"] = str(token.generation)
    path = Path(_entry_file(key, environ))
    data = pyrage.encrypt(_encode(fields), recipients)
    # A lost entry costs one refresh, and the grant file stays the durable record (a rotated
    # refresh token is written there first). A reader that finds no entry while it is being
    # replaced takes the slow path, which waits on the grant's lock that the writer holds.
    try:
        replace_cache_file(path, data)
    except FileNotFoundError:  # the first entry on this machine
        os.makedirs(path.parent, mode=0o700, exist_ok=True)
        replace_cache_file(path, data)


def drop(config_path: Path, name: str, environ: Mapping[str, str]) -> None:
    try:  # noqa: SIM105 (contextlib would cost the cold read ~4 ms)
        os.unlink(entry_path(config_path, name, environ))
    except FileNotFoundError:
        pass


def fresh_token(config_path: str, name: str, environ: Mapping[str, str]) -> str | None:
    """The cached token for ``name`` when it can be handed out as is, else None: the fast
    path of `reconcile token` (no config parsing, no YAML, no AES, no HTTP)."""
    from .sops.keys import load_identities  # the fast path: nothing else of the vault

    identities = load_identities(environ, ssh=False)  # entries are for X25519 identities only
    entry = _read_entry(config_path, name, identities, environ, True) if identities else None
    if entry is None:
        return None
    expires_at, retry_at = _number(entry["expires_at"]), _number(entry["retry_at"])
    if not _usable(expires_at, _number(entry["refresh_at"]), retry_at, time.time()):
        return None  # (a malformed number raises ValueError: the caller takes the full path)
    return entry["access_token"]


# ---------------------------------------------------------------------------------------
# Rollback memory: the newest version (``Grant.modified``) of each grant file that this
# machine has read before a refresh or written. A grant file put back from an older commit
# carries a superseded refresh token, which a provider that detects reuse answers by revoking
# the whole grant; comparing versions spots it. Versions are the writers' clocks, to the
# second: a file written in the same second as the newest seen one is not told apart.


def _seen_file(grant_path: str | os.PathLike[str], environ: Mapping[str, str]) -> tuple[str, str]:
    """(the memory file for ``grant_path``, the key it records: the grant file's real path)."""
    key = os.path.realpath(grant_path)
    folder = os.path.join(os.path.dirname(cache_dir(environ)), "seen")
    return os.path.join(folder, _hash(key)), key


def newest_seen(grant_path: str | os.PathLike[str], environ: Mapping[str, str]) -> datetime | None:
    """The newest version of ``grant_path`` this machine has seen, if it remembers one."""
    file, key = _seen_file(grant_path, environ)
    try:
        with open(file, encoding="utf-8", errors="surrogateescape") as handle:
            recorded, _, stamp = handle.read().rpartition("\n")
        return _moment(stamp) if recorded == key else None
    except (OSError, ValueError, OverflowError):
        return None  # no memory (or not ours): nothing to compare with


def remember_seen(
    grant_path: str | os.PathLike[str], version: datetime, environ: Mapping[str, str]
) -> None:
    """Record ``version`` of ``grant_path`` unless a newer one is remembered. Durable: the
    memory is what stands between an old file and its superseded refresh token."""
    from pathlib import Path  # writes only, as the next import

    from .files import atomic_write  # writes only: the read path stays lean

    known = newest_seen(grant_path, environ)
    if known is not None and known >= version:
        return
    file, key = _seen_file(grant_path, environ)
    data = f"{key}\n{_stamp(version)}".encode("utf-8", "surrogateescape")
    try:
        atomic_write(Path(file), data, mode=0o600)
    except FileNotFoundError:  # the first one on this machine
        os.makedirs(os.path.dirname(file), mode=0o700, exist_ok=True)
        atomic_write(Path(file), data, mode=0o600)
