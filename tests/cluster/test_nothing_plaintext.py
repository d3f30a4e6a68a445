"""Nothing in etcd is plaintext (SPEC §7): every value under the namespace is sealed under its
writer's key, which is itself sealed to the grant's recipients (age-encrypted to each), and no
token appears in any of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyrage
import pytest

from reconciler.custody import keyring, sealed
from reconciler.custody.etcd import EtcdCustody
from reconciler.custody.etcd_gateway import Gateway
from reconciler.model import Coordination, Desired, Grant, Provider, Secret
from reconciler.vault.sops.keys import load_identities
from reconciler.vault.store import read_grant
from tests.support import new_identity

NOW = datetime.now(UTC).replace(microsecond=0)
TOKENS = ("rt-plaintext-canary-1", "at-plaintext-canary-1", "rt-canary-2", "at-canary-2")


def test_no_value_in_etcd_holds_a_token(etcd, tmp_path: Path) -> None:
    server, namespace = etcd
    recipient = new_identity(tmp_path / "keys.txt")
    environ = {"SOPS_AGE_KEY_FILE": str(tmp_path / "keys.txt"), "HOME": str(tmp_path)}
    environ["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    (tmp_path / "providers.yaml").write_text("version: 1\n")
    desired = Desired(
        path=tmp_path / "providers.yaml",
        store_dir=tmp_path / "secrets",
        recipients={"api": (recipient,)},
        refresh_before=timedelta(minutes=5),
        keepalive=timedelta(days=7),
        providers={"api": Provider(name="api", client_id="cid")},
        secrets={},
        coordination=Coordination(endpoints=tuple(server.endpoints), namespace=namespace),
    )
    identities = load_identities(environ, required=True)
    custody = EtcdCustody(desired, identities, environ)
    grant = Grant(
        name="api",
        kind="oauth2",
        client_id="cid",
        access_token=Secret(TOKENS[1]),
        refresh_token=Secret(TOKENS[0]),
        obtained_at=NOW,
        expires_at=NOW + timedelta(hours=1),
    )
    with custody.single_flight("api") as held:
        held = custody.commit(held, grant, durable=True)
    with custody.single_flight("api") as held, custody.in_flight(held, 5.0) as flight:
        # While a refresh is in flight: the lock and the intent are in etcd too.
        fresh = Grant(
            **{
                **grant.__dict__,
                "access_token": Secret(TOKENS[3]),
                "refresh_token": Secret(TOKENS[2]),
            }
        )
        flight.escrow(fresh)
        _, during = Gateway(server.endpoints).range(namespace.encode(), prefix=True)
        custody.commit(held, fresh, durable=True)
    _, after = Gateway(server.endpoints).range(namespace.encode(), prefix=True)

    keys = {kv.key.decode() for kv in during} | {kv.key.decode() for kv in after}
    assert {
        f"{namespace}/grants/api",
        f"{namespace}/locks/api",
        f"{namespace}/inflight/api",
    } <= keys
    assert any(key.startswith(f"{namespace}/keys/") for key in keys)
    stranger = pyrage.x25519.Identity.generate()
    gateway = Gateway(server.endpoints)
    prefix = f"{namespace}/keys/".encode()
    for kv in [*during, *after]:
        if kv.key.startswith(prefix):
            # A writer's key: sealed to the recipients (one here: one age file).
            assert sealed.is_sealed(kv.value), kv.key
            assert kv.value.count(b"age-encryption.org/v1\n") == 1, kv.key
            sealed.unseal(kv.value, identities, [])  # the recipient opens it, without a label
            with pytest.raises(sealed.Unsealable):
                sealed.unseal(kv.value, [stranger], [])
        else:
            assert keyring.key_id_of(kv.value) is not None, kv.key
            keyring.Keyring(gateway, prefix, namespace, identities).open(kv.value)
            with pytest.raises(sealed.Unsealable):
                keyring.Keyring(gateway, prefix, namespace, [stranger]).open(kv.value)
        for token in TOKENS:
            assert token.encode() not in kv.value
    # And the grant file holds no live token once the state is in the engine.
    stored = read_grant(tmp_path / "secrets" / "api.sops.yaml", None)
    assert stored.custody == "etcd" and not stored.sealed & {"refresh_token", "access_token"}
