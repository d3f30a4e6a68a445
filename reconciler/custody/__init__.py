"""Custody: where a grant's live state is kept and how its writers are serialised.

One protocol, one implementation per backend (as Terraform's state managers):

- ``read(name)``: the grant as it stands, with the ``basis`` a later commit must match;
- ``single_flight(name, known)``: the grant's exclusive lock (held by one writer on any
  machine that shares the backend), then the state re-read under it (skipped when ``known``
  is provably still current), so that N callers at expiry make one refresh;
- ``commit(held, grant, durable=...)``: a compare-and-swap against ``held.basis``: refused
  (``StaleState``) when another writer got in first. ``durable`` is for what must survive (a
  rotated refresh token, a status change, a new link); the rest (a new access token that kept
  the refresh token) may live in a faster, lossy place;
- ``delete(name)`` and ``changes(stop)`` (names whose state changed, for long-running faces).

``files.FileCustody`` keeps the state in the SOPS grant files (durable) and this machine's
token cache (the access token), serialised by ``flock``. The engine of issue 7 (etcd) is one
more module beside it, passing the same contract tests (``tests/custody/``).

May import: ``model``, ``errors``, ``plan`` (the refresh deadline), ``vault``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..model import Desired
from .protocol import NO_ESCROW, Custody, EngineUnavailable, Flight, Held, StaleState

if TYPE_CHECKING:
    from ..vault.sops.keys import Identities


def open_custody(
    desired: Desired, identities: Identities | None, environ: Mapping[str, str] | None = None
) -> Custody:
    """The custody that ``desired`` declares: etcd with ``coordination:``, else the files."""
    # Each backend is loaded when declared: the file one brings the SOPS stack, etcd's its client.
    if desired.coordination is not None:
        from .etcd import EtcdCustody

        return EtcdCustody(desired, identities, environ)
    from .files import FileCustody

    return FileCustody(desired, identities, environ)


__all__ = [
    "NO_ESCROW",
    "Custody",
    "EngineUnavailable",
    "Flight",
    "Held",
    "StaleState",
    "open_custody",
]
