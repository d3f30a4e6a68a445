"""Many machines at expiry (SPEC §7): one refresh among all of them, and every caller gets a
token the server accepts, against a server that rotates refresh tokens and revokes the grant
when a rotated one is presented again."""

from __future__ import annotations

from reconciler.custody.etcd_gateway import Gateway

from .support import Fleet


def test_3_machines_x_8_concurrent_token_calls_at_expiry_make_exactly_one_refresh(
    fleet: Fleet,
) -> None:
    fleet.link(expired=True)
    processes = [machine.start("token", "api") for _ in range(8) for machine in fleet.machines]
    results = [process.communicate(timeout=120) for process in processes]

    for process, (_, stderr) in zip(processes, results, strict=True):
        assert process.returncode == 0, stderr
        assert "invalid_grant" not in stderr
    assert fleet.refreshes() == 1
    tokens = {stdout.strip() for stdout, _ in results}
    assert all(fleet.accepted(token) for token in tokens), "a caller got a token the server refuses"
    assert fleet.auth.reuse_detected == 0
    assert fleet.grant_alive()
    # Nothing plaintext in etcd: no value under the namespace holds any token issued.
    _, values = Gateway(fleet.endpoints).range(fleet.namespace.encode(), prefix=True)
    issued = [t.access_token for t in fleet.auth.tokens] + [
        t.refresh_token for t in fleet.auth.tokens if t.refresh_token
    ]
    assert values and not [kv.key for kv in values for t in issued if t.encode() in kv.value]
