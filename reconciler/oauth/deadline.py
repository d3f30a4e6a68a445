"""An overall deadline for one HTTP exchange, enforced at the socket.

httpx2's timeouts bound each connect, read and write on its own, so an endpoint that drips its
answer a byte at a time keeps a request alive for ever. ``DeadlineBackend`` wraps the network
backend of a connection pool and gives every socket operation at most the time left before the
deadline that ``within`` set for the current thread (each thread has its own client, see
``transport.http_client``); past it, the operation fails as an httpcore2 timeout, which httpx2
raises as ``httpx2.TimeoutException``.

Importing this module is cheap: httpcore2 is imported inside the functions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

_local = threading.local()


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Run the block's socket operations (on this thread) under a deadline ``seconds`` away."""
    _local.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.at = None


def _bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` shortened to the time left before this thread's deadline."""
    at = getattr(_local, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise expired("the overall deadline of the exchange has passed")
    return left if timeout is None else min(timeout, left)


def wrap_backend(inner: Any) -> Any:
    """``inner`` (an httpcore2 ``NetworkBackend``) with the deadline applied to its streams."""
    # httpcore2 (under httpx2) is heavy; only a new client's connection pool needs it.
    import httpcore2

    class Stream(httpcore2.NetworkStream):
        def __init__(self, stream: Any) -> None:
            self._stream = stream

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._stream.read(max_bytes, _bounded(timeout, httpcore2.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._stream.write(buffer, _bounded(timeout, httpcore2.WriteTimeout))

        def close(self) -> None:
            self._stream.close()

        def start_tls(
            self,
            ssl_context: ssl.SSLContext,
            server_hostname: str | None = None,
            timeout: float | None = None,
        ) -> Stream:
            bounded = _bounded(timeout, httpcore2.ConnectTimeout)
            return Stream(self._stream.start_tls(ssl_context, server_hostname, bounded))

        def get_extra_info(self, info: str) -> Any:
            return self._stream.get_extra_info(info)

    class Backend(httpcore2.NetworkBackend):
        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> Stream:
            bounded = _bounded(timeout, httpcore2.ConnectTimeout)
            return Stream(inner.connect_tcp(host, port, bounded, local_address, socket_options))

        def connect_unix_socket(
            self, path: str, timeout: float | None = None, socket_options: Any = None
        ) -> Stream:
            bounded = _bounded(timeout, httpcore2.ConnectTimeout)
            return Stream(inner.connect_unix_socket(path, bounded, socket_options))

        def sleep(self, seconds: float) -> None:
            inner.sleep(seconds)

    return Backend()
