"""A refresh whose request was sent but never answered (SPEC §7): the grant is marked
`uncertain`, and its refresh token is not presented again while the request's intent lives,
unless the provider declares `rotation_grace`."""

from __future__ import annotations

import json
import socket
import threading

import yaml

from .support import Fleet


class BlackHole:
    """A token endpoint that accepts connections, reads the request and never answers."""

    def __init__(self) -> None:
        self.requests = 0
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.held: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}/token"

    def _run(self) -> None:
        while True:
            connection, _ = self.socket.accept()
            connection.recv(65536)
            self.requests += 1
            self.held.append(connection)


def point_at(fleet: Fleet, hole: BlackHole, **fields) -> None:
    for machine in fleet.machines:
        document = yaml.safe_load(machine.config.read_text())
        document["defaults"]["request_deadline"] = "1s"
        document["providers"]["api"].update(token_endpoint=hole.url, **fields)
        machine.config.write_text(yaml.safe_dump(document, sort_keys=False))


def test_an_unanswered_refresh_marks_the_grant_uncertain_and_holds_its_refresh_token(
    fleet: Fleet,
) -> None:
    fleet.link(expired=True)
    hole = BlackHole()
    point_at(fleet, hole)
    a, b, _ = fleet.machines
    first = a.run("token", "api")
    assert first.code == 1 and hole.requests == 1
    status = json.loads(a.run("status", "-o", "json").stdout)["grants"][0]
    assert status["status"] == "uncertain"
    again = b.run("token", "api")
    assert again.code == 1 and "not presented again" in again.stderr
    assert hole.requests == 1, "the refresh token was presented again while in flight"


def test_with_rotation_grace_the_refresh_token_may_be_presented_again(fleet: Fleet) -> None:
    fleet.link(expired=True)
    hole = BlackHole()
    point_at(fleet, hole, rotation_grace="1m")
    a, b, _ = fleet.machines
    assert a.run("token", "api").code == 1 and hole.requests == 1
    assert b.run("token", "api").code == 1
    assert hole.requests == 2
