"""Many grants' refresh locks taken in one etcd transaction (``apply`` over shared custody).

``claim`` tries every named grant's lock at once, each in a nested transaction of its own, and
never waits: a grant whose lock another process holds is left to it (``Claim.locked``), and
one whose state changed since the caller read it is returned unlocked with that state
(``Claim.changed``: usually another machine refreshed it). Each lock taken
(``Claim.held``) is then exactly the lock ``EtcdCustody.single_flight`` takes (the same key,
on the same lease, with the state and any intent read under it) and is used the same way:
``in_flight``, then ``commit`` (which releases it), or ``release``. Machines that apply the
same plan at once thus share out the grants instead of queueing on each other's locks. The
intents of the requests about to be sent can be recorded by the claim itself (where none is
there yet), which saves a transaction per batch.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pyrage

from ..errors import ReconcilerError
from ..model import Grant
from ..vault import cache
from ..vault.files import fsync_dir
from . import etcd_gateway as gw
from . import failpoints
from .etcd import ESCROW_LOG, EtcdCustody, _Basis, _Commit, _Flight, _live_logs
from .etcd_records import encrypt, to_record
from .etcd_session import RENEWED_MARGIN, Lock, LockLost, describe_holder
from .protocol import EngineUnavailable, Flight, Held, StaleState

#: Grants per transaction: three operations each, within etcd's default of 128 per branch.
BATCH = 32


@dataclass
class Claim:
    #: Locked by this process, as ``single_flight`` yields them.
    held: dict[str, Held] = field(default_factory=dict)
    #: Locked by another process (on this machine or another): left to it.
    locked: list[str] = field(default_factory=list)
    #: Not locked, state changed since it was read: the state as it is now (no lock held; the
    #: grant file not read, so its recipients are the state's).
    changed: dict[str, Held] = field(default_factory=dict)
    #: Held, with an intent recorded by the claim (see ``claim``): name -> the intent's value.
    intended: dict[str, bytes] = field(default_factory=dict)


def claim(
    custody: EtcdCustody,
    names: Sequence[str],
    known: Mapping[str, Held],
    presenting: Collection[str] = (),
    *,
    look_first: bool = False,
) -> Claim:
    """Take, in one round trip, the lock of each of ``names`` that is free and whose state is
    still the one ``known`` holds (its revision). Grants without a usable ``known`` state are
    claimed whatever their revision.

    ``presenting``: grants with a ``known`` state whose refresh token is about to be
    presented. Their intent is recorded in the same transaction (on the intent lease), where
    no intent is there yet; a grant with one there is not claimed (it comes back as
    ``changed``, its state as known, and goes the per-grant way).

    ``look_first``: the grants are likely refreshed already (by another machine). Their
    states are read first, in a read-only transaction, and only those still as known are
    claimed: a claim is a write that etcd puts through its log even when every compare
    fails, which costs it about three times the read."""
    if len(names) > BATCH:
        raise ValueError(f"at most {BATCH} grants per claim")
    found = Claim()
    if look_first:
        names = _still_as_known(custody, names, known, found.changed)
        if not names:
            return found
    session = custody._session()
    lease = session.lock_lease
    bases = {name: _known_basis(known.get(name)) for name in names}
    going = [n for n in names if n in presenting and bases[n] is not None]
    intents = _encrypted_per_recipients(
        custody, going, describe_holder, lambda n: custody._recipients(n, known[n].grant)
    )
    intent_lease = session.intent() if intents else 0
    # One holder record per set of recipients in the batch (it names this process; the nonce
    # tells a retried request that did apply from another holder).
    nonce = os.urandom(8).hex()
    holders = _encrypted_per_recipients(
        custody,
        names,
        lambda: describe_holder() | {"nonce": nonce},
        lambda n: custody._recipients(n),
    )
    operations = []
    for name in names:
        holder = holders[name]
        lock_key = custody.key("locks", name)
        state_key, intent_key = custody.key("grants", name), custody.key("inflight", name)
        compare = [gw.compare_create(lock_key, 0)]
        success = [gw.put(lock_key, holder, lease)]
        basis = bases[name]
        if basis is not None:
            # The state under the lock is then the known one: not sent again.
            compare.append(gw.compare_mod(state_key, basis.revision))
        else:
            success.append(gw.get(state_key))
        intent_value = intents.get(name)
        if intent_value is not None:
            compare.append(gw.compare_create(intent_key, 0))
            success.append(gw.put(intent_key, intent_value, intent_lease))
        else:
            success.append(gw.get(intent_key))
        # Refused: the lock when it is held, else (the state changed, or an intent is there)
        # the state; only what is looked at is sent back.
        refused = gw.nested(
            [gw.compare_create(lock_key, 0)], [gw.get(state_key)], [gw.get(lock_key)]
        )
        operations.append(gw.nested(compare, success, [refused]))
    result = custody.gateway.txn([], operations)
    for name, one in zip(names, result.nested, strict=True):
        lock_key, holder = custody.key("locks", name), holders[name]
        if not one.succeeded:
            why = one.nested[0]
            lock = None if why.succeeded or not why.ranges[0] else why.ranges[0][0]
            state = why.ranges[0][0] if why.succeeded and why.ranges[0] else None
            if lock is not None and lock.value == holder:
                # A retried request that had applied: this lock is ours, with no state read
                # under it. Given back, and the grant tried again the ordinary way.
                custody._release(Lock(session, lock_key, lease, lock.create_revision))
                found.locked.append(name)
            elif lock is not None:
                found.locked.append(name)
            else:
                # Only whether it is still due is looked at (the grant file is not read): one
                # that is goes the per-grant way, which reads it all again under its lock.
                found.changed[name] = custody._held(name, custody._decode(name, state), None)
            continue
        found_ranges = iter(one.ranges)
        as_known = bases[name] is not None
        state = None if as_known else _first(next(found_ranges))
        recorded = intents.get(name)
        intent = None if recorded is not None else _first(next(found_ranges))
        if recorded is not None:
            found.intended[name] = recorded
        custody._locks[name] = Lock(session, lock_key, lease, result.revision)
        try:
            found.held[name] = _held_under_lock(
                custody, name, known.get(name) if as_known else None, state, intent
            )
        except BaseException:
            release(custody, name)
            raise
    return found


def _still_as_known(
    custody: EtcdCustody, names: Sequence[str], known: Mapping[str, Held], changed: dict[str, Held]
) -> list[str]:
    """``names`` less those whose state changed since ``known`` (put in ``changed``, as a
    refused claim gives them), read in one read-only transaction."""
    bases = {n: b for n in names if (b := _known_basis(known.get(n))) is not None}
    if not bases:
        return list(names)
    result = custody.gateway.txn([], [gw.get(custody.key("grants", n)) for n in bases])
    for (name, basis), found in zip(bases.items(), result.ranges, strict=True):
        state = _first(found)
        if state is not None and state.mod_revision != basis.revision:
            changed[name] = custody._held(name, custody._decode(name, state), None)
    return [n for n in names if n not in changed]


def _first(found: tuple[gw.KeyValue, ...]) -> gw.KeyValue | None:
    return found[0] if found else None


def _encrypted_per_recipients(
    custody: EtcdCustody,
    names: Sequence[str],
    record: Callable[[], dict[str, Any]],
    recipients_of: Callable[[str], tuple[str, ...]],
) -> dict[str, bytes]:
    """``record()`` encrypted once per set of recipients among ``names`` (each value only
    to its grant's recipients, as every value in the engine is): name -> value."""
    by_set: dict[tuple[str, ...], bytes] = {}
    values = {}
    for name in names:
        to = tuple(sorted(recipients_of(name)))
        if to not in by_set:
            by_set[to] = encrypt(record(), to, custody.keyring)
        values[name] = by_set[to]
    return values


def _known_basis(held: Held | None) -> _Basis | None:
    if held is None or held.grant is None or not isinstance(held.basis, _Basis):
        return None
    return held.basis if held.basis.revision else None


def _held_under_lock(
    custody: EtcdCustody,
    name: str,
    known: Held | None,
    state: gw.KeyValue | None,
    intent: gw.KeyValue | None,
) -> Held:
    """As ``single_flight`` yields it: ``known`` (a state the claim found unchanged), else
    ``state``; an escrow left by an earlier run settled first."""
    basis = _known_basis(known)
    as_known = basis is not None
    if basis is None:
        basis = custody._decode(name, state)
    settled = custody._settle_escrow(name, basis)
    if settled is not basis:
        basis, intent, as_known = settled, None, False  # the commit removed the intent
    if as_known and known is not None:
        held = known
    else:
        file = custody._file(name, custody.identities if basis.stored is None else None)
        held = custody._held(name, basis, file)
    return replace(held, in_flight=custody._describe_intent(name, intent))


def drop_intents(custody: EtcdCustody, names: Collection[str]) -> None:
    """Remove intents a claim recorded for requests that will not be sent after all."""
    if names:
        with contextlib.suppress(EngineUnavailable, gw.EngineError):
            custody.gateway.txn([], [gw.delete(custody.key("inflight", n)) for n in sorted(names)])


def release(custody: EtcdCustody, name: str) -> None:
    """Release ``name``'s lock unless a commit did."""
    lock = custody._locks.pop(name, None)
    if lock is not None:
        custody._release(lock)


class Batched(EtcdCustody):
    """The custody of one batch of claimed grants whose refresh tokens are all presented:
    their intents are recorded in one transaction before any request is sent
    (``record_intents``), and their commits are compare-and-swaps gathered into one
    transaction (``flush``), each nested so that it succeeds or is refused on its own. Until
    the flush, each answer is in this machine's escrow; every other step is
    ``EtcdCustody``'s."""

    def __init__(self, custody: EtcdCustody) -> None:
        self.__dict__.update(custody.__dict__)
        self._intended: dict[str, bytes] = {}
        self._pending: dict[str, _Commit | Held] = {}
        self._log: str | None = None
        self._log_fd: int | None = None
        self._logged: set[str] = set()
        self._log_guard = threading.Lock()

    # ---------------------------------------------------------------- the escrow log

    def _write_escrow(self, held: Held, grant: Grant) -> None:
        """The answer, as one line of this batch's escrow log (``EtcdCustody._read_escrow``
        reads it after a crash): written at once, made durable by ``flush`` before the
        commit."""
        assert isinstance(held.basis, _Basis)
        recipients = cache.own_recipients(self.identities)
        if not recipients:
            return
        data = json.dumps(
            {
                "engine": self._engine_id(),
                "name": held.name,
                "revision": held.basis.revision,
                "grant": to_record(grant),
            }
        ).encode("utf-8")
        line = base64.b64encode(bytes(pyrage.encrypt(data, recipients))) + b"\n"
        with self._log_guard:
            if self._log_fd is None:
                folder = self._escrow_path(held.name).parent
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                path = folder / f"{ESCROW_LOG}{os.getpid()}-{os.urandom(6).hex()}.age"
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
                self._log_fd = os.open(path, flags, 0o600)
                # Other processes leave a locked log alone (``EtcdCustody._log_entries``);
                # the lock goes with the process, so a log left by a crash is read.
                fcntl.flock(self._log_fd, fcntl.LOCK_EX)
                self._log = str(path)
                _live_logs.add(self._log)
            os.write(self._log_fd, line)
            self._logged.add(held.name)

    def _drop_escrow(self, name: str) -> None:
        if name not in self._logged:
            super()._drop_escrow(name)

    def _uncommitted(self, name: str, error: EngineUnavailable) -> EngineUnavailable:
        if name in self._logged:
            return EngineUnavailable(
                f"{name}: the provider answered, but the coordination engine could not "
                f"take the commit ({error}). The answer is kept encrypted on this machine "
                "and committed by its next run, if nobody committed since."
            )
        return super()._uncommitted(name, error)

    def _close_log(self, settled: bool) -> None:
        """Done with the log: removed when every answer in it was committed or refused,
        else left for the next run to settle."""
        if self._log is None or self._log_fd is None:
            return
        os.close(self._log_fd)
        self._log_fd = None
        _live_logs.discard(self._log)
        if settled:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._log)
        self._log = None

    def intended(self, values: Mapping[str, bytes]) -> None:
        """Intents already recorded (by the claim), with their values."""
        self._intended.update(values)

    def record_intents(self, helds: Sequence[Held]) -> None:
        """One transaction: the intent of every request about to be sent. The lock of each
        is checked again by ``in_flight``, just before its request."""
        if not helds:
            return
        session = self._session()
        lease = session.intent()
        grants = {h.name: h.grant for h in helds}
        values = _encrypted_per_recipients(
            self, list(grants), describe_holder, lambda n: self._recipients(n, grants[n])
        )
        self.gateway.txn([], [gw.put(self.key("inflight", n), values[n], lease) for n in grants])
        self._intended.update(values)

    @contextlib.contextmanager
    def in_flight(self, held: Held, budget: float) -> Iterator[Flight]:
        value = self._intended.pop(held.name, None)
        if value is None:
            with super().in_flight(held, budget) as flight:
                yield flight
            return
        lock = self._locks.get(held.name)
        intent_key = self.key("inflight", held.name)
        failpoints.hit("before-send")
        # The last check before the request, as ``EtcdCustody.in_flight`` makes it.
        if (
            lock is None
            or lock.lost
            or (lock.session.remaining() < RENEWED_MARGIN and not lock.renew())
        ):
            with contextlib.suppress(EngineUnavailable, gw.EngineError):
                self.gateway.delete(intent_key)  # nothing was sent: the intent can go
            raise LockLost(self._lost(held.name))
        try:
            yield _Flight(self, held)
        except BaseException as error:
            self._abandon(intent_key, value, lock, error)
            raise

    def _abandon(self, intent_key: bytes, value: bytes, lock: Lock, error: BaseException) -> None:
        with contextlib.suppress(EngineUnavailable, gw.EngineError):
            if getattr(error, "ambiguous", False):
                lease = self.gateway.grant(lock.session.intent_ttl)
                self.gateway.put(intent_key, value, lease)
            else:
                self.gateway.delete(intent_key)

    def commit(
        self,
        held: Held,
        grant: Grant,
        *,
        durable: bool,
        recipients: tuple[str, ...] | None = None,
        retry_at: datetime | None = None,
        release: bool = True,
    ) -> Held:
        """Gathered for ``flush`` (what it returns is what the commit will write)."""
        prepared = self._prepare(held, grant, durable, recipients, retry_at, release)
        self._pending[held.name] = prepared
        if isinstance(prepared, Held):
            return prepared
        done = replace(prepared.live, revision=None, generation=prepared.generation)
        return Held(held.name, done, held.basis, retry_at=retry_at)

    def flush(self) -> dict[str, Exception]:
        """Every gathered commit in one transaction; then each is finished as ``commit``
        finishes it. Returns, per grant whose commit did not happen, why (``StaleState``, or
        ``EngineUnavailable`` with the answer kept in the escrow)."""
        pending = {n: c for n, c in self._pending.items() if isinstance(c, _Commit)}
        self._pending.clear()
        for name in self._intended:  # recorded, never sent: nothing to keep them for
            with contextlib.suppress(EngineUnavailable, gw.EngineError):
                self.gateway.delete(self.key("inflight", name))
        self._intended.clear()
        failed: dict[str, Exception] = {}
        if self._log_fd is not None:
            os.fdatasync(self._log_fd)  # every answer durable before anything is committed
            fsync_dir(Path(self._log or ".").parent)
        if not pending:
            self._close_log(settled=not self._logged)
            return failed
        try:
            result = self.gateway.txn([], [gw.nested(*c.request()) for c in pending.values()])
        except (EngineUnavailable, gw.EngineError) as error:
            self._close_log(settled=False)
            away = error if isinstance(error, EngineUnavailable) else EngineUnavailable(str(error))
            return {name: self._uncommitted(name, away) for name in pending}
        for (name, prepared), one in zip(pending.items(), result.nested, strict=True):
            try:
                self._finish(prepared, replace(one, revision=result.revision))
            except (StaleState, ReconcilerError, OSError) as error:
                failed[name] = error  # (as ``commit`` would have raised it)
        # An answer escrowed and never committed (its refresh failed after the answer) is
        # left in the log for the next run, as its escrow file would be.
        self._close_log(settled=self._logged <= set(pending))
        return failed


__all__ = ["BATCH", "Batched", "Claim", "claim", "drop_intents", "release"]
