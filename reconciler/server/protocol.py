"""The HTTP/1.1 connection of `reconcile serve`: uvicorn's h11 protocol plus a deadline for the
request head.

Uvicorn closes idle keep-alive connections but waits for ever on a request whose head is
never finished, so a few hundred half-sent requests (a slowloris) would hold their sockets
open for good. Here a connection's request head (request line and headers) must arrive in
full within ``header_timeout`` seconds of the connection opening or of the previous response;
the clock is not restarted by each byte, so trickling does not help. Otherwise the
connection is closed. Bodies and responses are not affected.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a client has to send a whole request head.
HEADER_TIMEOUT = 10.0


def with_header_deadline(header_timeout: float) -> type[asyncio.Protocol]:
    """The uvicorn ``http`` protocol class that enforces ``header_timeout``."""

    class HeaderDeadlineProtocol(H11Protocol):
        _head_deadline: asyncio.TimerHandle | None = None

        # uvicorn's H11Protocol narrows asyncio's BaseTransport to Transport; so does this.
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:  # a request head is still incomplete
                if self._head_deadline is None:
                    self._arm()
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._head_deadline = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _expire(self) -> None:
            self._head_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol
