"""Shared fixtures: an isolated project folder with its own age identity and environment.

Markers (registered in pyproject.toml) are set here by folder and fixture, not by hand:
``e2e`` for every test under tests/e2e/ and tests/mcp/ or using the real authorization server
(``auth_server``), ``cluster`` for every test under tests/cluster/ (real etcd). The fast loop is
``python -m pytest -m "not e2e and not cluster" -n 2`` (pytest-xdist, both cores).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import new_identity

if TYPE_CHECKING:
    from tests.e2e.authserver import AuthServer
    from tests.etcd_process import Etcd

TESTS = Path(__file__).resolve().parent
MARK_BY_FOLDER = {TESTS / "e2e": "e2e", TESTS / "mcp": "e2e", TESTS / "cluster": "cluster"}
MARK_BY_FIXTURE = {"auth_server": "e2e", "etcd": "cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = {
            mark for folder, mark in MARK_BY_FOLDER.items() if item.path.is_relative_to(folder)
        }
        names |= {mark for fixture, mark in MARK_BY_FIXTURE.items() if fixture in item.fixturenames}
        for name in sorted(names):
            item.add_marker(name)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


@dataclass
class Project:
    """A folder with providers.yaml, an identity the way sops finds it, and a clean env."""

    root: Path
    env: dict[str, str]
    recipient: str
    key_file: Path
    outputs: list[str] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "providers.yaml"

    @property
    def store(self) -> Path:
        return self.root / "secrets"

    def write_config(self, text: str) -> None:
        self.config.write_text(text)

    def reconcile(self, *args: str, env: dict[str, str] | None = None) -> Run:
        """Run the real CLI in a separate process, as a user would."""
        completed = subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.outputs.extend([completed.stdout, completed.stderr])
        return Run(completed.returncode, completed.stdout, completed.stderr)

    def snapshot(self) -> dict[str, bytes]:
        """Every file under the store folder, by relative path, with its bytes; the empty
        lock sidecars (``*.lock``, git-ignored) are no part of the store's content."""
        if not self.store.exists():
            return {}
        return {
            str(p.relative_to(self.store)): p.read_bytes()
            for p in sorted(self.store.rglob("*"))
            if p.is_file() and p.suffix != ".lock"
        }


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "project"
    home = tmp_path / "home"
    root.mkdir()
    home.mkdir()
    key_file = tmp_path / "keys" / "keys.txt"
    recipient = new_identity(key_file)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "SOPS_AGE_KEY_FILE": str(key_file),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    return Project(root, env, recipient, key_file)


@pytest.fixture
def auth_clients() -> dict[str, str | None]:
    """The clients (id: secret, None for a public one) that ``auth_server`` knows from the
    start; a folder's conftest overrides this fixture to register its own."""
    return {}


@pytest.fixture
def auth_server(auth_clients: dict[str, str | None]) -> Iterator[AuthServer]:
    """The real Authlib authorization server of tests/e2e/authserver.py on 127.0.0.1, on an
    ephemeral port, with the clients of ``auth_clients``."""
    # Authlib loads only for the tests that use the server.
    from tests.e2e.authserver import AuthServer

    server = AuthServer().start()
    for client_id, secret in auth_clients.items():
        server.add_client(client_id, secret)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory) -> Iterator[Etcd]:
    """One real etcd member on loopback ports for the whole session (tests keep apart by
    namespace: the ``etcd`` fixture)."""
    from tests.etcd_process import Etcd

    server = Etcd(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


@pytest.fixture
def etcd(etcd_server: Etcd, request) -> tuple[Etcd, str]:
    """The session's etcd member and a namespace of this test's own."""
    namespace = "test/" + re.sub(r"[^A-Za-z0-9._-]+", "-", f"{request.node.name}-{os.getpid()}")
    return etcd_server, namespace


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """In-process tests never write to the real ~/.cache (token cache, validation verdicts)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
