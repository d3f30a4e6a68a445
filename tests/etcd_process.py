"""Real ``etcd`` processes on loopback ports for the tests marked ``cluster``: one member, or a
cluster of three, each with a data folder of its own; stopped (SIGKILL) at the end.

``etcd`` is the Debian ``etcd-server`` binary (/usr/bin/etcd, 3.4); a missing one fails the
test, it never turns into a skip."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def etcd_binary() -> str:
    found = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
    if found is None:
        pytest.fail("the `etcd` binary (Debian etcd-server) is not installed", pytrace=False)
    return found


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@dataclass
class Etcd:
    """One etcd cluster (1 or 3 members) under ``root``."""

    root: Path
    size: int = 1
    members: list[Member] = field(default_factory=list)
    #: Extra ``etcd`` flags (TLS, say) and the scheme of its client URLs.
    flags: list[str] = field(default_factory=list)
    scheme: str = "http"

    def __post_init__(self) -> None:
        for index in range(self.size):
            name = f"m{index}"
            self.members.append(
                Member(
                    name,
                    free_port(),
                    free_port(),
                    self.root / name,
                    self.root / f"{name}.log",
                )
            )

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url.replace("http://", f"{self.scheme}://") for m in self.members]

    def start(self, member: Member | None = None, *, new: bool = True) -> Etcd:
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for one in [member] if member else self.members:
            command = [
                etcd_binary(),
                "--name", one.name,
                "--data-dir", str(one.data_dir),
                "--listen-client-urls", self._client(one),
                "--advertise-client-urls", self._client(one),
                "--listen-peer-urls", one.peer_url,
                "--initial-advertise-peer-urls", one.peer_url,
                "--initial-cluster", cluster,
                "--initial-cluster-state", "new" if new else "existing",
                "--initial-cluster-token", f"t{os.getpid()}-{self.members[0].client_port}",
                "--heartbeat-interval", "50",
                "--election-timeout", "500",
                "--log-level", "warn",
                *self.flags,
            ]  # fmt: skip
            one.log.parent.mkdir(parents=True, exist_ok=True)
            with open(one.log, "ab") as log:
                one.process = subprocess.Popen(command, stdout=log, stderr=log)
        self.wait_healthy(member)
        return self

    def _client(self, member: Member) -> str:
        return member.client_url.replace("http://", f"{self.scheme}://")

    def wait_healthy(self, member: Member | None = None, timeout: float = 20.0) -> None:
        ends = time.monotonic() + timeout
        targets = [member] if member else self.members
        while time.monotonic() < ends:
            if all(self._healthy(m) for m in targets):
                return
            time.sleep(0.05)
        logs = "\n".join(m.log.read_text()[-2000:] for m in targets if m.log.exists())
        raise AssertionError(f"etcd did not become healthy:\n{logs}")

    def _healthy(self, member: Member) -> bool:
        if self.scheme != "http":  # a TLS member: its port answering is enough here
            try:
                with socket.create_connection(("127.0.0.1", member.client_port), timeout=1):
                    return True
            except OSError:
                return False
        try:
            with urllib.request.urlopen(member.client_url + "/health", timeout=1) as answer:
                return bool(json.loads(answer.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def leader(self) -> Member:
        for member in self.members:
            if member.process is None or member.process.poll() is not None:
                continue
            request = urllib.request.Request(
                member.client_url + "/v3/maintenance/status", data=b"{}", method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=1) as answer:
                    status = json.loads(answer.read())
            except OSError:
                continue
            if status.get("leader") == status.get("header", {}).get("member_id"):
                return member
        raise AssertionError("no etcd leader")

    def kill(self, member: Member) -> None:
        if member.process is not None and member.process.poll() is None:
            member.process.send_signal(signal.SIGKILL)
            member.process.wait(10)

    def stop(self) -> None:
        for member in self.members:
            self.kill(member)
