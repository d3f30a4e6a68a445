"""Grant state in etcd v3, for many machines (SPEC §7).

Git keeps each grant's identity: its file, with plaintext ``custody: etcd`` and no refresh
or access token. The engine keeps the live state, under ``<namespace>/``:

- ``grants/<name>``: the grant (refresh and access token, expiry, status, a generation counter
  one more on every commit), sealed to the grant file's recipients;
- ``locks/<name>``: the refresh lock, a key bound to a lease that its holder keeps alive;
- ``inflight/<name>``: the intent of a request to the provider, on a lease of its own that
  outlives the request's deadline;
- ``leader``: the ``--watch`` elected to refresh ahead of expiry;
- ``keys/<id>``: each writer's key for the values it seals, sealed to the recipients
  (``keyring``).

Every value is sealed to the recipients (the lock and intent too, which name their holder):
nothing in etcd is plaintext.

A refresh (``lifecycle``): ``single_flight`` takes the lock, re-reads the state, and finishes
a local escrow left by a run that died after the provider answered; ``in_flight`` checks the
lock before anything is sent (a lease that could not be renewed sends nothing), records the
intent and keeps the provider's answer in the escrow; ``commit`` is a compare-and-swap on the
revision read under the lock, which removes the intent. Correctness comes from that
compare-and-swap: a holder whose lease ran out while it was stopped commits only if nobody
committed since, and is otherwise refused. A refresh token is never presented while another
request's intent is alive (``Held.in_flight``), unless the provider declares
``rotation_grace``.

This machine's token cache stays the first level (``vault.cache``): a cached token is served
without contacting etcd; its entry records the generation it belongs to.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyrage

from ..errors import ReconcilerError
from ..model import Actual, Coordination, Desired, Grant
from ..vault import cache, store
from ..vault.errors import VaultError
from ..vault.files import atomic_write
from ..vault.fingerprint import Fingerprint, of_file
from . import etcd_gateway as gw
from . import failpoints
from .etcd_records import (
    STATE_FORMAT,
    decrypt,
    encrypt,
    file_view,
    from_record,
    moment,
    recorded_coordination,
    same_identity,
    stamp,
    to_record,
)
from .etcd_session import (
    RENEWED_MARGIN,
    Lock,
    LockLost,
    LockTimeout,
    Session,
    describe_holder,
    gateway_for,
    keyring_for,
    session_for,
)
from .protocol import EngineUnavailable, Flight, Held, StaleState, cache_entry, cached_token

if TYPE_CHECKING:
    from ..vault.sops.keys import Identities


@dataclass(frozen=True)
class _Basis:
    #: The state's ``mod_revision`` when it was read (0: none); what a commit compares.
    revision: int
    generation: int
    #: The grant as the engine holds it (None: no state yet).
    stored: Grant | None
    retry_at: datetime | None = None
    #: The recipients the state is encrypted to.
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Commit:
    """A commit's compare-and-swap, prepared (``EtcdCustody._prepare``)."""

    name: str
    state_key: bytes
    basis: _Basis
    value: bytes
    operations: list[dict[str, Any]]
    lock: Lock | None
    live: Grant
    file: Grant | None
    recipients: tuple[str, ...]
    generation: int
    retry_at: datetime | None

    def request(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """(compare, success, failure), as ``Gateway.txn`` or ``etcd_gateway.nested`` take."""
        return (
            [gw.compare_mod(self.state_key, self.basis.revision)],
            self.operations,
            [gw.get(self.state_key)],
        )


#: Attached grants' files as this process read them: path -> (fingerprint before the read,
#: MAC verified, the file's grant). A commit checks what the file holds (to rewrite it only
#: when that changes): while its fingerprint is the same, the file is not read again.
_attached_files: dict[str, tuple[Fingerprint, bool, Grant]] = {}
#: The name every escrow log starts with (``etcd_batch.Batched``).
ESCROW_LOG = "batch-"
#: Escrow logs read by this process: path -> (fingerprint, name -> (revision, answer)).
_escrow_logs: dict[str, tuple[Any, dict[str, tuple[int, Grant]]]] = {}
#: The escrow logs this process is writing (skipped when looking for an earlier run's).
_live_logs: set[str] = set()


@functools.cache
def _grant_path(store_dir: Path, name: str) -> Path:
    return store.grant_path(store_dir, name)


@functools.cache
def _escrow_file(token_cache: str, engine: str, name: str) -> Path:
    """Where this machine keeps the escrow of ``name``'s answer from ``engine``."""
    key = engine + "\0" + name
    return Path(os.path.dirname(token_cache)) / "escrow" / f"{cache._hash(key)}.age"


class _Flight:
    def __init__(self, custody: EtcdCustody, held: Held) -> None:
        self.custody = custody
        self.held = held

    def escrow(self, grant: Grant) -> None:
        self.custody._write_escrow(self.held, grant)
        failpoints.hit("after-answer")


class EtcdCustody:
    """``custody.Custody`` over etcd v3 (live state) and the grant files (identity)."""

    kind = "etcd"
    shared = True

    def __init__(
        self,
        desired: Desired,
        identities: Identities | None,
        environ: Mapping[str, str] | None = None,
        coordination: Coordination | None = None,
    ) -> None:
        self.desired = desired
        self.identities = identities
        self.environ = os.environ if environ is None else environ
        found = coordination or desired.coordination
        if found is None:
            raise ValueError("EtcdCustody needs `coordination:`")
        self.coordination = found
        self.gateway = gateway_for(found, desired.path.parent, self.environ)
        self.prefix = found.namespace.strip("/").encode("utf-8") + b"/"
        self.keyring = keyring_for(
            self.gateway, self.key("keys"), found.namespace.strip("/"), identities
        )
        self._locks: dict[str, Lock] = {}

    # ---------------------------------------------------------------------------- keys

    def key(self, kind: str, name: str = "") -> bytes:
        return self.prefix + f"{kind}/{name}".encode()

    def path(self, name: str) -> Path:
        return _grant_path(self.desired.store_dir, name)

    def _recipients(self, name: str, grant: Grant | None = None) -> tuple[str, ...]:
        found = self.desired.recipients.get(name) or (grant.recipients if grant else ())
        if not found:
            raise VaultError(f"{name}: no age recipients to encrypt its live state to")
        return tuple(found)

    # ------------------------------------------------------------------------- reading

    def _decode(self, name: str, kv: gw.KeyValue | None) -> _Basis:
        if kv is None:
            return _Basis(0, 0, None)
        if not self.identities:
            raise VaultError(f"{name}: no age identity to decrypt its live state with")
        record = decrypt(kv.value, self.keyring)
        grant = from_record(record["grant"])
        return _Basis(
            kv.mod_revision,
            int(record.get("generation", 0)),
            grant,
            moment(record.get("retry_at")),
            tuple(record.get("recipients") or ()),
        )

    def _file(self, name: str, identities: Identities | None) -> Grant | None:
        path = self.path(name)
        now = of_file(path)
        if now is None:
            return None
        seen = _attached_files.get(str(path))
        if seen is not None and seen[0] == now and (identities is None or seen[1]):
            return replace(seen[2], decrypted=identities is not None)
        grant = store.read_grant(path, identities)
        self._remember(path, now, identities is not None, grant)
        return grant

    @staticmethod
    def _remember(path: Path, before: Fingerprint | None, verified: bool, file: Grant) -> None:
        """An attached grant's file as read, under its fingerprint taken before the read. It
        holds no secret: read with a key or without, it is the same."""
        if file.custody == "etcd" and not file.sealed and before is not None:
            _attached_files[str(path)] = (before, verified, file)

    def _held(self, name: str, basis: _Basis, file: Grant | None) -> Held:
        if basis.stored is None:
            # Not attached yet (the file holds it all), or attached and the engine has lost
            # its state: then only the grant's identity is known.
            return Held(name, file, basis)
        grant = replace(
            basis.stored,
            custody="etcd",
            recipients=file.recipients if file is not None else basis.recipients,
            modified=file.modified if file is not None else None,
            sealed=file.sealed if file is not None else frozenset(),
            decrypted=True,
            revision=basis.revision,
            generation=basis.generation,
        )
        return Held(
            name, grant, basis, retry_at=basis.retry_at, recorded=self._recorded(name, grant)
        )

    def read(self, name: str) -> Held:
        basis = self._decode(name, self.gateway.get(self.key("grants", name)))
        # An attached grant's file holds no secret it needs: its plaintext is enough.
        file = self._file(name, self.identities if basis.stored is None else None)
        return self._held(name, basis, file)

    def scan(self, *, decrypt: bool = True) -> tuple[Actual, Mapping[str, Held]]:
        """The grant files, with the engine's live state laid over every attached one.
        Without ``decrypt``, the engine is still asked for each state's revision."""
        before = store.fingerprints(self.desired.store_dir)
        actual = store.scan(
            self.desired.store_dir, self.identities if decrypt else None, self.environ, before
        )
        for name, file in actual.grants.items():
            self._remember(self.path(name), before.get(name), actual.decrypted, file)
        try:
            _, found = self.gateway.range(self.key("grants"), prefix=True, keys_only=not decrypt)
        except EngineUnavailable as error:
            # The files still say what is declared and linked (plan, status, attach in CI);
            # whatever needs the live state says why it cannot be had.
            as_filed = {
                name: Held(name, grant, _Basis(0, 0, None)) for name, grant in actual.grants.items()
            }
            return replace(actual, engine_unreached=str(error)), as_filed
        states = {kv.key[len(self.key("grants")) :].decode("utf-8"): kv for kv in found}
        grants: dict[str, Grant] = dict(actual.grants)
        held: dict[str, Held] = {}
        unreadable = dict(actual.unreadable)
        for name, file in actual.grants.items():
            kv = states.get(name)
            if file.custody != "etcd" or kv is None:
                held[name] = Held(name, file, _Basis(0, 0, None))
                continue
            if not decrypt or not actual.decrypted:
                grants[name] = replace(file, revision=kv.mod_revision)
                continue
            try:
                basis = self._decode(name, kv)
            except VaultError as error:
                unreadable[name] = str(error)
                grants.pop(name)
                continue
            one = self._held(name, basis, file)
            held[name] = one
            if one.grant is not None:
                grants[name] = one.grant
        if decrypt and actual.decrypted:
            # Linked on another machine, its file not pulled here yet: the engine's state is
            # the grant (its file is written here by the next commit).
            for name in sorted(set(states) - set(actual.grants) - set(unreadable)):
                if name not in self.desired.providers:
                    continue
                try:
                    one = self._held(name, self._decode(name, states[name]), None)
                except VaultError as error:
                    unreadable[name] = str(error)
                    continue
                held[name] = one
                if one.grant is not None:
                    grants[name] = one.grant
        return replace(actual, grants=grants, unreadable=unreadable), held

    # ------------------------------------------------------------------ the local cache

    def _recorded(self, name: str, grant: Grant) -> bool:
        entry = self._cached(name)
        return (
            entry is not None
            and entry.generation == grant.generation
            and entry.access_token == grant.access_token
        )

    def _cached(self, name: str) -> cache.CachedToken | None:
        return cached_token(self.desired, name, self.path(name), self.identities, self.environ)

    def _record(self, name: str, grant: Grant, retry_at: datetime | None) -> bool:
        recordable = (
            grant.kind == "oauth2"
            and grant.status in ("ok", "uncertain")
            and grant.access_token is not None
            and grant.obtained_at is not None
            and bool(self.identities)
            and of_file(self.path(name)) is not None
        )
        if not recordable:
            cache.drop(self.desired.path, name, self.environ)
            return False
        assert grant.access_token is not None and self.identities is not None
        entry = cache_entry(grant, self.desired.refresh_before, retry_at)
        cache.write(self.desired.path, name, self.path(name), entry, self.identities, self.environ)
        if self._mirrors(name):
            self._write_mirror(name, grant)
        return True

    def leads(self) -> bool:
        """Campaign for ``<namespace>/leader``, bound to this process's lock lease: the first
        to create it leads while its lease lives (a stopped or dead leader is replaced a
        lease later)."""
        session = self._session()
        key = self.key("leader")
        value = encrypt(
            describe_holder(),
            tuple(sorted({r for t in self.desired.recipients.values() for r in t})),
            self.keyring,
        )
        result = self.gateway.txn(
            [gw.compare_create(key, 0)], [gw.put(key, value, session.lock_lease)], [gw.get(key)]
        )
        if result.succeeded:
            return True
        current = result.ranges[0][0] if result.ranges and result.ranges[0] else None
        return current is not None and current.lease == session.lock_lease

    def keep(self, held: Held) -> bool:
        grant = held.grant
        if grant is None or grant.status == "needs-relink" or grant.access_token is None:
            return False
        return held.recorded or self._record(held.name, grant, held.retry_at)

    # -------------------------------------------------------------- without the engine

    def _mirror_path(self, name: str) -> Path:
        folder = Path(os.path.dirname(cache.cache_dir(self.environ))) / "engine"
        key = f"{','.join(self.coordination.endpoints)}\0{self.prefix.decode()}\0{name}"
        return folder / f"{cache._hash(key)}.age"

    def _mirrors(self, name: str) -> bool:
        """Only a grant whose provider keeps its refresh token may be refreshed without the
        engine, so only such a grant's state is mirrored on this machine."""
        provider = self.desired.providers.get(name)
        return provider is not None and not provider.rotates_refresh_tokens

    def _write_mirror(self, name: str, grant: Grant) -> None:
        recipients = cache.own_recipients(self.identities)
        if not recipients:
            return
        data = json.dumps(
            {"name": name, "revision": grant.revision, "generation": grant.generation,
             "grant": to_record(grant)}
        ).encode("utf-8")  # fmt: skip
        path = self._mirror_path(name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, bytes(pyrage.encrypt(data, recipients)), mode=0o600)

    def _read_mirror(self, name: str) -> Grant | None:
        try:
            blob = self._mirror_path(name).read_bytes()
            data = json.loads(pyrage.decrypt(blob, list(self.identities or ())))
            if data["name"] != name:
                return None
            return replace(
                from_record(data["grant"]),
                revision=data.get("revision"),
                generation=data.get("generation"),
            )
        except (OSError, pyrage.DecryptError, ValueError, KeyError, TypeError):
            return None

    def offline(self, name: str) -> Held | None:
        """The grant from this machine alone: its file, the state it last mirrored (grants
        that do not rotate only) and its cached access token."""
        try:
            file = self._file(name, self.identities)
        except VaultError:
            file = None
        mirrored = self._read_mirror(name) if self._mirrors(name) else None
        grant = mirrored or file
        if grant is None:
            return None
        entry = self._cached(name)
        if entry is not None and (
            grant.obtained_at is None
            or (entry.obtained_at is not None and entry.obtained_at >= grant.obtained_at)
        ):
            grant = replace(
                grant,
                access_token=entry.access_token,
                token_type=entry.token_type or grant.token_type,
                expires_at=entry.expires_at,
                obtained_at=entry.obtained_at,
            )
        revision = mirrored.revision or 0 if mirrored is not None else 0
        generation = mirrored.generation or 0 if mirrored is not None else 0
        return Held(name, grant, _Basis(revision, generation, mirrored))

    def commit_offline(self, held: Held, grant: Grant) -> None:
        """A refresh made without the engine: kept in this machine's cache and mirror; a new
        refresh token also goes to the escrow, committed when the engine is back (if nobody
        committed since)."""
        basis = held.basis
        previous = basis.stored if isinstance(basis, _Basis) else None
        done = replace(
            grant,
            custody="etcd",
            revision=previous.revision if previous is not None else None,
            generation=previous.generation if previous is not None else None,
        )
        self._record(held.name, done, None)
        if previous is not None and grant.refresh_token != previous.refresh_token:
            self._write_escrow(held, grant)

    # ------------------------------------------------------------------------ escrow

    def _escrow_path(self, name: str) -> Path:
        return _escrow_file(cache.cache_dir(self.environ), self._engine_id(), name)

    def _write_escrow(self, held: Held, grant: Grant) -> None:
        """The provider's answer, encrypted to this machine's identities, until committed."""
        assert isinstance(held.basis, _Basis)
        if not self.identities:
            return
        recipients = cache.own_recipients(self.identities)
        if not recipients:
            return
        data = json.dumps(
            {"name": held.name, "revision": held.basis.revision, "grant": to_record(grant)}
        ).encode("utf-8")
        path = self._escrow_path(held.name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, bytes(pyrage.encrypt(data, recipients)), mode=0o600)

    def _read_escrow(self, name: str) -> tuple[int, Grant] | None:
        path = self._escrow_path(name)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return self._logged_escrow(name)
        try:
            data = json.loads(pyrage.decrypt(blob, list(self.identities or ())))
            if data["name"] != name:
                return None
            return int(data["revision"]), from_record(data["grant"])
        except (pyrage.DecryptError, ValueError, KeyError, TypeError):
            self._drop_escrow(name)
            return None

    def _drop_escrow(self, name: str) -> None:
        # Not durable: an escrow that comes back after a crash is older than the state it
        # was sent from, and is discarded.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._escrow_path(name))
        if _escrow_logs:
            self._drop_logged(name)

    # A batch of refreshes (``etcd_batch.Batched``) keeps its answers in one escrow log,
    # ``batch-*.age`` beside the escrow files: a line per answer (each age-encrypted as an
    # escrow file is), made durable once before the batch's commit, the file locked (flock)
    # while its batch is under way. A log left by a run that died (or whose commit the engine
    # did not take) is read here, line by line, once.

    def _engine_id(self) -> str:
        return f"{','.join(self.coordination.endpoints)}\0{self.prefix.decode()}"

    def _logged_escrow(self, name: str) -> tuple[int, Grant] | None:
        folder = self._escrow_path(name).parent
        try:
            logs = [e.path for e in os.scandir(folder) if e.name.startswith(ESCROW_LOG)]
        except FileNotFoundError:
            return None
        for path in logs:
            if path in _live_logs:
                continue  # a batch of this process, under way
            entries = self._log_entries(path)
            if name in entries:
                return entries[name]
        return None

    def _log_entries(self, path: str) -> dict[str, tuple[int, Grant]]:
        stamp = of_file(path)
        known = _escrow_logs.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        entries: dict[str, tuple[int, Grant]] = {}
        try:
            with open(path, "rb") as file:
                try:
                    # Its writer holds it locked while its batch is under way (on this
                    # machine, in another process): nothing in it is left over yet.
                    fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return entries
                lines = file.read().splitlines()
        except FileNotFoundError:
            return entries
        for line in lines:
            try:
                blob = base64.b64decode(line, validate=True)
                data = json.loads(pyrage.decrypt(blob, list(self.identities or ())))
                if data["engine"] == self._engine_id():
                    entries[data["name"]] = (int(data["revision"]), from_record(data["grant"]))
            except (pyrage.DecryptError, ValueError, KeyError, TypeError):
                continue  # a torn last line, or another machine's identities
        _escrow_logs[path] = (stamp, entries)
        return entries

    def _drop_logged(self, name: str) -> None:
        for path, (_, entries) in list(_escrow_logs.items()):
            if name not in entries or path in _live_logs:
                continue
            del entries[name]
            if not entries:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                _escrow_logs.pop(path, None)

    def _settle_escrow(self, name: str, basis: _Basis) -> _Basis:
        """An answer a run on this machine got and never committed: committed now if the
        state is still the one it was sent from (it is then the newest), else discarded."""
        found = self._read_escrow(name)
        if found is None:
            return basis
        revision, grant = found
        if revision != basis.revision:
            self._drop_escrow(name)
            return basis
        held = Held(name, basis.stored, basis)
        recipients = self._recipients(name, basis.stored)
        committed = self.commit(held, grant, durable=True, recipients=recipients, release=False)
        assert isinstance(committed.basis, _Basis)
        return committed.basis

    # --------------------------------------------------------------------- single flight

    def _session(self) -> Session:
        lease = self.coordination.lease.total_seconds()
        deadlines = [p.request_deadline for p in self.desired.providers.values()] or [30.0]
        return session_for(self.gateway, lease, max(deadlines) + lease)

    def _acquire(
        self, name: str, timeout: float | None
    ) -> tuple[Lock, gw.KeyValue | None, gw.KeyValue | None]:
        """The lock, and under it the state and any intent, in one round trip."""
        lock_key = self.key("locks", name)
        state_key, intent_key = self.key("grants", name), self.key("inflight", name)
        holder = encrypt(
            describe_holder() | {"nonce": os.urandom(8).hex()}, self._recipients(name), self.keyring
        )
        ends = None if timeout is None else time.monotonic() + timeout
        while True:
            session = self._session()
            lease = session.lock_lease
            result = self.gateway.txn(
                [gw.compare_create(lock_key, 0)],
                [gw.put(lock_key, holder, lease), gw.get(state_key), gw.get(intent_key)],
                [gw.get(lock_key)],
            )
            if result.succeeded:
                state = result.ranges[0][0] if result.ranges[0] else None
                intent = result.ranges[1][0] if result.ranges[1] else None
                return Lock(session, lock_key, lease, result.revision), state, intent
            current = result.ranges[0][0] if result.ranges and result.ranges[0] else None
            if current is not None and current.value == holder:  # a retry that had applied
                lock = Lock(session, lock_key, lease, current.create_revision)
                state = self.gateway.get(state_key)
                return lock, state, self.gateway.get(intent_key)
            if current is None:
                continue  # released between the compare and the read
            left = None if ends is None else ends - time.monotonic()
            if left is not None and left <= 0:
                raise LockTimeout(
                    f"{name}: another machine or process holds its refresh lock; "
                    "try again in a moment"
                )
            # Wait for the holder's key to go (released, or its lease expired).
            wait = session.lock_ttl / 3 if left is None else min(left, session.lock_ttl / 3)
            try:
                for event in self.gateway.watch(
                    lock_key, start_revision=result.revision + 1, timeout=wait
                ):
                    if event.kind == "delete":
                        break
            except EngineUnavailable:
                time.sleep(0.05)  # that member went away: try again through another

    def _release(self, lock: Lock) -> None:
        if lock.released:
            return
        with contextlib.suppress(EngineUnavailable, gw.EngineError):
            self.gateway.txn([gw.compare_create(lock.key, lock.revision)], [gw.delete(lock.key)])
        lock.released = True

    @contextlib.contextmanager
    def single_flight(
        self,
        name: str,
        known: Held | None = None,
        timeout: float | None = None,
        *,
        replacing: bool = False,
    ) -> Iterator[Held]:
        """The grant's lock (held by one process on any machine), then its state: ``known``
        while the engine shows the same revision, else read again. The lock is released by
        the commit (in its transaction), else on leaving."""
        lock, kv, intent = self._acquire(name, timeout)
        self._locks[name] = lock
        try:
            if replacing:
                try:
                    file = self._file(name, None)
                except VaultError:
                    file = None
                revision = kv.mod_revision if kv is not None else 0
                yield Held(name, file, _Basis(revision, self._generation(name, kv), None))
                return
            if (
                known is not None
                and isinstance(known.basis, _Basis)
                and kv is not None
                and known.basis.revision == kv.mod_revision
                and known.grant is not None
            ):
                basis = known.basis
            else:
                basis = self._decode(name, kv)
            settled = self._settle_escrow(name, basis)
            if settled is not basis:
                basis, intent = settled, None  # the commit removed the intent
            # An attached grant's file holds no secret it needs: its plaintext is enough.
            file = self._file(name, self.identities if basis.stored is None else None)
            held = self._held(name, basis, file)
            yield replace(held, in_flight=self._describe_intent(name, intent))
        finally:
            self._locks.pop(name, None)
            self._release(lock)

    def _generation(self, name: str, kv: gw.KeyValue | None) -> int:
        return self._decode(name, kv).generation if kv is not None and self.identities else 0

    def _describe_intent(self, name: str, intent: gw.KeyValue | None) -> str | None:
        """Why the refresh token must wait: an intent left by a request that was sent and
        never committed (a holder that stopped or died), until its lease expires."""
        if intent is None:
            return None
        left = 0
        with contextlib.suppress(EngineUnavailable, gw.EngineError):
            answer = self.gateway.call("/v3/lease/timetolive", {"ID": str(intent.lease)})
            left = int(answer.get("TTL", 0))
        who = ""
        with contextlib.suppress(VaultError, KeyError):
            holder = decrypt(intent.value, self.keyring)
            who = f" by {holder['host']} (pid {holder['pid']})"
        return (
            f"{name}: a refresh sent{who} has not been committed, so its refresh token may "
            f"already have been used; it is not presented again until that request's intent "
            f"expires (in about {max(left, 1)} s), unless the provider declares "
            "`rotation_grace`. Try again then."
        )

    # ----------------------------------------------------------------------- in flight

    @contextlib.contextmanager
    def in_flight(self, held: Held, budget: float) -> Iterator[Flight]:
        """Before sending: the lock must be renewable now and the request must fit in the
        intent's lease; then the intent is recorded. On a failure before an answer that is
        not ambiguous, the intent is removed; an ambiguous one (timeout, reset) keeps it
        until its lease expires."""
        lock = self._locks.get(held.name)
        if lock is None or lock.lost:
            raise LockLost(self._lost(held.name))
        intent_key = self.key("inflight", held.name)
        value = encrypt(
            {**describe_holder(), "revision": getattr(held.basis, "revision", 0)},
            self._recipients(held.name, held.grant),
            self.keyring,
        )
        self.gateway.put(intent_key, value, lock.session.intent())
        failpoints.hit("before-send")
        # The last check before the request: this process may have been stopped since the
        # first one, and its lease lost meanwhile; then another machine may hold the lock.
        # The monotonic clock runs on while a process is stopped, so a lease renewed recently
        # enough needs no round trip to be known alive.
        if (lock.lost or lock.session.remaining() < RENEWED_MARGIN) and not lock.renew():
            with contextlib.suppress(EngineUnavailable, gw.EngineError):
                self.gateway.delete(intent_key)  # nothing was sent: the intent can go
            raise LockLost(self._lost(held.name))
        try:
            yield _Flight(self, held)
        except BaseException as error:
            with contextlib.suppress(EngineUnavailable, gw.EngineError):
                if getattr(error, "ambiguous", False):
                    # The request may have been acted on: the intent stays for a whole
                    # intent lease of its own, whatever becomes of this process.
                    lease = self.gateway.grant(lock.session.intent_ttl)
                    self.gateway.put(intent_key, value, lease)
                else:
                    self.gateway.delete(intent_key)
            raise

    @staticmethod
    def _lost(name: str) -> str:
        return (
            f"{name}: the refresh lock's lease was lost (this process was stopped or the "
            "engine was slow to answer); nothing was sent to the provider. Try again."
        )

    # -------------------------------------------------------------------------- writing

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
        """Compare-and-swap: write ``grant`` if the state's revision is still the one
        ``held`` read; the grant's lock is released in the same transaction (unless not
        ``release``). The grant file is rewritten only when what it holds changes (a link,
        a status, scopes, recipients): a refresh leaves git untouched."""
        prepared = self._prepare(held, grant, durable, recipients, retry_at, release)
        if isinstance(prepared, Held):
            return prepared
        try:
            result = self.gateway.txn(*prepared.request())
        except EngineUnavailable as error:
            raise self._uncommitted(held.name, error) from None
        return self._finish(prepared, result)

    def _prepare(
        self,
        held: Held,
        grant: Grant,
        durable: bool,
        recipients: tuple[str, ...] | None,
        retry_at: datetime | None,
        release: bool,
    ) -> Held | _Commit:
        """A commit's transaction, or the Held it comes to when nothing needs writing."""
        name = held.name
        basis = held.basis
        if not isinstance(basis, _Basis):
            raise StaleState(f"{name}: read from another custody; nothing was written")
        live = replace(grant, custody="etcd", revision=None, generation=None)
        stored = basis.stored
        unchanged = (
            stored is not None
            and to_record(replace(stored, custody="etcd")) == to_record(live)
            and retry_at == basis.retry_at
        )
        to = tuple(recipients or self._recipients(name, grant))
        file = self._file(name, None)
        if unchanged and file is not None and file.custody == "etcd" and not durable:
            done = replace(live, revision=basis.revision, generation=basis.generation)
            recorded = self._record(name, done, retry_at)
            return Held(name, done, basis, retry_at=retry_at, recorded=recorded)
        generation = basis.generation + 1
        record = {
            "format": STATE_FORMAT,
            "generation": generation,
            "grant": to_record(live),
            "retry_at": stamp(retry_at),
            "recipients": list(to),
        }
        value = encrypt(record, to, self.keyring)
        state_key = self.key("grants", name)
        operations: list[dict[str, Any]] = [gw.put(state_key, value)]
        if grant.status != "uncertain":
            operations.append(gw.delete(self.key("inflight", name)))
        lock = self._locks.get(name) if release else None
        if lock is not None and not lock.released:
            operations.append(
                gw.nested([gw.compare_create(lock.key, lock.revision)], [gw.delete(lock.key)])
            )
        else:
            lock = None
        return _Commit(
            name, state_key, basis, value, operations, lock, live, file, to, generation, retry_at
        )

    def _uncommitted(self, name: str, error: EngineUnavailable) -> EngineUnavailable:
        if self._escrow_path(name).exists():
            return EngineUnavailable(
                f"{name}: the provider answered, but the coordination engine could not "
                f"take the commit ({error}). The answer is kept encrypted on this machine "
                "and committed by its next run, if nobody committed since."
            )
        return error

    def _finish(self, commit: _Commit, result: gw.TxnResult) -> Held:
        """After a commit's transaction (``result``): refused, or kept on this machine."""
        name = commit.name
        if not result.succeeded:
            now = result.ranges[0][0] if result.ranges and result.ranges[0] else None
            if now is None or now.value != commit.value:  # (a retried request that did apply)
                raise StaleState(
                    f"{name}: its state in the coordination engine changed since it was read "
                    "(another machine committed first); nothing was written"
                )
            revision = now.mod_revision
        else:
            revision = result.revision
        if commit.lock is not None:
            commit.lock.released = True
        self._drop_escrow(name)
        self._write_file(name, commit.live, commit.file, commit.recipients)
        done = replace(commit.live, revision=revision, generation=commit.generation)
        new_basis = _Basis(
            revision, commit.generation, commit.live, commit.retry_at, commit.recipients
        )
        recorded = self._record(name, done, commit.retry_at)
        return Held(name, done, new_basis, retry_at=commit.retry_at, recorded=recorded)

    def _write_file(
        self, name: str, grant: Grant, file: Grant | None, recipients: tuple[str, ...]
    ) -> None:
        """The grant file as git keeps an attached grant: its identity, no live state."""
        view = file_view(grant, self.coordination)
        if (
            file is not None
            and file.custody == "etcd"
            and set(file.recipients) == set(recipients)
            and same_identity(file, view)
        ):
            return
        store.write_grant(self.path(name), view, recipients)

    def attach(self, name: str) -> Held:
        """Move a grant's live state from its file into the engine, then rewrite the file
        without it. When the engine already holds a state for the grant (another machine
        attached it first), that state is kept and the file's tokens, possibly superseded,
        are dropped."""
        with self.single_flight(name) as held:
            assert isinstance(held.basis, _Basis)
            file = self._file(name, self.identities)
            if file is None:
                raise VaultError(f"{name}: no grant file to attach")
            to = tuple(self.desired.recipients.get(name) or file.recipients)
            if held.basis.stored is None:
                return self.commit(held, replace(file, custody="etcd"), durable=True, recipients=to)
            self._write_file(name, held.basis.stored, file, to)
            return held

    def detach(self, name: str) -> Grant:
        """Bring the live state back into the grant file and remove it from the engine."""
        with self.single_flight(name) as held:
            if held.grant is None or held.basis.stored is None:
                raise VaultError(f"{name}: the coordination engine holds no state for it")
            if held.in_flight is not None:
                raise ReconcilerError(held.in_flight)
            grant = replace(held.grant, custody=None, revision=None, generation=None)
            recipients = tuple(self.desired.recipients.get(name) or held.grant.recipients)
            store.write_grant(self.path(name), grant, recipients)
            self.gateway.txn(
                [gw.compare_mod(self.key("grants", name), held.basis.revision)],
                [gw.delete(self.key("grants", name)), gw.delete(self.key("inflight", name))],
            )
            cache.drop(self.desired.path, name, self.environ)
            return grant

    def delete(self, name: str) -> bool:
        existed = self.gateway.delete(self.key("grants", name)) > 0
        path = self.path(name)
        existed = path.exists() or existed
        store.delete_grant(path)
        cache.drop(self.desired.path, name, self.environ)
        self._drop_escrow(name)
        return existed

    # ------------------------------------------------------------------------- watching

    def changes(self, stop: Any) -> Iterator[str]:
        """Names whose state changed in the engine, until ``stop`` (an Event) is set. The
        watch resumes after the last revision seen when the stream breaks."""
        prefix = self.key("grants")
        revision = 0
        while not stop.is_set():
            try:
                if not revision:
                    revision = self.gateway.range(prefix, prefix=True, keys_only=True)[0]
                for event in self.gateway.watch(
                    prefix, prefix=True, start_revision=revision + 1, stop=stop
                ):
                    revision = max(revision, event.kv.mod_revision)
                    yield event.kv.key[len(prefix) :].decode("utf-8")
            except EngineUnavailable:
                stop.wait(0.5)

    def close(self) -> None:
        return None


__all__ = ["EtcdCustody", "LockLost", "LockTimeout", "recorded_coordination"]
