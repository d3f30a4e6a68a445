"""This process's way to the coordination engine: one gateway per engine (connections reused),
one keyring per namespace (the writers' keys opened once), and one session of leases (as
etcd's ``concurrency.Session``), kept alive by one thread; the locks a refresh holds are bound
to it. Forked children start their own; at exit the locks are released and the intent lease is
left to expire."""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import resolve_reference
from ..errors import ReconcilerError
from ..model import Coordination
from . import etcd_gateway as gw
from .keyring import Keyring
from .protocol import EngineUnavailable

#: Seconds of lock lease that must be left, by this process's count, to send a request
#: without renewing the lease first.
RENEWED_MARGIN = 1.0


class LockTimeout(ReconcilerError):
    """The grant's lock was not free within the time allowed."""


class LockLost(ReconcilerError):
    """The lock's lease could not be renewed: nothing was sent to the provider."""


# ---------------------------------------------------------------------------------------
# Gateways: one per engine and process, so that connections are reused.

_gateways: dict[tuple[Any, ...], gw.Gateway] = {}
_gateways_lock = threading.Lock()


def _forget_gateways() -> None:
    """A forked child (apply's refresh workers) opens its own connections and leases."""
    global _gateways_lock
    _gateways.clear()
    _keyrings.clear()
    _sessions.clear()
    _gateways_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_gateways)


def gateway_for(
    coordination: Coordination, base_dir: Path, environ: Mapping[str, str]
) -> gw.Gateway:
    key = (
        coordination.endpoints,
        coordination.username,
        coordination.password_ref,
        coordination.ca_file,
        coordination.cert_file,
        coordination.key_file,
    )
    with _gateways_lock:
        found = _gateways.get(key)
        if found is not None:
            return found
        password = None
        if coordination.password_ref:
            password = resolve_reference(
                coordination.password_ref,
                base_dir=base_dir,
                owner="coordination.etcd.password",
                environ=environ,
            )
        timeout = float(environ.get("RECONCILER_ENGINE_TIMEOUT", "5"))
        made = gw.Gateway(
            coordination.endpoints,
            username=coordination.username,
            password=password,
            ca_file=coordination.ca_file,
            cert_file=coordination.cert_file,
            key_file=coordination.key_file,
            timeout=timeout,
        )
        _gateways[key] = made
        return made


#: (gateway, key prefix, identities) -> keyring; the identities kept so their ids stay theirs.
_keyrings: dict[tuple[int, bytes, tuple[int, ...]], tuple[Keyring, object]] = {}


def keyring_for(
    gateway: gw.Gateway, prefix: bytes, namespace: str, identities: Sequence[Any] | None
) -> Keyring:
    """The keyring of ``namespace`` (its records under ``prefix``) on this engine, for
    ``identities``: shared by every custody of this process."""
    key = (id(gateway), prefix, tuple(id(i) for i in identities or ()))
    with _gateways_lock:
        found = _keyrings.get(key)
        if found is None:
            found = _keyrings[key] = (Keyring(gateway, prefix, namespace, identities), identities)
        return found[0]


def describe_holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


# ---------------------------------------------------------------------------------------
# This process's leases (as etcd's concurrency.Session): one for its locks, one for its
# intents, kept alive by one thread while the process runs. A process that stops or dies
# loses its locks a lease after its last renewal, and its intents an intent lease after it.

_sessions: dict[tuple[int, float, float], Session] = {}


class Session:
    def __init__(self, gateway: gw.Gateway, lock_ttl: float, intent_ttl: float) -> None:
        self.gateway = gateway
        self.lock_ttl = lock_ttl
        self.intent_ttl = intent_ttl
        self.renewed = time.monotonic()  # (before the grant: see ``renew``)
        self.lock_lease = gateway.grant(lock_ttl)
        self.intent_lease = 0
        self.lost = False
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etcd-session", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.lock_ttl / 3):
            if not self.renew():
                return

    def renew(self) -> bool:
        """Renew both leases now; False once the lock lease is lost (expired, or not renewed
        in time)."""
        # The lease runs from when the engine renewed it, which is after this moment: counted
        # from here, ``remaining`` never promises more than the engine grants.
        sent = time.monotonic()
        try:
            left = self.gateway.keepalive(self.lock_lease)
            if self.intent_lease and self.gateway.keepalive(self.intent_lease) <= 0:
                self.intent_lease = 0  # expired while this process was stopped: a new one
        except (EngineUnavailable, gw.EngineError):
            if self.remaining() <= 0:
                self.lost = True
            return not self.lost
        if left > 0 and not self.lost:
            self.renewed = sent
        else:
            self.lost = True
        return not self.lost

    def remaining(self) -> float:
        """Seconds the lock lease is known to last (from its last renewal)."""
        return self.lock_ttl - (time.monotonic() - self.renewed)

    def intent(self) -> int:
        with self._guard:
            if not self.intent_lease:
                self.intent_lease = self.gateway.grant(self.intent_ttl)
            return self.intent_lease

    def close(self) -> None:
        """Release the locks now. The intent lease is left to expire: an intent still on it
        belongs to a request whose answer was not committed (it is in this machine's escrow),
        and must keep other machines from presenting the refresh token meanwhile."""
        self._stop.set()
        with contextlib.suppress(EngineUnavailable, gw.EngineError):
            self.gateway.revoke(self.lock_lease)


def session_for(gateway: gw.Gateway, lock_ttl: float, intent_ttl: float) -> Session:
    key = (id(gateway), lock_ttl, intent_ttl)
    with _gateways_lock:
        found = _sessions.get(key)
        if found is None or found.lost:
            found = _sessions[key] = Session(gateway, lock_ttl, intent_ttl)
        return found


@atexit.register
def _close_sessions() -> None:
    """Locks go with the process (a stopped or killed one keeps them a lease longer)."""
    for session in list(_sessions.values()):
        session.close()


@dataclass
class Lock:
    """One held lock: its key, bound to the session's lock lease, created at ``revision``."""

    session: Session
    key: bytes
    lease: int
    revision: int
    released: bool = False

    def renew(self) -> bool:
        return self.session.renew() and self.session.lock_lease == self.lease

    @property
    def lost(self) -> bool:
        return self.session.lost or self.session.lock_lease != self.lease
