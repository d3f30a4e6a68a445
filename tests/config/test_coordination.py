"""``coordination:`` (SPEC §7) and the per-provider ``rotation_grace`` /
``rotates_refresh_tokens``: loaded into ``Desired``, and checked."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from reconciler.config import load
from reconciler.model import Coordination

from .support import error_of, minimal, write

PROVIDER = """\
providers:
  api:
    client_id: abc
    token_endpoint: https://auth.example.com/token
    authorization_endpoint: https://auth.example.com/authorize
"""


def test_coordination_is_loaded_with_its_defaults_and_resolved_files(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal(
            PROVIDER
            + """\
coordination:
  etcd:
    endpoints: [https://etcd-1.internal:2379, http://127.0.0.1:2379]
    namespace: acme/agents
    username: reconciler
    password: env:ETCD_PASSWORD
    ca_file: tls/ca.pem
"""
        ),
    )
    desired = load(path, environ={})
    assert desired.coordination == Coordination(
        endpoints=("https://etcd-1.internal:2379", "http://127.0.0.1:2379"),
        namespace="acme/agents",
        username="reconciler",
        password_ref="env:ETCD_PASSWORD",
        ca_file=str(tmp_path / "tls" / "ca.pem"),
        lease=timedelta(seconds=15),
    )


def test_without_coordination_there_is_none(tmp_path: Path) -> None:
    assert load(write(tmp_path, minimal(PROVIDER)), environ={}).coordination is None


def test_a_plain_http_endpoint_off_loopback_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal(
            PROVIDER
            + """\
coordination:
  etcd:
    endpoints: [http://etcd.internal:2379]
    namespace: acme
"""
        ),
    )
    assert "http://etcd.internal:2379" in str(error_of(path, environ={}))


def test_the_namespace_is_required(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal(PROVIDER + "coordination:\n  etcd:\n    endpoints: [http://127.0.0.1:2379]\n"),
    )
    assert "namespace" in str(error_of(path, environ={}))


def test_lease_and_rotation_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal(
            PROVIDER
            + """\
    rotation_grace: 30s
    rotates_refresh_tokens: false
coordination:
  etcd:
    endpoints: [http://localhost:2379]
    namespace: acme
  lease: 1m
"""
        ),
    )
    desired = load(path, environ={})
    assert desired.coordination is not None
    assert desired.coordination.lease == timedelta(minutes=1)
    api = desired.providers["api"]
    assert api.rotation_grace == timedelta(seconds=30)
    assert api.rotates_refresh_tokens is False


def test_providers_rotate_unless_declared_or_known_not_to(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal(
            PROVIDER
            + "  google:\n    preset: google\n    client_id: x\n"
            + "    client_secret: env:G\n"
        ),
    )
    desired = load(path, environ={})
    assert desired.providers["api"].rotates_refresh_tokens is True
    assert desired.providers["google"].rotates_refresh_tokens is False
