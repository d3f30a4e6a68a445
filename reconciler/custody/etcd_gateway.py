"""A small etcd v3 client over the JSON gateway (``/v3/...``, grpc-gateway), on httpx2.

The custody needs a handful of calls (range, txn, delete, lease grant / keepalive / revoke,
watch, authenticate), so it speaks them directly instead of depending on a gRPC stack: the
maintained gateway client on PyPI (``etcd3gw``) pulls in requests, pbr and futurist for the
same calls, and ``etcd3`` pins an old protobuf and is unmaintained.

Keys and values are bytes on the wire (base64 in JSON); numbers are strings (proto3 JSON).
Endpoints are tried in turn: a member that is down, or answers ``Unavailable`` (no leader, a
leader change), is skipped until the call's deadline. Every failure to reach the cluster is
``EngineUnavailable``; the engine's own refusals are ``EngineError``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import ReconcilerError
from ..secret import Secret
from .protocol import EngineUnavailable

if TYPE_CHECKING:
    import httpx2

#: gRPC status codes worth another member or another try: Unavailable, DeadlineExceeded,
#: Aborted, Unknown (etcd's "leader changed" during an election).
_RETRYABLE = {14, 4, 10, 2}
#: The shortest time one attempt on one member is given (seconds).
ATTEMPT_FLOOR = 1.0
#: Seconds of every member refusing connections after which the engine counts as down.
REFUSED_FOR = 1.0
#: gRPC Unauthenticated / an invalid auth token: authenticate again once.
_AUTH_CODES = {16}


class EngineError(ReconcilerError):
    """The engine refused a request (permissions, a malformed request, a lost lease...)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class Event:
    """One watch event: ``kind`` is ``put`` or ``delete``."""

    kind: str
    kv: KeyValue


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=_unb64(raw.get("key")),
        value=_unb64(raw.get("value")),
        mod_revision=int(raw.get("mod_revision", 0)),
        create_revision=int(raw.get("create_revision", 0)),
        version=int(raw.get("version", 0)),
        lease=int(raw.get("lease", 0)),
    )


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range or watch cover every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


# Request builders for ``txn`` (compare / operations), as the gateway spells them.


def compare_mod(key: bytes, revision: int) -> dict[str, Any]:
    """The key's ``mod_revision`` equals ``revision`` (0: the key does not exist)."""
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def compare_create(key: bytes, revision: int) -> dict[str, Any]:
    return {
        "key": _b64(key),
        "target": "CREATE",
        "result": "EQUAL",
        "create_revision": str(revision),
    }


def compare_lease(key: bytes, lease: int) -> dict[str, Any]:
    return {"key": _b64(key), "target": "LEASE", "result": "EQUAL", "lease": str(lease)}


def put(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    request: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def get(key: bytes) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key)}}


def delete(key: bytes) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


def nested(
    compare: Sequence[dict[str, Any]],
    success: Sequence[dict[str, Any]],
    failure: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A transaction inside a transaction's branch (etcd 3.3+)."""
    request = {"compare": list(compare), "success": list(success)}
    if failure:
        request["failure"] = list(failure)
    return {"request_txn": request}


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    #: For each ``get`` of the branch taken: the key-values found.
    ranges: tuple[tuple[KeyValue, ...], ...]
    #: For each ``nested`` transaction of the branch taken: its own result.
    nested: tuple[TxnResult, ...] = ()


def _nested_result(answer: dict[str, Any]) -> TxnResult:
    responses = answer.get("responses") or ()
    ranges = tuple(
        tuple(_kv(raw) for raw in response["response_range"].get("kvs") or ())
        for response in responses
        if "response_range" in response
    )
    inner = tuple(
        _nested_result(response["response_txn"])
        for response in responses
        if "response_txn" in response
    )
    return TxnResult(bool(answer.get("succeeded")), 0, ranges, inner)


class Gateway:
    """A client of one etcd cluster (its members' client URLs)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        username: str | None = None,
        password: Secret | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.username = username
        self._password = password
        self._ca_file, self._cert_file, self._key_file = ca_file, cert_file, key_file
        self.timeout = timeout
        self._current = 0
        self._token: str | None = None
        self._lock = threading.Lock()
        self._client: httpx2.Client | None = None

    # ------------------------------------------------------------------------ transport

    def _http(self) -> httpx2.Client:
        with self._lock:
            if self._client is None:
                import httpx2  # heavy: only a command that reaches the engine loads it

                verify: Any = True
                if self._ca_file or self._cert_file:
                    verify = ssl.create_default_context(cafile=self._ca_file)
                    if self._cert_file:
                        verify.load_cert_chain(self._cert_file, self._key_file)
                elif not any(e.startswith("https:") for e in self.endpoints):
                    # Plain http on loopback only (SPEC §1): no TLS, so no trust store to
                    # load (tens of ms per process). A context that trusts nothing: were TLS
                    # ever attempted with it, verification would fail, never pass.
                    verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                self._client = httpx2.Client(
                    verify=verify,
                    timeout=httpx2.Timeout(self.timeout, connect=min(self.timeout, 2.0)),
                    limits=httpx2.Limits(max_connections=32, max_keepalive_connections=8),
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    def call(self, path: str, body: dict[str, Any], *, deadline: float | None = None) -> Any:
        """POST ``body`` to ``path`` on the first member that answers, until ``deadline``
        (seconds from now; default: the client's timeout). Unavailable members are skipped."""
        import httpx2  # (already loaded by _http; the name is needed for the exceptions)

        http = self._http()
        give_up = time.monotonic() + (self.timeout if deadline is None else deadline)
        anonymous = path == "/v3/auth/authenticate"
        authenticated = anonymous
        if self.username and self._token is None and not anonymous:
            self._authenticate(give_up)
        last = "no member answered"
        pause = 0.02
        started = time.monotonic()
        while True:
            refused = 0
            for _ in range(len(self.endpoints)):
                endpoint = self.endpoints[self._current]
                left = give_up - time.monotonic()
                if left <= 0:
                    break
                # One member may hang (a follower waiting for a leader that died): each
                # attempt gets a part of the deadline, so that another member is tried in it.
                attempt = min(left, max(ATTEMPT_FLOOR, self.timeout / 3))
                try:
                    response = http.post(
                        endpoint + path,
                        content=json.dumps(body),
                        headers={
                            "Content-Type": "application/json",
                            **({} if anonymous else self._headers()),
                        },
                        timeout=httpx2.Timeout(attempt, connect=min(attempt, 1.0)),
                    )
                except httpx2.TransportError as error:
                    last = f"{endpoint}: {type(error).__name__}"
                    refused += isinstance(error, httpx2.ConnectError)
                    self._current = (self._current + 1) % len(self.endpoints)
                    continue
                try:
                    payload = response.json()
                except ValueError:
                    payload = {}
                if response.status_code == 200:
                    return payload
                code = payload.get("code") if isinstance(payload, dict) else None
                message = (payload.get("message") or payload.get("error") or "") if payload else ""
                if code in _AUTH_CODES and self.username and not authenticated:
                    authenticated = True
                    self._authenticate(give_up)
                    break
                if code in _RETRYABLE or response.status_code >= 502:
                    last = f"{endpoint}: {message or response.status_code}"
                    self._current = (self._current + 1) % len(self.endpoints)
                    continue
                raise EngineError(f"etcd refused {path}: {message or response.status_code}", code)
            # Every member refusing connections for a while: the engine is down, not busy
            # electing a leader; say so now rather than at the deadline.
            down = refused == len(self.endpoints) and time.monotonic() - started >= REFUSED_FOR
            if down or time.monotonic() + pause >= give_up:
                raise EngineUnavailable(
                    f"the coordination engine (etcd at {', '.join(self.endpoints)}) did not "
                    f"answer ({last})"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _authenticate(self, give_up: float) -> None:
        assert self.username is not None
        password = self._password.reveal() if self._password is not None else ""
        self._token = None
        answer = self.call(
            "/v3/auth/authenticate",
            {"name": self.username, "password": password},
            deadline=max(0.1, give_up - time.monotonic()),
        )
        self._token = answer.get("token")

    # --------------------------------------------------------------------------- KV

    def range(
        self, key: bytes, *, prefix: bool = False, keys_only: bool = False
    ) -> tuple[int, list[KeyValue]]:
        """(the store's revision, the key-values found)."""
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        if keys_only:
            body["keys_only"] = True
        answer = self.call("/v3/kv/range", body)
        revision = int(answer.get("header", {}).get("revision", 0))
        return revision, [_kv(raw) for raw in answer.get("kvs") or ()]

    def get(self, key: bytes) -> KeyValue | None:
        found = self.range(key)[1]
        return found[0] if found else None

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        answer = self.call("/v3/kv/put", body)
        return int(answer.get("header", {}).get("revision", 0))

    def delete(self, key: bytes, *, prefix: bool = False) -> int:
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        answer = self.call("/v3/kv/deleterange", body)
        return int(answer.get("deleted", 0))

    def txn(
        self,
        compare: Sequence[dict[str, Any]],
        success: Sequence[dict[str, Any]],
        failure: Sequence[dict[str, Any]] = (),
    ) -> TxnResult:
        answer = self.call(
            "/v3/kv/txn",
            {"compare": list(compare), "success": list(success), "failure": list(failure)},
        )
        result = _nested_result(answer)
        return replace(result, revision=int(answer.get("header", {}).get("revision", 0)))

    # ------------------------------------------------------------------------ leases

    def grant(self, ttl: float) -> int:
        answer = self.call("/v3/lease/grant", {"TTL": str(max(1, round(ttl)))})
        if answer.get("error"):
            raise EngineError(f"etcd refused a lease: {answer['error']}")
        return int(answer["ID"])

    def keepalive(self, lease: int) -> int:
        """Renew ``lease``; its new TTL in seconds (0: it has already expired)."""
        answer = self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int((answer.get("result") or {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        with contextlib.suppress(EngineError):  # already expired: nothing to revoke
            self.call("/v3/lease/revoke", {"ID": str(lease)})

    # ------------------------------------------------------------------------- watch

    def watch(
        self,
        key: bytes,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        stop: threading.Event | None = None,
        timeout: float | None = None,
    ) -> Iterator[Event]:
        """Events on ``key`` (or under it) from ``start_revision`` (0: from now), until ``stop``
        is set or ``timeout`` seconds passed; ``EngineUnavailable`` when the stream breaks.

        The stream is read by a thread of its own, so that ``stop`` and ``timeout`` are
        noticed while nothing happens; leaving the iteration closes the stream."""
        import httpx2  # (already loaded by _http)

        request: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            request["range_end"] = _b64(prefix_end(key))
        if start_revision:
            request["start_revision"] = str(start_revision)
        body = json.dumps({"create_request": request})
        endpoint = self.endpoints[self._current]
        ends = None if timeout is None else time.monotonic() + timeout
        found: queue.Queue[Event | BaseException | None] = queue.Queue()
        streams: list[Any] = []
        closed = threading.Event()

        def read() -> None:
            try:
                with self._http().stream(
                    "POST",
                    endpoint + "/v3/watch",
                    content=body,
                    headers={"Content-Type": "application/json", **self._headers()},
                    timeout=httpx2.Timeout(None, connect=2.0),
                ) as response:
                    streams.append(response)
                    if response.status_code != 200:
                        raise EngineUnavailable(
                            f"etcd watch at {endpoint}: HTTP {response.status_code}"
                        )
                    for line in response.iter_lines():
                        if closed.is_set():
                            return
                        if not line.strip():
                            continue
                        result = json.loads(line).get("result") or {}
                        if result.get("canceled"):
                            reason = result.get("cancel_reason")
                            raise EngineUnavailable(
                                f"etcd watch at {endpoint}: canceled ({reason})"
                            )
                        if result.get("created"):
                            found.put(None)  # the watch is in place
                        for raw in result.get("events") or ():
                            kind = "delete" if raw.get("type") == "DELETE" else "put"
                            found.put(Event(kind, _kv(raw.get("kv") or {})))
                raise EngineUnavailable(f"etcd watch at {endpoint}: the stream ended")
            except httpx2.TransportError as error:
                if not closed.is_set():
                    self._current = (self._current + 1) % len(self.endpoints)
                    found.put(
                        EngineUnavailable(f"etcd watch at {endpoint}: {type(error).__name__}")
                    )
            except BaseException as error:  # handed to the iterating thread
                if not closed.is_set():
                    found.put(error)

        reader = threading.Thread(target=read, name="etcd-watch", daemon=True)
        reader.start()
        try:
            while True:
                if stop is not None and stop.is_set():
                    return
                wait = 0.1
                if ends is not None:
                    wait = min(wait, ends - time.monotonic())
                    if wait <= 0:
                        return
                try:
                    item = found.get(timeout=wait)
                except queue.Empty:
                    continue
                if item is None:
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            closed.set()
            for response in streams:
                # The reader may be inside it; it ends with the socket.
                with contextlib.suppress(Exception):
                    response.close()
