"""Fixtures for `reconcile serve` over real HTTP: the real CLI in a subprocess (``serve``) or
the same app factory in a thread (``threaded_serve``, for an injected clock), against the real
test authorization server of ``tests/e2e``.

Every response a test receives and everything a server prints are kept; at teardown they are
scanned for every secret the test used or the authorization server issued (the leak scan).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest

from reconciler.server.run import prepare
from tests.e2e.authserver import AuthServer
from tests.e2e.browser import http_client

from .support import CLIENT_SECRET, CONTROL_SECRET, LeakWatch, providers_yaml

LISTENING = "reconcile serve: listening on "


class Client:
    """httpx2 against one server; keeps every response for the leak scan and checks that
    each one says ``Cache-Control: no-store``."""

    def __init__(self, base: str, watch: LeakWatch, token: str | None = None) -> None:
        self.base = base
        self.watch = watch
        self.token = token
        self.http = http_client(timeout=30.0)

    def request(self, method: str, path: str, *, token: str | None = "default", **kwargs):
        headers = dict(kwargs.pop("headers", {}) or {})
        token = self.token if token == "default" else token
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        removed = [key for key, value in headers.items() if value is None]
        headers = {key: value for key, value in headers.items() if value is not None}
        request = self.http.build_request(method, self.base + path, headers=headers, **kwargs)
        for key in removed:
            del request.headers[key]
        response = self.http.send(request)
        self.watch.texts.append((f"{method} {path}", response.text))
        assert response.headers.get("cache-control") == "no-store", (path, response.headers)
        return response

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs):
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs):
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        self.http.close()


@dataclass
class ServeProcess:
    """`reconcile serve --port 0` in its own process."""

    proc: subprocess.Popen
    watch: LeakWatch
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    url: str = ""
    ready: threading.Event = field(default_factory=threading.Event)
    clients: list[Client] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def client(self, token: str | None = None, **kwargs) -> Client:
        client = Client(self.url, self.watch, token, **kwargs)
        self.clients.append(client)
        return client

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for client in self.clients:
            client.close()
        time.sleep(0.05)  # let the reader threads drain the pipes
        self.watch.texts.append(("server output", self.output))
        return self.proc.returncode


def _reader(stream, lines: list[str], server: ServeProcess | None) -> None:
    for line in stream:
        lines.append(line)
        if server is not None and line.startswith(LISTENING):
            server.url = line[len(LISTENING) :].strip()
            server.ready.set()
    stream.close()


def _wait_until_answering(url: str, deadline: float) -> None:
    """Until uvicorn answers (its signal handlers are in place from then on)."""
    with http_client(timeout=5.0) as client:
        while True:
            try:
                client.get(url + "/")
                return
            except httpx2.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@dataclass
class Harness:
    project: object
    auth_server: AuthServer
    watch: LeakWatch
    servers: list[ServeProcess] = field(default_factory=list)

    @property
    def token_file(self) -> Path:
        return Path(self.project.env["XDG_CONFIG_HOME"]) / "oauth-reconciler" / "serve.token"

    def local_secret(self) -> str:
        return self.token_file.read_text().strip()

    def start(self, *args: str, env: dict[str, str] | None = None, wait: bool = True):
        environment = {**self.project.env, "PYTHONUNBUFFERED": "1", **(env or {})}
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key)
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "serve", "--port", "0", *args],
            cwd=self.project.root,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        server = ServeProcess(proc, self.watch)
        self.servers.append(server)
        threading.Thread(target=_reader, args=(proc.stdout, server.stdout, None)).start()
        threading.Thread(target=_reader, args=(proc.stderr, server.stderr, server)).start()
        if wait:
            deadline = time.monotonic() + 30
            while not server.ready.wait(0.05):
                if proc.poll() is not None or time.monotonic() > deadline:
                    server.stop()
                    pytest.fail(f"serve did not start:\n{server.output}")
            _wait_until_answering(server.url, deadline)
        return server

    def run_to_exit(self, *args: str, env: dict[str, str] | None = None) -> ServeProcess:
        """Start serve expecting it to refuse to start; return it after it exited."""
        server = self.start(*args, env=env, wait=False)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.stop()
            pytest.fail("serve started although it should have refused")
        server.stop()
        return server


@pytest.fixture
def auth_clients() -> dict[str, str | None]:
    return {"conf-app": CLIENT_SECRET}


@pytest.fixture
def harness(project, auth_server):
    project.write_config(providers_yaml(project.recipient, auth_server.issuer))
    project.env["DEMO_CLIENT_SECRET"] = CLIENT_SECRET
    watch = LeakWatch(auth_server)
    h = Harness(project, auth_server, watch)
    yield h
    for server in h.servers:
        server.stop()
    if h.token_file.exists():
        watch.secrets.add(h.token_file.read_text().strip())
    watch.check()


@pytest.fixture
def serve(harness):
    """A running server (subprocess) and a client holding its local secret."""
    server = harness.start()
    return server, server.client(harness.local_secret())


@pytest.fixture
def internal(harness):
    """A running server with the control plane mounted, and a control-plane client."""
    server = harness.start(env={"RECONCILER_CONTROL_PLANE_SECRET": CONTROL_SECRET})
    client = server.client(None)
    client.http.headers["x-control-plane-secret"] = CONTROL_SECRET
    return server, client


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs) -> None:
        self.now += timedelta(**kwargs)


@dataclass
class ThreadedServe:
    prepared: object
    thread: threading.Thread
    client: Client
    clock: FakeClock

    @property
    def url(self) -> str:
        return self.prepared.url


@pytest.fixture
def threaded_serve(harness, monkeypatch, request):
    """The app factory the CLI uses, run by uvicorn in a thread, with a fake clock. Indirect
    parametrization passes more keyword arguments to ``prepare``."""
    for key, value in harness.project.env.items():
        monkeypatch.setenv(key, value)
    clock = FakeClock()
    options = getattr(request, "param", {})
    prepared = prepare(
        harness.project.config, port=0, environ=dict(os.environ), clock=clock, **options
    )
    thread = threading.Thread(target=prepared.run, daemon=True)
    thread.start()
    client = Client(prepared.url, harness.watch, harness.local_secret())
    deadline = time.monotonic() + 10
    while True:
        try:
            client.get("/v1/status")
            break
        except httpx2.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield ThreadedServe(prepared, thread, client, clock)
    prepared.stop()
    thread.join(10)
    client.close()
