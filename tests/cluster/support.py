"""Several machines sharing one repository's grants through etcd: each machine is a folder with
its own HOME, caches, age identity and clone of the project, and runs the real `reconcile`
command as separate processes. The grant is linked against the test authorization server
(tests/e2e/authserver.py), which rotates refresh tokens and here revokes the grant on reuse."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from authlib.common.security import generate_token

from reconciler.config import load
from reconciler.custody.etcd import EtcdCustody
from reconciler.model import Grant, Secret
from reconciler.vault.sops.keys import load_identities
from tests.e2e.authserver import USER, AuthServer, Client, Token
from tests.e2e.cli_support import Ran
from tests.support import new_identity

ROOT = Path(__file__).resolve().parents[2]
SECRET_VARIABLE = "FLEET_CLIENT_SECRET"
SECRET = "fleet-secret-0123456789abcdef"


@dataclass
class Machine:
    name: str
    home: Path
    key_file: Path
    recipient: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """This machine's clone of the project."""
        return self.home / "project"

    @property
    def config(self) -> Path:
        return self.root / "providers.yaml"

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler", *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Ran:
        process = self.start(*args, env=env)
        stdout, stderr = process.communicate(timeout=timeout)
        return Ran(tuple(args), process.returncode, stdout, stderr)

    def custody(self) -> EtcdCustody:
        desired = load(self.config, environ=self.env, resolve_values=False)
        return EtcdCustody(desired, load_identities(self.env, required=True), self.env)


@dataclass
class Fleet:
    """``count`` machines, an origin project they cloned, and grants linked at the server
    (one client each; ``api`` unless declared otherwise)."""

    tmp: Path
    auth: AuthServer
    endpoints: list[str]
    namespace: str
    count: int = 3
    machines: list[Machine] = field(default_factory=list)
    clients: dict[str, Client] = field(default_factory=dict)
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.auth.revoke_on_reuse = True
        for index in range(self.count):
            home = self.tmp / f"machine-{index}"
            key_file = home / "keys.txt"
            recipient = new_identity(key_file)
            env = {
                "PATH": os.environ["PATH"],
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / ".config"),
                "XDG_CACHE_HOME": str(home / ".cache"),
                "SOPS_AGE_KEY_FILE": str(key_file),
                "LANG": "C.UTF-8",
                "PYTHONPATH": str(ROOT),
                SECRET_VARIABLE: SECRET,
            }
            self.machines.append(Machine(f"machine-{index}", home, key_file, recipient, env))

    @property
    def client(self) -> Client:
        return self.clients["api"]

    @property
    def origin(self) -> Path:
        return self.tmp / "origin"

    def declare(self, name: str = "api", *, rotating: bool = True, **fields: Any) -> Client:
        """Grant ``name``, with a client of its own at the server (one whose refresh tokens
        do not rotate unless ``rotating``)."""
        if name not in self.clients:
            client = self.auth.add_client(f"fleet-{name}", SECRET)
            if not rotating:
                self.auth.keep_refresh_tokens.add(client.client_id)
                fields.setdefault("rotates_refresh_tokens", False)
            self.clients[name] = client
            self.fields[name] = fields
        return self.clients[name]

    def config_text(self, *, coordination: bool = True, lease: str = "3s") -> str:
        if not self.clients:
            self.declare()
        providers = {
            name: {
                "client_id": client.client_id,
                "client_secret": f"env:{SECRET_VARIABLE}",
                "authorization_endpoint": self.auth.endpoint("/authorize"),
                "token_endpoint": self.auth.endpoint("/token"),
                "revocation_endpoint": self.auth.endpoint("/revoke"),
                "token_endpoint_auth_method": "client_secret_basic",
                "scopes": ["read", "write"],
                **self.fields[name],
            }
            for name, client in self.clients.items()
        }
        document: dict[str, Any] = {
            "version": 1,
            "store": {"dir": "secrets", "recipients": [m.recipient for m in self.machines]},
            "defaults": {"refresh_before": "30s"},
            "providers": providers,
        }
        if coordination:
            document["coordination"] = {
                "etcd": {"endpoints": self.endpoints, "namespace": self.namespace},
                "lease": lease,
            }
        return yaml.safe_dump(document, sort_keys=False)

    def issue(self, name: str = "api", *, expires_in: int = 3600) -> Token:
        """A grant the server knows (as if linked a moment ago)."""
        client = self.declare(name)
        with self.auth.lock:
            token = Token(
                client=client,
                user=USER,
                scope="read write",
                access_token=generate_token(42),
                refresh_token=generate_token(48),
                issued_at=self.auth.clock(),
                expires_in=expires_in,
                clock=self.auth.clock,
                family=10_000 + len(self.auth.tokens),
            )
            self.auth.tokens.append(token)
        return token

    def grant(
        self,
        token: Token,
        *,
        expired: bool = True,
        name: str = "api",
        expires_in: float | None = None,
    ) -> Grant:
        now = datetime.now(UTC)
        obtained = now - timedelta(hours=1)
        if expires_in is not None:
            obtained, expires = now, now + timedelta(seconds=expires_in)
        else:
            expires = now - timedelta(seconds=5) if expired else now + timedelta(hours=1)
        return Grant(
            name=name,
            kind="oauth2",
            flow="authorization_code",
            client_id=self.declare(name).client_id,
            token_endpoint=self.auth.endpoint("/token"),
            scopes=("read", "write"),
            granted_scopes=("read", "write"),
            token_type="Bearer",
            access_token=Secret(token.access_token),
            refresh_token=Secret(token.refresh_token or ""),
            obtained_at=obtained,
            expires_at=expires,
            decrypted=True,
        )

    def write_origin(self, *, coordination: bool = True) -> None:
        self.origin.mkdir(parents=True, exist_ok=True)
        (self.origin / "providers.yaml").write_text(self.config_text(coordination=coordination))

    def put(self, grant: Grant) -> None:
        """Commit ``grant`` into etcd (its file attached), as machine 0 of the origin."""
        env = {**self.machines[0].env}
        desired = load(self.origin / "providers.yaml", environ=env, resolve_values=False)
        custody = EtcdCustody(desired, load_identities(env, required=True), env)
        with custody.single_flight(grant.name) as held:
            custody.commit(held, grant, durable=True)

    def link(self, *, expired: bool = True, name: str = "api") -> Token:
        """``link_all`` for the one grant ``name``."""
        return self.link_all([name], expired=expired)[0]

    def link_all(self, names: Sequence[str], *, expired: bool = True) -> list[Token]:
        """Write the origin project, put each grant of ``names`` in etcd (its file attached),
        and clone the origin onto every machine."""
        for name in names:
            self.declare(name)
        self.write_origin()
        tokens = [self.issue(name) for name in names]
        for name, token in zip(names, tokens, strict=True):
            self.put(self.grant(token, expired=expired, name=name))
        self.clone()
        return tokens

    def clone(self) -> None:
        for machine in self.machines:
            if machine.root.exists():
                shutil.rmtree(machine.root)
            shutil.copytree(self.origin, machine.root)

    # --- observations at the server -----------------------------------------------------

    def refreshes(self) -> int:
        with self.auth.lock:
            return self.auth.token_calls["refresh_token"]

    def accepted(self, access_token: str) -> bool:
        """The server accepts ``access_token`` now (known, not revoked, not expired)."""
        token = self.auth.find_token(access_token, "access_token")
        return token is not None and not token.is_revoked() and not token.is_expired()

    def grant_alive(self, name: str = "api") -> bool:
        """The grant's newest refresh token still works at the server."""
        client = self.clients[name]
        with self.auth.lock:
            live = [
                t
                for t in self.auth.tokens
                if t.client is client and t.refresh_token and not t.refresh_revoked
            ]
        return bool(live)


def wait_for(condition, timeout: float = 10.0, step: float = 0.02) -> bool:
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())
