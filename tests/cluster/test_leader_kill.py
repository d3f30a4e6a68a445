"""A 3-member etcd cluster whose leader is killed while 3 machines refresh 100 grants at once
(SPEC §7): every grant survives (its refresh token in etcd is the one the server accepts), and
no refresh token is presented twice."""

from __future__ import annotations

from reconciler.custody.etcd_gateway import Gateway
from reconciler.custody.etcd_records import decrypt, from_record
from reconciler.custody.keyring import Keyring
from reconciler.vault.sops.keys import load_identities

from .support import Fleet, wait_for

GRANTS = 100


def test_leader_killed_during_100_refreshes_every_grant_survives(
    tmp_path, auth_server, etcd_cluster
) -> None:
    fleet = Fleet(tmp_path, auth_server, etcd_cluster.endpoints, "acme/leader")
    names = [f"g{index:03d}" for index in range(GRANTS)]
    fleet.link_all(names)

    runs = [machine.start("apply") for machine in fleet.machines]
    assert wait_for(lambda: fleet.refreshes() >= GRANTS // 4, 60)
    leader = etcd_cluster.leader()
    etcd_cluster.kill(leader)
    at_kill = fleet.refreshes()
    results = [run.communicate(timeout=300) for run in runs]
    # Whatever a run could not finish during the election, the next run does.
    for machine in fleet.machines:
        machine.run("apply", timeout=300)

    env = fleet.machines[0].env
    identities = load_identities(env, required=True)
    gateway = Gateway([m.client_url for m in etcd_cluster.members if m is not leader])
    _, states = gateway.range(b"acme/leader/grants/", prefix=True)
    assert len(states) == GRANTS
    keyring = Keyring(gateway, b"acme/leader/keys/", "acme/leader", identities)
    lost = []
    for kv in states:
        grant = from_record(decrypt(kv.value, keyring)["grant"])
        token = fleet.auth.find_token(grant.refresh_token.reveal(), "refresh_token")
        if (
            token is None
            or token.refresh_revoked
            or not fleet.accepted(grant.access_token.reveal())
        ):
            lost.append(grant.name)
    assert lost == [], f"grants lost: {lost}\n" + "\n".join(err[-2000:] for _, err in results)
    assert fleet.auth.reuse_detected == 0
    assert at_kill < GRANTS, "the leader was killed after every refresh was done"
    assert GRANTS <= fleet.refreshes() <= GRANTS + 3
