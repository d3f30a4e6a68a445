"""Grant state in the SOPS grant files, serialised by ``flock`` (one machine).

What is durable lives in ``<store.dir>/<name>.sops.yaml``: the refresh token, the status, a
link's scopes. An access token obtained by a refresh that kept the refresh token lives in
this machine's age-encrypted token cache instead (SPEC §2, the churn rule), so that git sees
no change; ``Held.grant`` is the file's grant with that fresher token laid over it.

The basis of a commit is the grant file's fingerprint (``vault.fingerprint``) taken *before*
the read it vouches for: every writer replaces the file by an atomic rename under the lock,
so an unchanged fingerprint means the file still holds what was read. A fingerprint taken
after the read could vouch for a newer file than the grant held, and refreshing with a
superseded refresh token loses the grant.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model import Actual, Desired, Grant
from ..vault import cache, store
from ..vault.errors import VaultError
from ..vault.files import file_lock
from ..vault.fingerprint import Fingerprint, of_file
from .protocol import NO_ESCROW, Flight, Held, StaleState, cache_entry, cached_token

if TYPE_CHECKING:
    from ..vault.sops.keys import Identities


@dataclass(frozen=True)
class _Basis:
    #: The grant file's fingerprint, taken before ``stored`` was read; None: no file.
    fingerprint: Fingerprint | None
    #: The grant as the file holds it (no cached token laid over it).
    stored: Grant | None


class FileCustody:
    """``custody.Custody`` over the grant files of ``desired.store_dir``."""

    kind = "files"
    shared = False

    def __init__(
        self,
        desired: Desired,
        identities: Identities | None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.desired = desired
        self.identities = identities
        self.environ = os.environ if environ is None else environ

    def path(self, name: str) -> Path:
        return store.grant_path(self.desired.store_dir, name)

    # ------------------------------------------------------------------------- reading

    def read(self, name: str) -> Held:
        path = self.path(name)
        fingerprint = of_file(path)
        stored = store.read_grant(path, self.identities) if fingerprint is not None else None
        return self._held(name, _Basis(fingerprint, stored))

    def scan(self, *, decrypt: bool = True) -> tuple[Actual, Mapping[str, Held]]:
        """Every grant file (``Actual``), with the access tokens of this machine's cache laid
        over, and each readable grant as ``Held`` (to pass as ``known``). Without ``decrypt``
        only the files' plaintext is read."""
        fingerprints = store.fingerprints(self.desired.store_dir)  # before the scan reads them
        actual = store.scan(
            self.desired.store_dir, self.identities if decrypt else None, self.environ, fingerprints
        )
        held = {
            name: self._held(name, _Basis(fingerprints.get(name), grant))
            for name, grant in actual.grants.items()
        }
        grants = {name: h.grant for name, h in held.items() if h.grant is not None}
        return replace(actual, grants=grants), held

    def _held(self, name: str, basis: _Basis) -> Held:
        stored = basis.stored
        cached = self._cached(name) if stored is not None and stored.kind == "oauth2" else None
        if stored is None or cached is None:
            return Held(name, stored, basis)
        grant = replace(
            stored,
            access_token=cached.access_token,
            token_type=cached.token_type or stored.token_type,
            expires_at=cached.expires_at,
            obtained_at=cached.obtained_at,
        )
        return Held(name, grant, basis, retry_at=cached.retry_at, recorded=True)

    def _cached(self, name: str) -> cache.CachedToken | None:
        return cached_token(self.desired, name, self.path(name), self.identities, self.environ)

    # --------------------------------------------------------------------- single flight

    @contextlib.contextmanager
    def single_flight(
        self,
        name: str,
        known: Held | None = None,
        timeout: float | None = None,
        *,
        replacing: bool = False,
    ) -> Iterator[Held]:
        """The grant's lock, then its state: ``known``'s file content when its fingerprint
        shows the file unchanged (and it was decrypted), else the file read again. The cache
        is always read again: another process may have refreshed without touching the file.

        ``replacing``: the caller writes a new grant whatever the old one holds (a link), so
        only its plaintext is read, and a file that cannot be read at all reads as none."""
        path = self.path(name)
        with file_lock(path, timeout=timeout):
            if replacing:
                fingerprint = of_file(path)
                try:
                    stored = store.read_grant(path, None) if fingerprint is not None else None
                except VaultError:
                    stored = None
                yield Held(name, stored, _Basis(fingerprint, stored))
                return
            basis = known.basis if known is not None else None
            if not (
                isinstance(basis, _Basis)
                and basis.stored is not None
                and basis.stored.decrypted
                and basis.fingerprint is not None
                and of_file(path) == basis.fingerprint
            ):
                fingerprint = of_file(path)
                stored = (
                    store.read_grant(path, self.identities) if fingerprint is not None else None
                )
                basis = _Basis(fingerprint, stored)
            held = self._held(name, basis)
            yield replace(held, superseded=self._superseded(path, basis.stored))

    def _superseded(self, path: Path, stored: Grant | None) -> str | None:
        """Why ``stored`` is older than a version of its file this machine has seen; else
        remember its version as seen (the rollback memory, ``vault.cache.remember_seen``)."""
        if stored is None or stored.modified is None:
            return None
        newest = cache.newest_seen(path, self.environ)
        if newest is not None and stored.modified < newest:
            return (
                f"{stored.name}: {path} was written at {stored.modified:%Y-%m-%dT%H:%M:%SZ}, but "
                f"this machine has seen a newer version of it (written "
                f"{newest:%Y-%m-%dT%H:%M:%SZ}): an older grant file was put back (a git "
                "checkout, revert or merge?). Its refresh token may be superseded, and presenting "
                "it again can make the provider revoke the grant, so it was not used. Restore "
                f"the newest version of that file (`git log -p -- {path}`); if this older one is "
                "intended, run again with --force."
            )
        cache.remember_seen(path, stored.modified, self.environ)
        return None

    # -------------------------------------------------------------------------- writing

    def commit(
        self,
        held: Held,
        grant: Grant,
        *,
        durable: bool,
        recipients: tuple[str, ...] | None = None,
        retry_at: datetime | None = None,
    ) -> Held:
        """Write ``grant`` if the file is still the one ``held`` read. ``durable``: the grant
        file (then the cache follows it); otherwise only this machine's token cache."""
        path = self.path(held.name)
        basis = held.basis
        if not isinstance(basis, _Basis) or of_file(path) != basis.fingerprint:
            raise StaleState(
                f"{path}: changed since it was read (another process wrote it); nothing was "
                "written, run the command again"
            )
        if durable:
            to = recipients or self.desired.recipients.get(held.name) or grant.recipients
            written = store.write_grant(path, grant, to)
            cache.remember_seen(path, written, self.environ)
            stored = replace(grant, recipients=tuple(to), modified=written)
            basis = _Basis(of_file(path), stored)
        if self._recordable(grant):
            self._record(held.name, path, grant, retry_at)
            return Held(held.name, grant, basis, retry_at=retry_at, recorded=True)
        cache.drop(self.desired.path, held.name, self.environ)
        return Held(held.name, grant, basis)

    def _recordable(self, grant: Grant) -> bool:
        """An access token that fast reads may hand out, and an identity to encrypt it to."""
        return (
            grant.kind == "oauth2"
            and grant.status == "ok"
            and grant.access_token is not None
            and grant.obtained_at is not None
            and bool(self.identities)
        )

    def _record(self, name: str, path: Path, grant: Grant, retry_at: datetime | None) -> None:
        assert grant.access_token is not None and grant.obtained_at is not None
        assert self.identities is not None
        entry = cache_entry(grant, self.desired.refresh_before, retry_at)
        cache.write(self.desired.path, name, path, entry, self.identities, self.environ)

    def leads(self) -> bool:
        """One machine: every watcher of it may refresh (the file lock keeps it single)."""
        return True

    def keep(self, held: Held) -> bool:
        grant = held.grant
        if grant is None or not self._recordable(grant):
            return False
        if not held.recorded:
            self._record(held.name, self.path(held.name), grant, held.retry_at)
        return True

    def offline(self, name: str) -> Held | None:
        """The files are this machine's own: the same as ``read``."""
        return self.read(name)

    def commit_offline(self, held: Held, grant: Grant) -> None:
        with self.single_flight(held.name, held) as current:
            durable = grant.refresh_token != (
                current.grant.refresh_token if current.grant else None
            )
            self.commit(current, grant, durable=durable)

    @contextlib.contextmanager
    def in_flight(self, held: Held, budget: float) -> Iterator[Flight]:
        """Nothing to record: the file lock is held by this process until the commit, which
        is written at once."""
        yield NO_ESCROW

    def delete(self, name: str) -> bool:
        path = self.path(name)
        existed = path.exists()
        store.delete_grant(path)
        cache.drop(self.desired.path, name, self.environ)
        return existed

    # ------------------------------------------------------------------------- watching

    def changes(self, stop: Any) -> Iterator[str]:
        """Names whose grant file or cache entry changed, until ``stop`` (an Event) is set."""
        import watchfiles  # its Rust extension is loaded only by a long-running face

        names = self.desired.names()
        entries = {cache.entry_path(self.desired.path, name, self.environ): name for name in names}
        grants_folder = str(self.desired.store_dir)
        folders = [grants_folder, cache.cache_dir(self.environ)]
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
        for batch in watchfiles.watch(*folders, stop_event=stop, debounce=10, step=10):
            changed: set[str] = set()
            for _, changed_path in batch:
                if changed_path in entries:
                    changed.add(entries[changed_path])
                elif (
                    changed_path.endswith(store.SUFFIX)
                    and os.path.dirname(changed_path) == grants_folder
                ):
                    changed.add(os.path.basename(changed_path)[: -len(store.SUFFIX)])
            yield from sorted(changed)
