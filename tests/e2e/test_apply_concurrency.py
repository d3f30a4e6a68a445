"""`reconcile apply` refreshes due grants on a few worker threads, and many of them in forked
worker processes. Against the real authorization server (rotating refresh tokens, each usable
once), as a user runs it: every grant is refreshed exactly once, every file ends with the
refresh token the server now holds for it, one refresh failing stops none of the others, and
an interrupted apply starts no further refresh and loses no grant."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time

import pytest

from reconciler import config
from reconciler.apply import lifecycle, workers
from reconciler.apply.runner import REFRESH_WORKERS
from reconciler.model import Secret
from reconciler.oauth import device
from reconciler.operations import utcnow
from reconciler.vault.sops.keys import load_identities
from reconciler.vault.store import read_grant

from . import authserver

GRANTS = 24
#: Enough due grants for apply to fork worker processes, where it can.
MANY = workers.FORK_THRESHOLD + 6
FORKS = sys.platform == "linux" and len(os.sched_getaffinity(0)) > 1
#: How long the server holds each token request before answering, outside its own lock, so
#: that refreshes that run at once really are in flight together.
HOLD = 0.05


class InFlight:
    """Token requests held at once, the most seen, and requests still being handled."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.now = 0
        self.most = 0
        self.handling = 0
        #: The processes token requests came from (client port -> pid).
        self.senders: dict[int, int | None] = {}
        #: Token requests after the ``gate_after``-th wait until ``open_gate()``.
        self.gate_after: int | None = None
        self.gate = threading.Event()
        self.received = 0
        self.at_gate = 0

    def gate_after_next(self, count: int) -> None:
        """Answer the next ``count`` token requests; hold later ones at the gate."""
        with self.lock:
            self.gate_after = self.received + count

    def wait_at_gate(self, timeout: float = 10.0) -> None:
        """Wait until a token request is stopped at the gate."""
        with self.lock:
            assert self.lock.wait_for(lambda: self.at_gate > 0, timeout), "nothing at the gate"

    def open_gate(self) -> None:
        self.gate.set()

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the server has answered every request it received (a client that went
        away does not stop the server from carrying out what it asked)."""
        with self.lock:
            assert self.lock.wait_for(lambda: self.handling == 0, timeout), "server still busy"


@pytest.fixture
def in_flight(monkeypatch):
    gauge = InFlight()
    dispatch = authserver._Handler._dispatch

    def counted(handler) -> None:
        if handler.path != "/token":
            dispatch(handler)
            return
        port = handler.client_address[1]
        if port not in gauge.senders:  # asked while the client's connection is open
            gauge.senders[port] = _process_of_port(port)
        with gauge.lock:
            gauge.handling += 1
            # Counted while held, before the answer: a client that waits for each answer
            # before it sends the next request never has two requests held at once.
            gauge.now += 1
            gauge.most = max(gauge.most, gauge.now)
            gauge.received += 1
            gated = gauge.gate_after is not None and gauge.received > gauge.gate_after
            gauge.at_gate += gated
            gauge.lock.notify_all()
        try:
            if gated:
                gauge.gate.wait(60)
            time.sleep(HOLD)
            with gauge.lock:
                gauge.now -= 1
                gauge.lock.notify_all()
            dispatch(handler)
        finally:
            with gauge.lock:
                gauge.handling -= 1
                gauge.lock.notify_all()

    monkeypatch.setattr(authserver._Handler, "_dispatch", counted)
    yield gauge
    gauge.open_gate()  # never leave the server's handler threads waiting


def _process_of_port(port: int) -> int | None:
    """The pid holding the loopback TCP socket bound to ``port`` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return int(pid)
        except OSError:  # gone, or not ours to look at
            continue
    return None


def link_all(e2e, names: list[str]) -> dict[str, authserver.Client]:
    """One client and one linked grant per name (device flow against the server, stored the
    way `reconcile link` stores it), each access token already due for a refresh."""
    auth = e2e.auth
    clients = {}
    for name in names:
        clients[name] = auth.add_client(f"{name}-app", f"{name}-secret-0123456789")
        e2e.declare(name, clients[name])
    e2e.write_config()
    desired = config.load(e2e.project.config, environ=e2e.env)
    auth.token_lifetime = 1  # due half-way through its 1 s life
    for name in names:
        provider = desired.providers[name]
        secret = lifecycle.client_secret(desired, provider, e2e.env)
        result = device.run_device_flow(
            provider,
            secret,
            provider.scopes,
            announce=lambda authorization: auth.approve_device(authorization.user_code),
            sleep=lambda seconds: None,
        )
        lifecycle.store_link(
            desired,
            provider,
            result,
            utcnow(),
            provider.scopes,
            client_secret=secret,
            environ=e2e.env,
        )
    auth.token_lifetime = 3600
    time.sleep(1)  # every token has expired, so every grant is due
    return clients


def refresh_calls(auth: authserver.AuthServer) -> dict[str, int]:
    """Refresh requests the server received, per client."""
    counts: dict[str, int] = {}
    with auth.lock:
        for request in auth.requests:
            if request.path == "/token" and request.form.get("grant_type") == ["refresh_token"]:
                client = _basic_client(request.headers.get("authorization", ""))
                counts[client] = counts.get(client, 0) + 1
    return counts


def _basic_client(header: str) -> str:
    import base64
    from urllib.parse import unquote

    scheme, _, credentials = header.partition(" ")
    assert scheme.lower() == "basic", header
    return unquote(base64.b64decode(credentials).decode().partition(":")[0])


def on_disk(e2e, name: str):
    identities = load_identities({"SOPS_AGE_KEY_FILE": str(e2e.project.key_file)}, required=True)
    return read_grant(e2e.grant_file(name), identities)


def current_refresh_token(auth: authserver.AuthServer, client: authserver.Client) -> str:
    """The one refresh token of ``client`` the server still accepts."""
    with auth.lock:
        live = [
            t.refresh_token
            for t in auth.tokens
            if t.client.client_id == client.client_id and t.refresh_token and not t.refresh_revoked
        ]
    assert len(live) == 1, f"{client.client_id}: {len(live)} usable refresh tokens"
    return live[0]


def holds_current(grant, auth: authserver.AuthServer, client: authserver.Client) -> bool:
    """The grant's refresh token is the one the server accepts now (compared without showing
    either in a failure message)."""
    return grant.refresh_token == Secret(current_refresh_token(auth, client))


@pytest.mark.parametrize(
    "count",
    [
        GRANTS,
        pytest.param(MANY, marks=pytest.mark.skipif(not FORKS, reason="forks on Linux, 2+ cores")),
    ],
    ids=["threads", "processes"],
)
def test_apply_refreshes_every_due_grant_once_at_once(e2e, in_flight, count):
    names = [f"g{index:02d}" for index in range(count)]
    clients = link_all(e2e, names)
    linked = {name: current_refresh_token(e2e.auth, clients[name]) for name in names}
    e2e.auth.requests.clear()
    in_flight.senders.clear()  # the links were made from this process

    ran = e2e.run("apply", "-o", "json")
    in_flight.settle()

    assert ran.code == 0, ran
    document = json.loads(ran.stdout)
    assert document["summary"] == {"done": count, "failed": 0, "pending": 0}
    outcomes = document["outcomes"]
    assert sorted(o["name"] for o in outcomes) == names  # one outcome per action, no more
    assert {o["action"] for o in outcomes} == {"refresh"}
    assert len(re.findall(r"(?m)^g\d\d: refresh: done: ", ran.stderr)) == count  # progress
    # Exactly one refresh per grant at the server, several of them in flight together.
    assert refresh_calls(e2e.auth) == {clients[name].client_id: 1 for name in names}
    assert e2e.token_calls("refresh_token") == count
    senders = set(in_flight.senders.values())
    if count < workers.FORK_THRESHOLD:
        assert 1 < in_flight.most <= REFRESH_WORKERS
        assert len(senders) == 1  # threads of one process
    else:
        assert 1 < in_flight.most <= workers.MAX_PROCESSES * workers.THREADS_PER_PROCESS
        assert None not in senders and len(senders) > 1  # several worker processes
        assert os.getpid() not in senders
    for name in names:
        grant = on_disk(e2e, name)
        assert grant.status == "ok"
        # The file holds the rotated refresh token: the one the server now accepts.
        assert holds_current(grant, e2e.auth, clients[name]), name
        assert grant.refresh_token != Secret(linked[name])
    # Those refresh tokens work; the ones they replaced do not.
    for name in names[:3]:
        assert e2e.try_refresh(clients[name], linked[name]) == 400
        assert e2e.try_refresh(clients[name], on_disk(e2e, name).refresh_token.reveal()) == 200

    again = e2e.run("apply", "-o", "json")
    assert again.code == 0, again
    assert json.loads(again.stdout)["outcomes"] == []  # nothing left to do


def test_one_refresh_failing_stops_none_of_the_others(e2e, in_flight):
    names = [f"g{index:02d}" for index in range(12)]
    clients = link_all(e2e, names)
    revoked = "g05"
    e2e.revoke_behind_our_back(clients[revoked], current_refresh_token(e2e.auth, clients[revoked]))
    e2e.auth.requests.clear()

    ran = e2e.run("apply", "-o", "json")
    in_flight.settle()

    assert ran.code == 1, ran  # a failed action
    document = json.loads(ran.stdout)
    assert document["summary"] == {"done": 11, "failed": 1, "pending": 0}
    results = {o["name"]: o for o in document["outcomes"]}
    assert sorted(results) == names
    assert results[revoked]["result"] == "failed"
    assert "needs to be linked again" in results[revoked]["message"]
    assert "Traceback" not in ran.stderr
    assert refresh_calls(e2e.auth) == {clients[name].client_id: 1 for name in names}
    assert on_disk(e2e, revoked).status == "needs-relink"
    for name in names:
        if name != revoked:
            assert results[name]["result"] == "done", results[name]
            grant = on_disk(e2e, name)
            assert grant.status == "ok"
            assert holds_current(grant, e2e.auth, clients[name]), name


@pytest.mark.parametrize("count", [40, MANY], ids=["threads", "processes"])
def test_interrupted_apply_starts_no_more_refreshes_and_loses_no_grant(e2e, in_flight, count):
    """Ctrl-C while refreshes run: the process ends promptly, the refreshes not yet started
    are not started, and every grant file still holds a refresh token the server accepts (a
    refresh under way when the interrupt came still wrote its rotated token).

    The server answers two token requests and holds every later one until the process has
    taken the interrupt, so no refresh can finish (and let another start) in between,
    however slowly this machine runs."""
    names = [f"g{index:02d}" for index in range(count)]
    clients = link_all(e2e, names)
    e2e.auth.requests.clear()
    in_flight.gate_after_next(2)
    watched = e2e.watch("apply")
    watched.expect(r": refresh: done: ")
    in_flight.wait_at_gate()  # the interrupt comes while refreshes wait for their answers
    watched.process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    try:
        watched.expect(r"interrupted")  # no further refresh is handed out from here on
    finally:
        in_flight.open_gate()
    ran = watched.finish(timeout=30)
    stopped = time.monotonic() - interrupted
    in_flight.settle()

    assert ran.code == 130, ran  # interrupted (SPEC §4)
    assert "interrupted" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert stopped < 5, f"took {stopped:.1f} s to stop"
    calls = refresh_calls(e2e.auth)
    assert 0 < sum(calls.values()) < len(names)  # some refreshed, the rest never started
    assert all(count == 1 for count in calls.values())
    for name in names:
        grant = on_disk(e2e, name)
        assert grant.status == "ok", name
        assert holds_current(grant, e2e.auth, clients[name]), name

    finished = e2e.run("apply", "-o", "json")  # the rest, and nothing twice
    assert finished.code == 0, finished
    done = {o["name"] for o in json.loads(finished.stdout)["outcomes"]}
    assert done == {name for name in names if clients[name].client_id not in calls}
