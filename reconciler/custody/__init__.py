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
- ``in_flight(held, budget)`` around a request that presents the refresh token (the lock
  checked before sending, the intent recorded, the answer escrowed until the commit);
- ``delete(name)``, ``changes(stop)`` (names whose state changed, for long-running faces),
  ``keep(held)`` (record a token for fast reads), ``leads()`` (the elected `--watch`), and
  ``offline(name)`` / ``commit_offline`` for when a shared backend cannot be reached.

``files.FileCustody`` keeps the state in the SOPS grant files (durable) and this machine's
token cache (the access token), serialised by ``flock``. ``etcd.EtcdCustody`` keeps it in etcd
v3 (SPEC §7) through ``etcd_gateway`` (the JSON gateway on httpx2), the grant files keeping
each grant's identity, with ``etcd_records`` (a grant as a state record, encrypted, and as its
attached file shows it), ``keyring`` (each writer's key for the values it seals, and
``sealed``, a value sealed to each recipient) and ``etcd_session`` (this process's gateways,
leases and locks); both
backends pass the same contract tests (``tests/custody/``). ``etcd_batch`` takes many grants'
locks, intents and commits in one transaction each (``apply``).
``failpoints`` stops or kills a process at named points of a refresh, for the tests.

May import: ``model``, ``errors``, ``config`` (a secret reference), ``plan`` (the refresh
deadline), ``vault``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from ..model import Desired, Grant
from ..plan import is_due
from .protocol import NO_ESCROW, Custody, EngineUnavailable, Flight, Held, StaleState

if TYPE_CHECKING:
    from ..vault.sops.keys import Identities


def open_custody(
    desired: Desired, identities: Identities | None, environ: Mapping[str, str] | None = None
) -> Custody:
    """The custody that ``desired`` declares: etcd with ``coordination:``, else the files."""
    # Each backend is loaded when declared: the file one brings the SOPS stack, etcd's its client.
    if desired.coordination is not None:
        from .etcd import EtcdCustody  # the etcd client (httpx2), only when declared

        return EtcdCustody(desired, identities, environ)
    from .files import FileCustody  # the SOPS stack, only when a backend is opened

    return FileCustody(desired, identities, environ)


def usable_as_is(custody: Custody, name: str, desired: Desired, now: datetime) -> Grant | None:
    """The grant as ``custody`` holds it, when its access token can be handed out without a
    refresh (status ok, not due, no request in flight) and is recorded for fast reads; None
    sends the caller to the single-flight refresh, which also reports an unreachable engine.
    Taking no lock, it spares the callers of a grant that is not due any wait on one."""
    try:
        held = custody.read(name)
    except EngineUnavailable:
        return None
    grant = held.grant
    if (
        grant is None
        or grant.status != "ok"
        or grant.access_token is None
        or held.in_flight is not None
        or is_due(grant, desired.refresh_before, desired.keepalive, now)
    ):
        return None
    return grant if custody.keep(held) else None


__all__ = [
    "NO_ESCROW",
    "Custody",
    "EngineUnavailable",
    "Flight",
    "Held",
    "StaleState",
    "open_custody",
    "usable_as_is",
]
