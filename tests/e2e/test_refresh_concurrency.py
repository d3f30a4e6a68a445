"""SPEC §6 end to end: N processes running `reconcile token NAME` at once, at expiry, against a
server that rotates refresh tokens, cause exactly one refresh, and a rotated refresh token is
never used twice."""

from __future__ import annotations

import os
import time
from pathlib import Path

PROCESSES = 8


def flock_waiters(lock: Path) -> int:
    """How many processes are blocked on an flock of ``lock`` (Linux: /proc/locks)."""
    try:
        inode = os.stat(lock).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return 0
    count = 0
    for line in lines:
        fields = line.split()
        if "->" in fields and "FLOCK" in fields:
            device_inode = fields[fields.index("->") + 5]
            if device_inode.rsplit(":", 1)[-1] == str(inode):
                count += 1
    return count


def hold_refreshes_until_everyone_waits(e2e, lock: Path, waiters: int):
    """Delay the server's answer to the first refresh until ``waiters`` other processes are
    blocked on the grant's lock (or 20 seconds passed), so that all of them really race;
    while waiting, record what `ps` shows."""
    auth = e2e.auth
    answer = auth.server.create_token_response
    seen: list[int] = []
    # Without /proc/locks (not Linux) there is nothing to watch: just hold it a moment.
    limit = 20.0 if Path("/proc/locks").exists() else 2.0

    def held(request):
        if request.form.get("grant_type") == ["refresh_token"] and not seen:
            deadline = time.monotonic() + limit
            while flock_waiters(lock) < waiters and time.monotonic() < deadline:
                time.sleep(0.02)
            seen.append(flock_waiters(lock))
            e2e.sampler.ps()
        return answer(request)

    auth.server.create_token_response = held
    return seen


def test_concurrent_token_reads_at_expiry_refresh_once(e2e):
    auth = e2e.auth
    client = auth.add_client("busy-app", "busy-secret")
    e2e.declare("busy", client)
    e2e.write_config()
    auth.token_lifetime = 1  # due half-way through its 1 s life
    assert e2e.run("link", "busy").code == 0
    auth.token_lifetime = 3600
    time.sleep(1)
    linked = e2e.latest(client)
    grant_file = e2e.grant_file("busy")
    seen = hold_refreshes_until_everyone_waits(
        e2e, grant_file.with_name(grant_file.name + ".lock"), PROCESSES - 1
    )

    processes = [e2e.start("token", "busy") for _ in range(PROCESSES)]
    runs = [e2e.finish(process) for process in processes]

    assert [run.code for run in runs] == [0] * PROCESSES, [run.stderr for run in runs]
    fresh = e2e.latest(client)
    assert {run.stdout for run in runs} == {fresh.access_token + "\n"}
    assert fresh.access_token != linked.access_token
    assert auth.token_calls["refresh_token"] == 1
    if Path("/proc/locks").exists():
        assert seen == [PROCESSES - 1]  # everyone else was waiting on the lock meanwhile
    # The file holds the rotated refresh token, which works; the old one was used once only.
    on_disk = e2e.sops_decrypt("busy")
    assert on_disk["refresh_token"] == fresh.refresh_token
    assert e2e.try_refresh(client, linked.refresh_token) == 400
    assert e2e.try_refresh(client, on_disk["refresh_token"]) == 200
