"""The engine unreachable (SPEC §7): valid cached tokens are still served; a grant whose
provider does not rotate refresh tokens is refreshed locally; a rotating one that is due is
refused with a clear message and no request to the provider; once the engine is back, the
next call refreshes, and what was refreshed meanwhile is committed."""

from __future__ import annotations

import json
import time

from .support import Fleet


def test_engine_stopped_then_back(tmp_path, auth_server, etcd_alone) -> None:
    fleet = Fleet(tmp_path, auth_server, etcd_alone.endpoints, "acme/agents")
    fleet.declare("api")
    fleet.declare("due")
    fleet.declare("steady", rotating=False)
    fleet.write_origin()
    api = fleet.issue("api")
    fleet.put(fleet.grant(api, expired=False, name="api"))
    fleet.put(fleet.grant(fleet.issue("due"), expired=True, name="due"))
    steady = fleet.issue("steady")
    # Due half its lifetime after this (4 s): long enough for the reads below on a busy machine.
    fleet.put(fleet.grant(steady, name="steady", expires_in=8))
    issued = time.monotonic()
    fleet.clone()
    machine = fleet.machines[0]
    assert machine.run("token", "api").stdout.strip() == api.access_token  # cached from here
    assert machine.run("token", "steady").stdout.strip() == steady.access_token
    before = fleet.refreshes()

    etcd_alone.stop()
    started = time.monotonic()
    served = machine.run("token", "api")
    assert served.code == 0 and served.stdout.strip() == api.access_token
    refused = machine.run("token", "due")
    assert refused.code == 1
    assert "coordination engine cannot be reached" in refused.stderr
    assert "rotates refresh tokens" in refused.stderr
    assert "Nothing was sent to the provider" in refused.stderr
    assert fleet.refreshes() == before, "a rotating grant was refreshed without the engine"
    planned = machine.run("plan", "-o", "json")  # the files still say what is linked
    assert planned.code == 0, planned
    assert json.loads(planned.stdout)["actions"] == []
    assert "not read" in planned.stderr or "not read" in planned.stdout
    grants = json.loads(machine.run("status", "-o", "json").stdout)["grants"]
    assert {g["name"]: g["custody"] for g in grants} == dict.fromkeys(
        ["api", "due", "steady"], "etcd"
    )
    assert time.monotonic() - started < 20

    time.sleep(max(0.0, 8.5 - (time.monotonic() - issued)))  # steady's token has expired now
    local = machine.run("token", "steady")
    assert local.code == 0, local
    assert local.stdout.strip() != steady.access_token and fleet.accepted(local.stdout.strip())
    assert fleet.refreshes() == before + 1

    etcd_alone.start(new=False)
    due = machine.run("token", "due")
    assert due.code == 0, due
    assert fleet.accepted(due.stdout.strip())
    assert fleet.refreshes() == before + 2
    other = fleet.machines[1].run("token", "steady")
    assert other.code == 0 and fleet.accepted(other.stdout.strip())
    assert fleet.auth.reuse_detected == 0
