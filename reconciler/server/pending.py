"""Link attempts and device flows in flight, kept in memory by the server.

A **link attempt** is keyed by its OAuth ``state``. It is bound to one browser at the first
hop (``/oauth/link/start``), which sets a cookie whose value only that browser knows; the
callback must bring the same cookie back. An attempt expires (15 minutes by default) and is
used once: the callback that carries its state and cookie removes it, whatever the outcome.

A **device flow** is keyed by an opaque handle handed to the client in place of the
provider's device code (which stays here), together with the grant name: a poll can only
continue the flow it started, and the provider's device code never leaves the server.

Keys are stored as SHA-256 digests, binding cookies too, and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..model import Provider, Secret

if TYPE_CHECKING:
    from ..oauth.authorize import PendingLink

LINK_TTL = timedelta(minutes=15)
#: At most this many attempts/flows in flight; a client that starts more gets an error.
MAX_PENDING = 256


class StoreFull(Exception):
    """Too many link attempts or device flows in flight."""


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def cookie_name(state: str) -> str:
    """One cookie per attempt, so that two links started in one browser do not collide."""
    return "reconciler_link_" + hashlib.sha256(state.encode()).hexdigest()[:16]


@dataclass
class LinkAttempt:
    name: str
    #: provider (with endpoints), scopes, verifier, state...
    pending: PendingLink
    return_url: str | None
    created_at: datetime
    expires_at: datetime
    binding: bytes | None = field(default=None, repr=False)


class LinkStore:
    def __init__(self, clock: Callable[[], datetime], ttl: timedelta = LINK_TTL) -> None:
        self.clock = clock
        self.ttl = ttl
        self._items: dict[bytes, LinkAttempt] = {}
        self._lock = threading.Lock()

    def _purge(self, now: datetime) -> None:
        for key in [k for k, v in self._items.items() if v.expires_at <= now]:
            del self._items[key]

    def add(self, name: str, pending: PendingLink, return_url: str | None) -> LinkAttempt:
        now = self.clock()
        attempt = LinkAttempt(name, pending, return_url, now, now + self.ttl)
        with self._lock:
            self._purge(now)
            if len(self._items) >= MAX_PENDING:
                raise StoreFull("too many link attempts in flight; finish or let some expire")
            self._items[digest(pending.state)] = attempt
        return attempt

    def bind(self, state: str) -> tuple[LinkAttempt | None, str | None]:
        """The first hop: a fresh cookie value for the browser, once per attempt.
        Returns (attempt, cookie value); (None, None) for an unknown or expired state,
        (attempt, None) when a browser was already bound."""
        with self._lock:
            self._purge(self.clock())
            attempt = self._items.get(digest(state))
            if attempt is None:
                return None, None
            if attempt.binding is not None:
                return attempt, None
            value = secrets.token_urlsafe(32)
            attempt.binding = digest(value)
            return attempt, value

    def take(self, state: str, cookie: str | None) -> tuple[str, LinkAttempt | None]:
        """The callback. ``("ok", attempt)`` removes the attempt (single use);
        ``("expired", attempt)`` too; ``("unknown", None)`` and ``("foreign", None)`` (no
        cookie, or another browser's) leave the store as it was."""
        key = digest(state)
        with self._lock:
            attempt = self._items.get(key)
            if attempt is None:
                return "unknown", None
            bound = attempt.binding
            if bound is None or cookie is None or not hmac.compare_digest(digest(cookie), bound):
                return "foreign", None
            del self._items[key]
            if attempt.expires_at <= self.clock():
                return "expired", attempt
            return "ok", attempt

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class DeviceFlow:
    name: str
    provider: Provider
    client_secret: Secret | None = field(repr=False)
    device_code: Secret = field(repr=False)
    scopes: tuple[str, ...]
    expires_at: datetime
    interval: int
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class DeviceStore:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self._items: dict[bytes, DeviceFlow] = {}
        self._lock = threading.Lock()

    def add(self, flow: DeviceFlow) -> str:
        """Keep ``flow``; return the opaque handle the client polls with."""
        handle = "rdc_" + secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            for key in [k for k, v in self._items.items() if v.expires_at <= now]:
                del self._items[key]
            if len(self._items) >= MAX_PENDING:
                raise StoreFull("too many device flows in flight; finish or let some expire")
            self._items[digest(handle)] = flow
        return handle

    def get(self, name: str, handle: str) -> DeviceFlow | None:
        """The flow ``handle`` started for ``name``; None for any other pair."""
        with self._lock:
            flow = self._items.get(digest(handle))
        if flow is None or not hmac.compare_digest(flow.name.encode(), name.encode()):
            return None
        return flow

    def drop(self, handle: str) -> None:
        with self._lock:
            self._items.pop(digest(handle), None)

    def __len__(self) -> int:
        return len(self._items)
