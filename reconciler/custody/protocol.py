"""The custody protocol and the values it passes (see ``reconciler.custody``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..errors import ReconcilerError
from ..model import Actual, Grant


class StaleState(ReconcilerError):
    """A commit's basis is no longer the grant's state: another writer committed first."""


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

    def backing_off(self, now: datetime) -> bool:
        return self.retry_at is not None and now < self.retry_at


class Custody(Protocol):
    """The protocol every backend implements (see the module docstring)."""

    kind: str

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

    def delete(self, name: str) -> bool:
        """Remove the grant; False when there was none."""
        ...

    def changes(self, stop: Any) -> Iterator[str]: ...
