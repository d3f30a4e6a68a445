"""What bounds keeping a token in a long-running process's memory (``runtime``): its refresh
deadline, and the files whose change must send it back to ``operations``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..model import Secret
from ..vault import cache
from ..vault.fingerprint import of_file
from ..vault.sops.keys import load_identities
from ..vault.store import read_grant


@dataclass(frozen=True)
class Issued:
    """A token for a long-running process to keep in memory, with what bounds that use."""

    secret: Secret
    #: When it is due for a refresh (POSIX seconds, ``plan.schedule``); None: never.
    refresh_at: float | None = None
    #: ``(path, fingerprint)`` of every file whose change must send the process back to
    #: ``issue_token``, taken *before* the value was read (a fingerprint must never vouch for
    #: a newer file than the value came from). Empty: do not keep the token at all.
    watched: tuple[tuple[str, tuple[int, ...]], ...] = ()


def issued(
    config_path: Path,
    name: str,
    secret: Secret,
    grant_file: str,
    config_before: tuple[int, ...] | None,
    grant_before: tuple[int, ...] | None,
    environ: Mapping[str, str],
) -> Issued:
    """What bounds keeping ``secret`` in memory: a static secret until its files change; an
    OAuth token while the on-disk cache entry that records its deadline is still the one read
    here. ``*_before`` are fingerprints from before ``secret`` was read."""
    try:
        kind = read_grant(Path(grant_file), None).kind  # plaintext metadata: no decryption
        if kind == "secret":
            if config_before is None or grant_before is None:
                return Issued(secret)
            return Issued(
                secret, None, ((str(config_path), config_before), (grant_file, grant_before))
            )
        # An OAuth token's deadline is in the on-disk cache entry, which ``cache.read``
        # accepts only while the config and grant files are those it was written beside:
        # taken just before that read, these fingerprints are never newer than it vouches for.
        entry_file = str(cache.entry_path(config_path, name, environ))
        files = (str(config_path), grant_file, entry_file)
        watched = tuple((path, found) for path in files if (found := of_file(path)) is not None)
        cached = cache.read(config_path, name, load_identities(environ, required=True), environ)
    except Exception:  # only costs keeping it: the next call reads again
        return Issued(secret)
    if cached is None or cached.access_token != secret or len(watched) != len(files):
        return Issued(secret)  # no on-disk record of its deadline (e.g. no X25519 identity)
    deadline = cached.refresh_at.timestamp() if cached.refresh_at is not None else None
    return Issued(secret, deadline, watched)
