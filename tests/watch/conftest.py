"""`reconcile --watch` as a user runs it: a separate process, observed through the disk.

Every wait is bounded: ``wait_for`` polls a condition (a file, a value, an event line) until a
deadline and fails with what it saw. Nothing sleeps for a fixed time to let things happen.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

WAIT = 20.0  # seconds; generous for a loaded CI machine, and only spent on failure


class Watching:
    """A running `reconcile --watch -o json`, with its stdout events and stderr lines."""

    def __init__(self, project, *args: str, env: dict[str, str] | None = None) -> None:
        self.project = project
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "--watch", "-o", "json", *args],
            cwd=project.root,
            env={**project.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, is_json: bool) -> None:
        for line in stream:
            with self._lock:
                if is_json:
                    self.events.append(json.loads(line))
                else:
                    self.stderr.append(line.rstrip("\n"))

    # observations

    def seen(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e
                for e in self.events
                if e["event"] == kind and all(e.get(k) == v for k, v in fields.items())
            ]

    def errors(self) -> list[str]:
        with self._lock:
            return [line for line in self.stderr if line.startswith("error:")]

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if not self.alive():
                raise AssertionError(f"watcher exited ({self.process.returncode}) {self.dump()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what} {self.dump()}")
            time.sleep(0.02)

    def wait_idle(self, after: int) -> None:
        """Wait until the watcher has finished a cycle after ``after`` idle events."""
        self.wait_for(lambda: len(self.seen("idle")) > after, "the watcher to settle")

    def dump(self) -> str:
        with self._lock:
            return (
                "\nstderr:\n"
                + "\n".join(self.stderr)
                + "\nevents:\n"
                + "\n".join(json.dumps(e) for e in self.events)
            )

    # stopping

    def stop(self, sig: int = signal.SIGTERM, timeout: float = WAIT) -> int:
        if self.alive():
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"the watcher did not stop on signal {sig} {self.dump()}"
            ) from None
        for reader in self._readers:
            reader.join(5)
        return code


@pytest.fixture
def watch(project):
    started: list[Watching] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Watching:
        watching = Watching(project, *args, env=env)
        started.append(watching)
        watching.wait_for(lambda: watching.seen("watching"), "the watcher to start")
        return watching

    yield start
    for watching in started:
        if watching.alive():
            watching.process.kill()
            watching.process.wait()
