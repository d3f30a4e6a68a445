"""Webhook notifications: a grant needs relinking, has recovered, or was linked.

When ``notify.webhook`` is set in ``providers.yaml``, every status change of an OAuth grant is
POSTed there as one small JSON document (UTF-8, compact):

    {"event": "needs-relink", "grant": "github", "reason": "revoked",
     "at": "2025-06-01T12:00:00Z"}

``event`` is ``needs-relink`` (a refresh was refused: ``invalid_grant``), ``recovered`` (a grant
marked ``needs-relink`` was linked again) or ``linked`` (any other successful link); ``reason``
is present for ``needs-relink`` only; ``at`` is when the change happened (RFC 3339, UTC).

Headers of each POST:

- ``Content-Type: application/json``
- ``X-Reconciler-Event``: the event name.
- ``X-Reconciler-Delivery``: a random id, the same on every retry of one event (deduplicate on it).
- ``X-Reconciler-Timestamp``: Unix seconds when this attempt was sent.
- ``X-Reconciler-Signature: sha256=<hex>``: HMAC-SHA256, keyed with the resolved
  ``notify.secret``, over ``<timestamp> + "." + <raw body bytes>``. Absent when no
  ``notify.secret`` is configured.

To verify (see :func:`verify`): recompute the HMAC over the timestamp header, a dot and the raw
request body exactly as received, compare in constant time, and reject timestamps more than
five minutes away from your clock. Because the timestamp is signed, a captured request cannot be
replayed later; within the window, the delivery id lets a receiver drop duplicates.

Delivery happens on a background thread so that a reconcile never waits on the webhook. A
failed attempt (network error, 408, 425, 429 or 5xx) is retried with exponential backoff
(0.25 s, 0.5 s, 1 s, 2 s, 4 s: six attempts in all); other 4xx answers are not retried.
Failures are logged (``reconciler.notify`` logger) and never fail the operation that caused the
event. A short-lived process (``reconcile apply``, ``reconcile token``) waits at most
:data:`FLUSH_AT_EXIT` seconds at exit for deliveries still in flight.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import os
import secrets as _secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from ..config import ConfigError, resolve_reference
from ..model import Desired, Secret
from ..vault.sops.keys import load_identities

if TYPE_CHECKING:
    import httpx2

Event = Literal["needs-relink", "recovered", "linked"]
EVENTS: tuple[str, ...] = ("needs-relink", "recovered", "linked")

SIGNATURE_HEADER = "X-Reconciler-Signature"
TIMESTAMP_HEADER = "X-Reconciler-Timestamp"
EVENT_HEADER = "X-Reconciler-Event"
DELIVERY_HEADER = "X-Reconciler-Delivery"
#: Seconds a receiver should accept between the signed timestamp and its own clock.
TOLERANCE = 300
#: Delays before the 2nd, 3rd... attempt (so six attempts in all).
BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0)
#: Seconds a process waits at exit for deliveries still queued or being retried.
FLUSH_AT_EXIT = 3.0
#: Per-attempt limits (seconds).
CONNECT_TIMEOUT = 3.0
REQUEST_TIMEOUT = 5.0
_RETRY_STATUS = frozenset({408, 425, 429})
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

log = logging.getLogger("reconciler.notify")


# --------------------------------------------------------------------------- signing


def body_for(event: str, grant: str, at: datetime, reason: str | None = None) -> bytes:
    """The raw bytes POSTed for one event."""
    document: dict[str, str] = {"event": event, "grant": grant}
    if reason:
        document["reason"] = reason
    document["at"] = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def sign(key: bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Reconciler-Signature`` value for ``body`` sent at ``timestamp``."""
    message = str(timestamp).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(
    key: bytes,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE,
) -> bool:
    """True when ``signature`` signs ``body`` at ``timestamp`` and the timestamp is recent."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(key, timestamp, body), signature)


def allowed_webhook(url: str) -> bool:
    """https, or http on a loopback host (the schema checks this too; checked again here)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme == "https":
        return bool(host)
    return parts.scheme == "http" and host in _LOOPBACK


def _where(url: str) -> str:
    """The webhook's host only: its path may hold a token (as Slack-style hooks do)."""
    try:
        return urlsplit(url).netloc or "the webhook"
    except ValueError:
        return "the webhook"


# --------------------------------------------------------------------------- emitting


def emit(
    desired: Desired,
    event: str,
    grant: str,
    *,
    reason: str | None = None,
    at: datetime | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Queue ``event`` for ``grant`` to the configured webhook. Never raises, never blocks on
    the network; does nothing when ``notify`` is not configured."""
    settings = desired.notify
    if settings is None:
        return
    try:
        if event not in EVENTS:
            raise ValueError(f"unknown notify event {event!r}")
        if not allowed_webhook(settings.webhook):
            log.warning(
                "notify: %s: %s is not an allowed webhook (https://, or http:// on loopback); "
                "event not sent",
                grant,
                _where(settings.webhook),
            )
            return
        key = _signing_key(desired, environ)
        when = at or datetime.now(UTC)
        delivery = _Delivery(
            url=settings.webhook,
            event=event,
            grant=grant,
            body=body_for(event, grant, when, reason),
            key=key,
        )
    except _NoKey as error:
        log.warning("notify: %s: %s event not sent: %s", grant, event, error)
        return
    except Exception as error:  # a notification must never break the operation
        log.warning("notify: %s: %s event not sent: %s", grant, event, type(error).__name__)
        return
    _deliverer().put(delivery)


class _NoKey(Exception):
    pass


def _signing_key(desired: Desired, environ: Mapping[str, str] | None) -> Secret | None:
    ref = desired.notify.secret_ref if desired.notify else None
    if ref is None:
        return None

    environ = os.environ if environ is None else environ
    identities = None
    if ref.startswith("sops:"):
        identities = load_identities(environ) or None
    try:
        return resolve_reference(
            ref,
            base_dir=desired.path.parent,
            owner="notify secret",
            environ=environ,
            identities=identities,
        )
    except ConfigError as error:
        raise _NoKey(str(error)) from None


def flush(timeout: float = FLUSH_AT_EXIT) -> bool:
    """Wait up to ``timeout`` seconds for queued deliveries; True when none is left."""
    deliverer = _DELIVERER
    return True if deliverer is None else deliverer.flush(timeout)


# --------------------------------------------------------------------------- delivery


@dataclass
class _Delivery:
    url: str
    event: str
    grant: str
    body: bytes
    key: Secret | None
    id: str = field(default_factory=lambda: _secrets.token_hex(16))
    attempts: int = 0
    not_before: float = 0.0

    def headers(self, timestamp: int) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "oauth-reconciler",
            EVENT_HEADER: self.event,
            DELIVERY_HEADER: self.id,
            TIMESTAMP_HEADER: str(timestamp),
        }
        if self.key is not None:
            headers[SIGNATURE_HEADER] = sign(self.key.reveal().encode(), timestamp, self.body)
        return headers


class _Deliverer:
    """One background thread per process, delivering in order, retrying with backoff."""

    def __init__(self) -> None:
        self._queue: deque[_Delivery] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._client: httpx2.Client | None = None
        thread = threading.Thread(target=self._run, name="reconciler-notify", daemon=True)
        thread.start()
        atexit.register(self._at_exit)

    def put(self, delivery: _Delivery) -> None:
        with self._cond:
            self._queue.append(delivery)
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _at_exit(self) -> None:
        if not self.flush(FLUSH_AT_EXIT):
            with self._cond:
                self._closing = True
                left = len(self._queue) + (1 if self._busy else 0)
            log.warning("notify: %d event(s) not delivered before exit", left)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._busy = False
                    self._cond.notify_all()
                    self._cond.wait()
                delivery = self._queue[0]
                self._busy = True
                wait = delivery.not_before - time.monotonic()
                if wait > 0:
                    # Sleep until the retry is due (a flush can still time out meanwhile).
                    self._cond.wait(wait)
                    continue
                self._queue.popleft()
            retry = self._attempt(delivery)
            with self._cond:
                if retry and not self._closing:
                    self._queue.appendleft(delivery)  # keep the order of events
                self._busy = bool(self._queue)
                self._cond.notify_all()

    def _attempt(self, delivery: _Delivery) -> bool:
        """Send once; True when it should be tried again later."""
        delivery.attempts += 1
        where = _where(delivery.url)
        try:
            client = self._http()
            response = client.post(
                delivery.url,
                content=delivery.body,
                headers=delivery.headers(int(time.time())),
            )
            status = response.status_code
            response.close()
        except Exception as error:
            status = None
            problem = f"{type(error).__name__}"
        else:
            if 200 <= response.status_code < 300:
                if delivery.attempts > 1:
                    log.info(
                        "notify: %s %s delivered to %s (attempt %d)",
                        delivery.grant,
                        delivery.event,
                        where,
                        delivery.attempts,
                    )
                return False
            problem = f"HTTP {status}"
        retryable = status is None or status >= 500 or status in _RETRY_STATUS
        if retryable and delivery.attempts <= len(BACKOFF):
            delay = BACKOFF[delivery.attempts - 1]
            delivery.not_before = time.monotonic() + delay
            log.warning(
                "notify: %s %s to %s failed (%s, attempt %d); retrying in %gs",
                delivery.grant,
                delivery.event,
                where,
                problem,
                delivery.attempts,
                delay,
            )
            return True
        log.warning(
            "notify: %s %s to %s failed (%s, attempt %d); giving up",
            delivery.grant,
            delivery.event,
            where,
            problem,
            delivery.attempts,
        )
        return False

    def _http(self) -> httpx2.Client:
        if self._client is None:
            import httpx2  # heavy; loaded only when a webhook is configured and an event is sent

            self._client = httpx2.Client(
                timeout=httpx2.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
                follow_redirects=False,
            )
        return self._client


_DELIVERER: _Deliverer | None = None
_DELIVERER_LOCK = threading.Lock()


def _deliverer() -> _Deliverer:
    global _DELIVERER
    with _DELIVERER_LOCK:
        if _DELIVERER is None:
            _DELIVERER = _Deliverer()
        return _DELIVERER
