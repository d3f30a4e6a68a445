"""Clients that never finish their request head cannot hold `reconcile serve` hostage."""

from __future__ import annotations

import select
import socket
import time

import pytest

HEADER_TIMEOUT = 1.0


def half_sent(port: int) -> socket.socket:
    """A connection that sends a request line and one header, then nothing more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("threaded_serve", [{"header_timeout": HEADER_TIMEOUT}], indirect=True)
def test_half_sent_requests_are_closed_and_do_not_starve_the_server(threaded_serve):
    port = threaded_serve.prepared.port
    hanging = [half_sent(port) for _ in range(300)]
    try:
        # Meanwhile a whole request is answered, before any of them has been dropped.
        asked = time.monotonic()
        assert threaded_serve.client.get("/v1/status").status_code == 200
        assert time.monotonic() - asked < HEADER_TIMEOUT
        # A head trickled byte by byte does not restart the deadline.
        trickle = half_sent(port)
        started, closed_after = time.monotonic(), None
        for _ in range(9):
            time.sleep(HEADER_TIMEOUT / 3)
            if select.select([trickle], [], [], 0)[0]:
                assert closed_by_server(trickle)
                closed_after = time.monotonic() - started
                break
            trickle.sendall(b"X")
        trickle.close()
        assert closed_after is not None and closed_after < 2 * HEADER_TIMEOUT
        started = time.monotonic()
        for sock in hanging:
            sock.settimeout(max(0.1, started + HEADER_TIMEOUT * 5 - time.monotonic()))
            assert closed_by_server(sock)
    finally:
        for sock in hanging:
            sock.close()
    assert threaded_serve.client.get("/v1/status").status_code == 200


@pytest.mark.parametrize("threaded_serve", [{"header_timeout": HEADER_TIMEOUT}], indirect=True)
def test_a_slow_but_complete_exchange_is_served(threaded_serve):
    """The deadline covers the head only: a keep-alive connection that sends its next request
    after a pause, within the deadline, is served, and so is a body sent after the head."""
    client = threaded_serve.client
    assert client.get("/v1/status").status_code == 200
    time.sleep(HEADER_TIMEOUT / 2)
    assert client.get("/v1/status").status_code == 200
    secret = client.token
    sock = socket.create_connection(("127.0.0.1", threaded_serve.prepared.port), timeout=10)
    with sock:
        head = (
            "PUT /v1/secrets/openai HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{threaded_serve.prepared.port}\r\n"
            f"Authorization: Bearer {secret}\r\n"
            "Content-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode())
        time.sleep(HEADER_TIMEOUT * 1.5)
        sock.sendall(b'{"value":5}')  # after the deadline: a body is not a head
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 ")
