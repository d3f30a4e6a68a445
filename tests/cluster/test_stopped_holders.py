"""Holders that stop or die in the middle of a refresh (SPEC §7), on a server that rotates
refresh tokens and revokes the grant on reuse: no grant is lost. A holder stopped before it
sends sends nothing once it resumes; one stopped after the answer commits late, and its commit
is the newest; one killed after the answer leaves an escrow that its machine's next run
commits, or discards when the state moved on meanwhile. The others meanwhile are served the
valid token, and never present the refresh token that is in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .support import Fleet, Machine, wait_for

STOP_BEFORE_SEND = {"RECONCILER_FAILPOINTS": "before-send=stop"}
STOP_AFTER_ANSWER = {"RECONCILER_FAILPOINTS": "after-answer=stop"}
KILL_AFTER_ANSWER = {"RECONCILER_FAILPOINTS": "after-answer=kill"}


def stopped(process: subprocess.Popen[str]) -> bool:
    try:
        state = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state in ("T", "t")


def due_but_valid(fleet: Fleet) -> str:
    """Link ``api`` with an access token valid for 20 s more, so already due a refresh."""
    fleet.declare("api")
    fleet.write_origin()
    token = fleet.issue()
    now = datetime.now(UTC)
    fleet.put(replace(fleet.grant(token, expired=False), expires_at=now + timedelta(seconds=20)))
    fleet.clone()
    return token.access_token


def escrows(machine: Machine) -> list[Path]:
    folder = Path(machine.env["XDG_CACHE_HOME"]) / "oauth-reconciler" / "escrow"
    return sorted(folder.glob("*.age")) if folder.exists() else []


def test_a_holder_stopped_before_it_sends_sends_nothing_once_resumed(fleet: Fleet) -> None:
    old = due_but_valid(fleet)
    a, b, c = fleet.machines
    holder = a.start("token", "api", env=STOP_BEFORE_SEND)
    try:
        assert wait_for(lambda: stopped(holder), 30)
        other = b.run("token", "api")  # waits out the holder's lease, then sees its intent
        assert other.code == 0 and other.stdout.strip() == old
        assert fleet.refreshes() == 0
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    _, stderr = holder.communicate(timeout=60)
    assert holder.returncode == 1 and "nothing was sent" in stderr
    assert fleet.refreshes() == 0
    after = c.run("token", "api")
    assert after.code == 0 and after.stdout.strip() != old and fleet.accepted(after.stdout.strip())
    assert fleet.refreshes() == 1 and fleet.auth.reuse_detected == 0 and fleet.grant_alive()


def test_a_holder_stopped_after_the_answer_commits_late_and_its_commit_is_the_newest(
    fleet: Fleet,
) -> None:
    old = due_but_valid(fleet)
    a, b, c = fleet.machines
    holder = a.start("token", "api", env=STOP_AFTER_ANSWER)
    try:
        assert wait_for(lambda: stopped(holder), 30)
        assert fleet.refreshes() == 1
        other = b.run("token", "api")  # the refresh token is in flight: not presented
        assert other.code == 0 and other.stdout.strip() == old
        assert fleet.refreshes() == 1
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    stdout, stderr = holder.communicate(timeout=60)
    assert holder.returncode == 0, stderr
    new = stdout.strip()
    assert new != old and fleet.accepted(new)
    after = c.run("token", "api")
    assert after.code == 0 and after.stdout.strip() == new
    assert fleet.refreshes() == 1 and fleet.auth.reuse_detected == 0 and fleet.grant_alive()


def test_a_holder_killed_after_the_answer_leaves_an_escrow_its_next_run_commits(
    fleet: Fleet,
) -> None:
    old = due_but_valid(fleet)
    a, b, c = fleet.machines
    holder = a.start("token", "api", env=KILL_AFTER_ANSWER)
    holder.communicate(timeout=60)
    assert holder.returncode == -signal.SIGKILL
    assert fleet.refreshes() == 1 and len(escrows(a)) == 1
    other = b.run("token", "api")
    assert other.code == 0 and other.stdout.strip() == old
    again = a.run("token", "api")  # takes the lock once the dead holder's lease is gone
    assert again.code == 0, again
    new = again.stdout.strip()
    assert new != old and fleet.accepted(new) and escrows(a) == []
    assert c.run("token", "api").stdout.strip() == new
    assert fleet.refreshes() == 1 and fleet.auth.reuse_detected == 0 and fleet.grant_alive()


def test_an_escrow_older_than_the_state_is_discarded(fleet: Fleet) -> None:
    due_but_valid(fleet)
    a = fleet.machines[0]
    holder = a.start("token", "api", env=KILL_AFTER_ANSWER)
    holder.communicate(timeout=60)
    assert len(escrows(a)) == 1
    relinked = fleet.issue()  # the grant is linked again meanwhile (a newer state)
    started = time.monotonic()
    fleet.put(fleet.grant(relinked, expired=False))
    assert time.monotonic() - started < 30
    served = a.run("token", "api")
    assert served.code == 0 and served.stdout.strip() == relinked.access_token
    assert escrows(a) == []


def test_an_answer_the_engine_could_not_take_is_committed_by_the_next_run(
    tmp_path, auth_server, etcd_alone
) -> None:
    fleet = Fleet(tmp_path, auth_server, etcd_alone.endpoints, "acme/escrow")
    old = due_but_valid(fleet)
    a, b, _ = fleet.machines
    holder = a.start("token", "api", env=STOP_AFTER_ANSWER)
    assert wait_for(lambda: stopped(holder), 30)
    etcd_alone.stop()  # the answer is in; the engine goes away before the commit
    os.kill(holder.pid, signal.SIGCONT)
    _, stderr = holder.communicate(timeout=60)
    assert holder.returncode == 1 and "committed by its next run" in stderr
    assert len(escrows(a)) == 1 and fleet.refreshes() == 1
    etcd_alone.start(new=False)
    other = b.run("token", "api")  # its intent still stands: the old token, no request
    assert other.code == 0 and other.stdout.strip() == old and fleet.refreshes() == 1
    again = a.run("token", "api")
    assert again.code == 0 and again.stdout.strip() != old and fleet.accepted(again.stdout.strip())
    assert escrows(a) == [] and fleet.refreshes() == 1
    assert fleet.auth.reuse_detected == 0 and fleet.grant_alive()
