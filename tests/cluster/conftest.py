"""Fixtures for the tests on real etcd: a fleet of simulated machines (support.py) against the
session's single etcd member, and a 3-member cluster of their own where a test needs one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.etcd_process import Etcd

from .support import Fleet


@pytest.fixture
def fleet(tmp_path, auth_server, etcd) -> Fleet:
    server, namespace = etcd
    return Fleet(tmp_path, auth_server, server.endpoints, namespace)


@pytest.fixture
def etcd_alone(tmp_path_factory) -> Iterator[Etcd]:
    """One etcd member for this test alone (which may stop and start it)."""
    server = Etcd(tmp_path_factory.mktemp("etcd1")).start()
    yield server
    server.stop()


@pytest.fixture
def etcd_cluster(tmp_path_factory) -> Iterator[Etcd]:
    """Three etcd members on loopback ports, for this test alone."""
    cluster = Etcd(tmp_path_factory.mktemp("etcd3"), size=3).start()
    yield cluster
    cluster.stop()
