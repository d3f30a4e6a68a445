"""The custody protocol and the values it passes (see ``reconciler.custody``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ReconcilerError
from ..model import Actual, Desired, Grant
from ..plan.schedule import access_deadline
from ..vault import cache
from ..vault.cache import CachedToken

if TYPE_CHECKING:
    from ..vault.sops.keys import Identities


class StaleState(ReconcilerError):
    """A commit's basis is no longer the grant's state: another writer committed first."""


class EngineUnavailable(ReconcilerError):
    """The coordination engine (SPEC §7) could not be reached in time."""


class Flight(Protocol):
    """A request to the provider under way (``Custody.in_flight``)."""

    def escrow(self, grant: Grant) -> None:
        """Keep the provider's answer safe until it is committed."""
        ...


class _NoEscrow:
    def escrow(self, grant: Grant) -> None:
        return None


#: The flight of a backend that needs no intent or escrow (one machine, commits at once).
NO_ESCROW: Flight = _NoEscrow()


@dataclass(frozen=True)
class Held:
    """A grant's state as one reader saw it."""

    name: str
    #: The grant, with the freshest access token this custody knows of; None: no grant yet.
    grant: Grant | None
    #: What was read, for the compare-and-swap of a commit (backend-specific, opaque).
    basis: Any
    #: After a transient provider failure, no new refresh before this moment.
    retry_at: datetime | None = None
    #: The access token is recorded where fast reads find it (files: the token cache).
    recorded: bool = False
    #: Why this state is known to be older than one already seen (files: an older grant file
    #: put back by git); its refresh token may have been used, so it is not presented.
    superseded: str | None = None
    #: Why the refresh token must not be presented now: an earlier request with it may still
    #: be in flight (its answer not committed), so presenting it again could make a rotating
    #: provider revoke the grant. None: nothing in flight.
    in_flight: str | None = None

    def backing_off(self, now: datetime) -> bool:
        return self.retry_at is not None and now < self.retry_at


class Custody(Protocol):
    """The protocol every backend implements (see the module docstring)."""

    kind: str
    #: Other machines write this state too: what a reader saw may be replaced at any moment
    #: (read again before waiting on a lock), and a request whose answer was lost may have
    #: rotated the token another machine would present (marked ``uncertain``).
    shared: bool

    def read(self, name: str) -> Held: ...

    def scan(self, *, decrypt: bool = True) -> tuple[Actual, Mapping[str, Held]]: ...

    def single_flight(
        self,
        name: str,
        known: Held | None = None,
        timeout: float | None = None,
        *,
        replacing: bool = False,
    ) -> AbstractContextManager[Held]: ...

    def commit(
        self,
        held: Held,
        grant: Grant,
        *,
        durable: bool,
        recipients: tuple[str, ...] | None = None,
        retry_at: datetime | None = None,
    ) -> Held: ...

    def in_flight(self, held: Held, budget: float) -> AbstractContextManager[Flight]:
        """Around one request to the provider that presents ``held``'s refresh token:
        checks that the lock outlasts ``budget`` seconds before anything is sent, records the
        intent, and keeps the answer (``Flight.escrow``) until ``commit``."""
        ...

    def leads(self) -> bool:
        """Whether this process is the one elected (among every machine sharing the
        backend) to refresh ahead of expiry; the others refresh on demand only."""
        ...

    def keep(self, held: Held) -> bool:
        """Record ``held``'s access token where this machine's fast reads find it (the token
        cache), unless it is there already; False when it cannot be handed out."""
        ...

    def offline(self, name: str) -> Held | None:
        """The grant as this machine alone knows it (its files and caches), for when the
        backend's shared part cannot be reached; None when it knows nothing."""
        ...

    def commit_offline(self, held: Held, grant: Grant) -> None:
        """Keep what a refresh made while the shared part was unreachable, on this machine
        (and, where the backend can, to be committed once it is back)."""
        ...

    def delete(self, name: str) -> bool:
        """Remove the grant; False when there was none."""
        ...

    def changes(self, stop: Any) -> Iterator[str]: ...


def cached_token(
    desired: Desired,
    name: str,
    grant_path: Path,
    identities: Identities | None,
    environ: Mapping[str, str],
) -> CachedToken | None:
    """This machine's cache entry for ``name``, if it was written for ``grant_path`` (the
    file the config points at now)."""
    if not identities:
        return None
    entry = cache.read(desired.path, name, identities, environ, config_unchanged=False)
    if entry is None or entry.grant_path != str(grant_path):
        return None
    return entry


def cache_entry(grant: Grant, refresh_before: timedelta, retry_at: datetime | None) -> CachedToken:
    """What this machine's token cache records of ``grant`` (an access token with a
    ``refresh_at`` by the one refresh rule, and the state's generation where there is one)."""
    assert grant.access_token is not None and grant.obtained_at is not None
    return CachedToken(
        access_token=grant.access_token,
        token_type=grant.token_type,
        expires_at=grant.expires_at,
        obtained_at=grant.obtained_at,
        refresh_at=access_deadline(grant.expires_at, grant.obtained_at, refresh_before),
        retry_at=retry_at,
        generation=grant.generation,
    )
