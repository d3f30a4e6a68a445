"""Running the real `reconcile` command against the test authorization server.

The ``e2e`` fixture (tests/e2e/conftest.py) bundles an isolated project (tests/conftest.py),
the authorization server of tests/e2e/authserver.py on 127.0.0.1, ``$BROWSER`` pointing at
fake_browser.py, and a leak check that runs after every test: no access or refresh token the
server issued (nor a client secret) may appear on stderr, on stdout (except `reconcile
token`'s), in any file under the test's folders (project, HOME, caches: encrypted files hold no
plaintext, so a byte scan finds none there), or in any process command line seen while the test
ran.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support import sops_binary

from .authserver import AuthServer, Client
from .browser import http_client

FAKE_BROWSER = Path(__file__).with_name("fake_browser.py")


@dataclass
class Ran:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:  # shown by pytest when an assertion on a run fails
        return f"reconcile {' '.join(self.args)} → {self.code}\n{self.stdout}\n{self.stderr}"


class CmdlineSampler:
    """Every distinct command line, as `ps` would show it, of the processes this test starts
    and of all their descendants, sampled every ``interval`` seconds while the test runs."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.seen: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="cmdline-sampler")
        self._tree = Path(f"/proc/{os.getpid()}/task").exists()

    def start(self) -> CmdlineSampler:
        if Path("/proc/self/cmdline").exists():
            self._thread.start()
        return self

    def _pids(self) -> list[str]:
        """Our descendants (through /proc/PID/task/TID/children), or every process."""
        if not self._tree:
            return [entry.name for entry in os.scandir("/proc") if entry.name.isdigit()]
        found: list[str] = []
        stack = [str(os.getpid())]
        while stack:
            pid = stack.pop()
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for task in tasks:
                try:
                    with open(f"/proc/{pid}/task/{task}/children", "rb") as handle:
                        children = handle.read().split()
                except OSError:
                    continue
                for child in children:
                    found.append(child.decode())
                    stack.append(child.decode())
        return found

    def sample(self) -> None:
        for pid in self._pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    line = handle.read()
            except OSError:
                continue
            if line:
                self.seen.add(line.replace(b"\0", b" "))

    def ps(self) -> None:
        """Also ask `ps` itself, for the record."""
        if shutil.which("ps"):
            out = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, check=False)
            self.seen.update(out.stdout.splitlines())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


@dataclass
class E2E:
    project: Any  # tests.conftest.Project
    auth: AuthServer
    tmp: Path
    env: dict[str, str]
    runs: list[Ran] = field(default_factory=list)
    client_secrets: list[str] = field(default_factory=list)
    sampler: CmdlineSampler | None = None
    refresh_before: str = "30s"
    config: dict[str, Any] = field(default_factory=dict)

    # --- configuration ----------------------------------------------------------------------

    @property
    def root(self) -> Path:
        return self.project.root

    @property
    def store(self) -> Path:
        return self.project.store

    @property
    def home(self) -> Path:
        return Path(self.env["HOME"])

    def declare(
        self,
        name: str,
        client: Client,
        *,
        scopes: tuple[str, ...] = ("read", "write"),
        flow: str | None = None,
        issuer_only: bool = False,
        revocation: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """A provider entry for ``client`` of the test server (explicit endpoints, or only
        ``issuer``); its client secret is passed as ``env:``."""
        entry: dict[str, Any] = {"client_id": client.client_id}
        if client.client_secret is not None:
            variable = "E2E_SECRET_" + re.sub(r"\W", "_", name).upper()
            self.env[variable] = client.client_secret
            if client.client_secret not in self.client_secrets:
                self.client_secrets.append(client.client_secret)
            entry["client_secret"] = f"env:{variable}"
        if issuer_only:
            entry["issuer"] = self.auth.issuer
        else:
            entry["authorization_endpoint"] = self.auth.endpoint("/authorize")
            entry["token_endpoint"] = self.auth.endpoint("/token")
            entry["device_authorization_endpoint"] = self.auth.endpoint("/device_authorization")
            if revocation:
                entry["revocation_endpoint"] = self.auth.endpoint("/revoke")
            entry["token_endpoint_auth_method"] = client.auth_method
        if flow:
            entry["flow"] = flow
        entry["scopes"] = list(scopes)
        entry.update(fields)
        self.config.setdefault("providers", {})[name] = entry
        return entry

    def undeclare(self, name: str) -> None:
        del self.config["providers"][name]

    def write_config(self) -> None:
        document = {
            "version": 1,
            "store": {"dir": "secrets", "recipients": [self.project.recipient]},
            "defaults": {"refresh_before": self.refresh_before},
            **self.config,
        }
        self.project.config.write_text(yaml.safe_dump(document, sort_keys=False))

    # --- running the CLI --------------------------------------------------------------------

    def _env(self, env: dict[str, str] | None) -> dict[str, str]:
        return {**self.env, **(env or {})}

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Ran:
        """`reconcile ARGS` in a separate process, with no terminal on stdin."""
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            cwd=self.root,
            env=self._env(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        ran = Ran(tuple(args), done.returncode, done.stdout, done.stderr)
        self.runs.append(ran)
        return ran

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler", *args],
            cwd=self.root,
            env=self._env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, process: subprocess.Popen, timeout: float = 60) -> Ran:
        stdout, stderr = process.communicate(timeout=timeout)
        return self.record(process, stdout, stderr)

    def record(self, process: subprocess.Popen, stdout: str, stderr: str) -> Ran:
        args = tuple(str(a) for a in process.args[3:])  # type: ignore[index]
        ran = Ran(args, process.returncode, stdout, stderr)
        self.runs.append(ran)
        return ran

    def watch(self, *args: str, env: dict[str, str] | None = None) -> Watched:
        """Start `reconcile ARGS` and read its stderr as it comes."""
        return Watched(self, self.start(*args, env=env))

    # --- observations -----------------------------------------------------------------------

    def visits(self, count: int | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
        """What the fake browser recorded; waits for ``count`` entries (the browser may still
        be writing when the CLI has exited)."""
        import json

        log = Path(self.env["E2E_BROWSER_LOG"])
        deadline = time.monotonic() + timeout
        while True:
            lines = log.read_text().splitlines() if log.exists() else []
            if count is None or len(lines) >= count or time.monotonic() > deadline:
                return [json.loads(line) for line in lines]
            time.sleep(0.02)

    def grant_file(self, name: str) -> Path:
        return self.store / f"{name}.sops.yaml"

    def sops_decrypt(self, name: str) -> dict[str, Any]:
        """The grant file decrypted by the real `sops` binary."""
        done = subprocess.run(
            [sops_binary(), "-d", str(self.grant_file(name))],
            env={**self.project.env, "SOPS_AGE_KEY_FILE": str(self.project.key_file)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return yaml.safe_load(done.stdout)

    def raw(self, name: str) -> dict[str, Any]:
        """The grant file as plain YAML (encrypted leaves stay ``ENC[...]``)."""
        return yaml.safe_load(self.grant_file(name).read_text())

    def issued(self) -> list[str]:
        """Every access and refresh token value the server issued."""
        with self.auth.lock:
            values = [t.access_token for t in self.auth.tokens]
            values += [t.refresh_token for t in self.auth.tokens if t.refresh_token]
        return values

    def latest(self, client: Client):
        """The server's most recent token for ``client``."""
        with self.auth.lock:
            return [t for t in self.auth.tokens if t.client.client_id == client.client_id][-1]

    def try_refresh(self, client: Client, refresh_token: str) -> int:
        """Use ``refresh_token`` at the server directly; the HTTP status (200 or 400)."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        auth = None
        if client.client_secret is None:
            form["client_id"] = client.client_id
        elif client.auth_method == "client_secret_post":
            form.update(client_id=client.client_id, client_secret=client.client_secret)
        else:
            auth = (client.client_id, client.client_secret)
        with http_client() as http:
            response = http.post(self.auth.endpoint("/token"), data=form, auth=auth)
        return response.status_code

    def revoke_behind_our_back(self, client: Client, refresh_token: str) -> None:
        with http_client() as http:
            response = http.post(
                self.auth.endpoint("/revoke"),
                data={"token": refresh_token, "token_type_hint": "refresh_token"},
                auth=(client.client_id, client.client_secret or ""),
            )
        assert response.status_code == 200, response.text

    def token_calls(self, grant_type: str) -> int:
        with self.auth.lock:
            return self.auth.token_calls[grant_type]

    # --- the leak check ---------------------------------------------------------------------

    def check_leaks(self) -> None:
        values = [v for v in [*self.issued(), *self.client_secrets] if v]
        if not values:
            return
        needles = [v.encode() for v in values]
        for ran in self.runs:
            for value in values:
                assert value not in ran.stderr, f"a secret on stderr of {ran.args}"
                if ran.args[:1] != ("token",):
                    assert value not in ran.stdout, f"a secret on stdout of {ran.args}"
        for path in self.tmp.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                for needle in needles:
                    assert needle not in data, f"a secret in plaintext in {path}"
        if self.sampler is not None:
            self.sampler.sample()
            for line in self.sampler.seen:
                for needle in needles:
                    assert needle not in line, "a secret in a process command line"


class Watched:
    """A running `reconcile` whose stderr lines are collected as they are printed."""

    def __init__(self, session: E2E, process: subprocess.Popen) -> None:
        self.session = session
        self.process = process
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match:
        """Wait for a stderr line matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if found := regex.search(line):
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no {pattern!r} on stderr: {''.join(self.lines)}")
                self._changed.wait(min(left, 0.1))

    def finish(self, timeout: float = 60) -> Ran:
        assert self.process.stdout is not None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        stdout = self.process.stdout.read()
        self._reader.join(timeout)
        return self.session.record(self.process, stdout, "".join(self.lines))


def browser_launcher(directory: Path) -> Path:
    """`$BROWSER` is run as one executable with the URL as its argument: a tiny wrapper."""
    directory.mkdir(parents=True, exist_ok=True)
    launcher = directory / "browser"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_BROWSER}" "$@"\n')
    launcher.chmod(0o755)
    return launcher


#: Device-flow polling runs on a scaled clock in the CLI (and on the server), so that RFC 8628's
#: intervals (1 s, +5 s per slow_down) take a few hundred milliseconds.
SCALE = 0.05


DEVICE_CLOCK_HOOK = """
import importlib.abc, importlib.machinery, os, sys, time

SCALE = float(os.environ.get("E2E_DEVICE_TIME_SCALE") or 0)


class _ScaleDeviceClock(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "reconciler.oauth.device":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            defaults = module.run_device_flow.__kwdefaults__
            defaults["sleep"] = lambda seconds: time.sleep(seconds * SCALE)
            defaults["clock"] = lambda: time.monotonic() / SCALE

        spec.loader.exec_module = exec_module
        return spec


if SCALE:
    sys.meta_path.insert(0, _ScaleDeviceClock())
"""


def scaled_device_clock(e2e) -> dict[str, str]:
    """The environment that puts the CLI's device polling on the scaled clock (a
    sitecustomize hook: the command line stays `python -m reconciler ...`)."""
    hooks = e2e.tmp / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(DEVICE_CLOCK_HOOK)
    e2e.auth.clock = lambda: time.monotonic() / SCALE
    return {
        "PYTHONPATH": f"{hooks}{os.pathsep}{e2e.env['PYTHONPATH']}",
        "E2E_DEVICE_TIME_SCALE": str(SCALE),
    }


def record_device_polls(auth) -> list[tuple[float, str]]:
    """(server clock, outcome) of every device-code poll the server answers."""
    polls: list[tuple[float, str]] = []
    answer = auth.server.create_token_response

    def recorded(request):
        response = answer(request)
        if request.form.get("grant_type") == ["urn:ietf:params:oauth:grant-type:device_code"]:
            body = response.body if isinstance(response.body, dict) else {}
            polls.append((auth.clock(), body.get("error", "token")))
        return response

    auth.server.create_token_response = recorded
    return polls


def approve_at_the_server(e2e, user_code: str) -> None:
    from .browser import http_client

    with http_client() as http:
        response = http.post(e2e.auth.endpoint("/device/approve"), data={"user_code": user_code})
    assert response.status_code == 200
