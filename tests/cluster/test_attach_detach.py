"""`attach` moves a grant's live state into etcd (the committed file then holds no refresh
token), `detach` brings it back; `plan` shows both and `status` shows the custody."""

from __future__ import annotations

import json

from reconciler.custody.etcd_gateway import Gateway
from reconciler.vault.store import read_grant, write_grant

from .support import Fleet


def test_attach_then_detach_through_plan_and_apply(fleet: Fleet) -> None:
    machine = fleet.machines[0]
    fleet.write_origin(coordination=False)
    token = fleet.issue()
    grant_file = fleet.origin / "secrets" / "api.sops.yaml"
    recipients = [m.recipient for m in fleet.machines]
    write_grant(grant_file, fleet.grant(token, expired=False), recipients)
    fleet.clone()
    path = machine.root / "secrets" / "api.sops.yaml"
    assert "refresh_token" in read_grant(path, None).sealed

    (machine.config).write_text(fleet.config_text(coordination=True))
    planned = machine.run("plan", "-o", "json")
    assert planned.code == 0, planned
    actions = json.loads(planned.stdout)["actions"]
    assert [(a["name"], a["action"]) for a in actions] == [("api", "attach")]

    applied = machine.run("apply")
    assert applied.code == 0, applied
    attached = read_grant(path, None)
    assert attached.custody == "etcd"
    assert not attached.sealed & {"refresh_token", "access_token"}, "the file still holds tokens"
    status = json.loads(machine.run("status", "-o", "json").stdout)["grants"][0]
    assert status["custody"] == "etcd" and status["revision"] and status["generation"] == 1
    served = machine.run("token", "api")
    assert served.code == 0 and served.stdout.strip() == token.access_token
    assert machine.run("plan", "--exit-code").code == 0

    (machine.config).write_text(fleet.config_text(coordination=False))
    planned = machine.run("plan", "-o", "json")
    actions = json.loads(planned.stdout)["actions"]
    assert [(a["name"], a["action"]) for a in actions] == [("api", "detach")]
    applied = machine.run("apply")
    assert applied.code == 0, applied
    detached = read_grant(path, None)
    assert detached.custody is None and "refresh_token" in detached.sealed
    # Nothing of the grant is left in etcd: only the writers' keys (``custody.keyring``).
    left = Gateway(fleet.endpoints).range(fleet.namespace.encode(), prefix=True)[1]
    assert {kv.key.split(b"/")[-2] for kv in left} == {b"keys"}
    status = json.loads(machine.run("status", "-o", "json").stdout)["grants"][0]
    assert status["custody"] == "files" and "revision" not in status
    assert machine.run("token", "api").stdout.strip() == token.access_token
    assert machine.run("plan", "--exit-code").code == 0


def test_revoking_an_attached_grant_revokes_the_tokens_kept_in_etcd(fleet: Fleet) -> None:
    token = fleet.link(expired=False)
    machine = fleet.machines[0]
    revoked = machine.run("revoke", "api")
    assert revoked.code == 0, revoked
    assert fleet.auth.find_token(token.refresh_token or "", "refresh_token").refresh_revoked
    assert not (machine.root / "secrets" / "api.sops.yaml").exists()
    assert (
        Gateway(fleet.endpoints).range(f"{fleet.namespace}/grants/".encode(), prefix=True)[1] == []
    )


def test_a_grant_linked_on_another_machine_is_not_linked_again_before_git_brings_its_file(
    fleet: Fleet,
) -> None:
    token = fleet.link(expired=False)
    machine = fleet.machines[2]
    (machine.root / "secrets" / "api.sops.yaml").unlink()  # this clone is behind
    planned = machine.run("plan", "-o", "json")
    assert planned.code == 0, planned
    assert json.loads(planned.stdout)["actions"] == []
    assert machine.run("token", "api").stdout.strip() == token.access_token
