"""The etcd client with username/password authentication (``/v3/auth/authenticate``, the token
sent on every request, and fetched again once it is no longer accepted)."""

from __future__ import annotations

import pytest

from reconciler.custody.etcd_gateway import EngineError, Gateway
from reconciler.model import Secret


def test_a_user_with_a_password_reads_and_writes_and_others_are_refused(etcd_alone) -> None:
    admin = Gateway(etcd_alone.endpoints)
    admin.call("/v3/auth/user/add", {"name": "root", "password": "root-pass-123"})
    admin.call("/v3/auth/role/add", {"name": "root"})
    admin.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
    admin.call("/v3/auth/enable", {})

    user = Gateway(etcd_alone.endpoints, username="root", password=Secret("root-pass-123"))
    user.put(b"acme/x", b"value")
    assert user.get(b"acme/x").value == b"value"
    with pytest.raises(EngineError):
        Gateway(etcd_alone.endpoints).get(b"acme/x")
    with pytest.raises(EngineError):
        Gateway(etcd_alone.endpoints, username="root", password=Secret("wrong")).get(b"acme/x")
