"""The access-token cache outside the repository (SPEC §2, the churn rule).

A refresh that keeps the same refresh token must not rewrite the committed grant file, so the
new short-lived access token lives here: one age-encrypted JSON entry per (config, grant) in
``$XDG_CACHE_HOME/oauth-reconciler/tokens/``. An entry is valid only while the config file and
the grant file are the very files it was written beside (same inode, size and mtime), so a
relink, an edit or a `git checkout` silently invalidates it.

Reading an entry needs neither YAML nor AES nor the HTTP stack: this is the hot path of
`reconcile token` and `runtime.token()`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ..secret import Secret


class CachedToken:
    """One cache entry (a plain class: ``dataclasses`` alone would cost the fast path ~10 ms)."""

    __slots__ = (
        "access_token",
        "expires_at",
        "grant_path",
        "obtained_at",
        "refresh_before",
        "retry_at",
        "token_type",
    )

    def __init__(
        self,
        access_token: Secret,
        token_type: str | None,
        expires_at: datetime | None,
        obtained_at: datetime,
        refresh_before: float,
        grant_path: str = "",
        retry_at: datetime | None = None,
    ) -> None:
        self.access_token = access_token
        self.token_type = token_type
        self.expires_at = expires_at
        self.obtained_at = obtained_at
        #: ``refresh_before`` of the config the entry was written under, in seconds.
        self.refresh_before = refresh_before
        #: The grant file the entry was written beside (filled in by ``read``).
        self.grant_path = grant_path
        #: After a transient failure to refresh: no new attempt before this moment.
        self.retry_at = retry_at

    def is_fresh(self, now: datetime) -> bool:
        """Usable as is: not within ``refresh_before`` of its expiry, or not yet expired while
        a refresh is backing off after a transient failure."""
        if self.expires_at is None:
            return True
        if (self.expires_at - now).total_seconds() > self.refresh_before:
            return True
        return self.backing_off(now) and now < self.expires_at

    def backing_off(self, now: datetime) -> bool:
        return self.retry_at is not None and now < self.retry_at


def cache_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CACHE_HOME") or os.path.join(
        environ.get("HOME", str(Path.home())), ".cache"
    )
    return Path(base) / "oauth-reconciler" / "tokens"


def entry_path(config_path: Path, name: str, environ: Mapping[str, str]) -> Path:
    key = hashlib.sha256(f"{Path(config_path).resolve()}\0{name}".encode()).hexdigest()[:32]
    return cache_dir(environ) / f"{key}.age"


def _fingerprint(path: Path) -> list[int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def read(
    config_path: Path,
    name: str,
    identities: Sequence,
    environ: Mapping[str, str],
    *,
    config_unchanged: bool = True,
) -> CachedToken | None:
    """The cached token, or None when there is none or it no longer matches the files.

    The entry records the grant file's path, so no config parsing is needed to check it. The
    fast path (no config parsed) also needs the config file unchanged, for the entry's
    ``refresh_before`` and grant path to hold; a caller that loaded the config itself passes
    ``config_unchanged=False``, so that an edit elsewhere in the config costs no refresh."""
    import pyrage

    try:
        blob = entry_path(config_path, name, environ).read_bytes()
        entry = json.loads(pyrage.decrypt(blob, list(identities)))
    except (OSError, ValueError, KeyError, pyrage.DecryptError):
        return None
    grant_path = entry.get("grant_path")
    if not isinstance(grant_path, str):
        return None
    if config_unchanged and entry.get("config") != _fingerprint(config_path):
        return None
    if entry.get("grant") != _fingerprint(Path(grant_path)):
        return None
    expires = entry.get("expires_at")
    return CachedToken(
        access_token=Secret(entry["access_token"]),
        token_type=entry.get("token_type"),
        expires_at=_moment(expires),
        obtained_at=datetime.fromtimestamp(entry["obtained_at"], UTC),
        refresh_before=float(entry.get("refresh_before", 0)),
        grant_path=grant_path,
        retry_at=_moment(entry.get("retry_at")),
    )


def _moment(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None


def write(
    config_path: Path,
    name: str,
    grant_path: Path,
    token: CachedToken,
    identities: Sequence,
    environ: Mapping[str, str],
) -> None:
    """Store ``token`` encrypted to the local identities (the cache is for this machine only)."""
    import pyrage

    from .files import atomic_write

    recipients = [i.to_public() for i in identities if hasattr(i, "to_public")]
    if not recipients:
        return  # no identity we can encrypt to: the grant file stays the only copy
    entry = {
        "config": _fingerprint(config_path),
        "grant_path": str(grant_path),
        "grant": _fingerprint(grant_path),
        "access_token": token.access_token.reveal(),
        "token_type": token.token_type,
        "expires_at": token.expires_at.timestamp() if token.expires_at else None,
        "obtained_at": token.obtained_at.timestamp(),
        "refresh_before": token.refresh_before,
        "retry_at": token.retry_at.timestamp() if token.retry_at else None,
    }
    path = entry_path(config_path, name, environ)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, pyrage.encrypt(json.dumps(entry).encode(), recipients), mode=0o600)


def drop(config_path: Path, name: str, environ: Mapping[str, str]) -> None:
    entry_path(config_path, name, environ).unlink(missing_ok=True)


def fresh_token(config_path: str, name: str, environ: Mapping[str, str]) -> str | None:
    """The cached token for ``name`` when it can be handed out as is, else None: the fast
    path of `reconcile token` (no config parsing, no YAML, no AES, no HTTP)."""
    from .keys import load_identities

    identities = load_identities(environ)
    cached = read(Path(config_path), name, identities, environ) if identities else None
    if cached is None or not cached.is_fresh(datetime.now(UTC)):
        return None
    return cached.access_token.reveal()
