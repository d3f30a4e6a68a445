"""`apply` over shared custody claims a batch of grants' locks in one transaction and never
waits for a lock another process holds (``custody.etcd_batch``, ``apply.batched``): machines
applying at once share the grants out, and each grant is still refreshed exactly once."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from reconciler.custody.etcd import _live_logs
from reconciler.custody.etcd_batch import Batched, claim, drop_intents, release

from .support import Fleet, Machine

GRANTS = 40
KILL_AFTER_ANSWER = {"RECONCILER_FAILPOINTS": "after-answer=kill"}


def _due_grants(fleet: Fleet, count: int) -> list[str]:
    names = [f"g{index:02d}" for index in range(count)]
    fleet.link_all(names)
    return names


def _outcomes(machine: Machine) -> dict[str, dict]:
    ran = machine.run("apply", "-o", "json", timeout=120)
    return {o["name"]: o for o in json.loads(ran.stdout)["outcomes"]}


def _raft_index(custody) -> int:
    """The index of etcd's last log entry: every write, even a refused one, adds one."""
    return int(custody.gateway.call("/v3/maintenance/status", {})["raftIndex"])


def _escrows(machine: Machine) -> list[Path]:
    folder = Path(machine.env["XDG_CACHE_HOME"]) / "oauth-reconciler" / "escrow"
    return sorted(folder.glob("*.age")) if folder.exists() else []


def test_3_concurrent_applies_over_n_due_grants_make_exactly_n_refreshes(fleet: Fleet) -> None:
    names = _due_grants(fleet, GRANTS)
    runs = [m.start("apply", "-o", "json") for m in fleet.machines]
    results = [run.communicate(timeout=180) for run in runs]
    for run, (stdout, stderr) in zip(runs, results, strict=True):
        assert run.returncode == 0, stderr
        for outcome in json.loads(stdout)["outcomes"]:
            assert outcome["result"] == "done", outcome
            assert outcome["message"].startswith("refreshed"), outcome
    assert fleet.refreshes() == GRANTS
    assert fleet.auth.reuse_detected == 0
    assert all(fleet.grant_alive(name) for name in names)


def test_a_claim_leaves_locked_grants_to_their_holder_and_sees_changed_ones(
    fleet: Fleet,
) -> None:
    names = _due_grants(fleet, 4)
    a, b, _ = fleet.machines
    first, second = a.custody(), b.custody()
    _, known = second.scan()
    taken = claim(first, names[:2], {})
    assert sorted(taken.held) == names[:2]
    try:
        other = claim(second, names, known)
        assert sorted(other.locked) == names[:2]  # not waited for
        assert sorted(other.held) == names[2:]
        for name in other.held:
            release(second, name)
        # The first commits one of its grants: it is now changed since `known` was read.
        held = taken.held[names[0]]
        assert held.grant is not None
        first.commit(held, held.grant, durable=True)
        again = claim(second, names[:1], known)
        assert list(again.changed) == names[:1] and not again.held
    finally:
        for name in names[:2]:
            release(first, name)


def test_a_claim_that_looks_first_writes_nothing_for_grants_refreshed_elsewhere(
    fleet: Fleet,
) -> None:
    names = _due_grants(fleet, 3)
    a, b, _ = fleet.machines
    first, second = a.custody(), b.custody()
    _, known = second.scan()
    taken = claim(first, names[:1], {})
    held = taken.held[names[0]]
    assert held.grant is not None
    first.commit(held, held.grant, durable=True)
    release(first, names[0])
    entries = _raft_index(second)
    looked = claim(second, names[:1], known, look_first=True)
    assert list(looked.changed) == names[:1] and not looked.held and not looked.locked
    # Read, not claimed: nothing went through etcd's log (a refused claim does).
    assert _raft_index(second) == entries
    mixed = claim(second, names, known, look_first=True)
    assert list(mixed.changed) == names[:1] and sorted(mixed.held) == names[1:]
    for name in mixed.held:
        release(second, name)


def test_a_batch_commits_each_grant_by_its_own_compare_and_swap(fleet: Fleet) -> None:
    names = _due_grants(fleet, 3)
    a, b, _ = fleet.machines
    custody, rival = a.custody(), b.custody()
    taken = claim(custody, names, {})
    batch = Batched(custody)
    batch.record_intents(list(taken.held.values()))
    for held in taken.held.values():
        assert held.grant is not None
        batch.commit(held, held.grant, durable=True)
    # Meanwhile another writer changes one state (as a stopped holder's rival would).
    state = rival.gateway.get(rival.key("grants", names[1]))
    assert state is not None
    rival.gateway.put(state.key, state.value)
    refused = batch.flush()
    assert list(refused) == [names[1]]
    for name in names:
        release(custody, name)
    assert rival.read(names[0]).grant.generation == 2  # type: ignore[union-attr]
    assert rival.read(names[2]).grant.generation == 2  # type: ignore[union-attr]
    # Every intent went with its commit, or was removed as never sent.
    assert rival.gateway.range(rival.key("inflight"), prefix=True)[1] == []


def test_an_apply_killed_after_an_answer_leaves_its_escrow_to_its_next_run(fleet: Fleet) -> None:
    names = _due_grants(fleet, 3)
    a = fleet.machines[0]
    killed = a.start("apply", env=KILL_AFTER_ANSWER)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert fleet.refreshes() == 1 and len(_escrows(a)) == 1
    # Once the dead run's locks have expired, the next run commits the answer it escrowed;
    # the grants whose requests were never sent keep their intent until it expires.
    outcomes = _outcomes(a)
    assert _escrows(a) == []
    assert fleet.refreshes() == 1 and fleet.auth.reuse_detected == 0
    committed = [n for n in names if outcomes[n]["result"] == "done"]
    assert len(committed) == 1 and fleet.grant_alive(committed[0]), outcomes
    waiting = [outcomes[n]["message"] for n in names if n not in committed]
    assert all("has not been committed" in message for message in waiting), outcomes


def test_a_log_another_process_is_writing_is_left_alone_until_it_is_done(fleet: Fleet) -> None:
    names = _due_grants(fleet, 2)
    custody = fleet.machines[0].custody()
    taken = claim(custody, names, {})
    batch = Batched(custody)
    held = taken.held[names[0]]
    assert held.grant is not None
    batch._write_escrow(held, held.grant)
    log = batch._log
    assert log is not None
    # Seen as another process sees it: its writer holds it locked, so it is not read (a
    # batch under way has nothing left over).
    _live_logs.discard(log)
    reader = fleet.machines[0].custody()
    assert reader._read_escrow(names[0]) is None
    # Its writer gone without committing (the lock goes with it): the answer is found.
    batch._close_log(settled=False)
    found = reader._read_escrow(names[0])
    assert found is not None and found[1].refresh_token == held.grant.refresh_token
    for name in names:
        release(custody, name)


def test_a_claim_records_intents_but_never_over_another_request(fleet: Fleet) -> None:
    names = _due_grants(fleet, 2)
    a, b, _ = fleet.machines
    custody, rival = a.custody(), b.custody()
    _, known = custody.scan()
    # Another process's request for the first grant is in flight: its intent is there.
    other = rival.key("inflight", names[0])
    rival.gateway.put(other, b"another holder's intent")
    taken = claim(custody, names, known, presenting=set(names))
    assert list(taken.changed) == [names[0]] and list(taken.held) == [names[1]]
    assert list(taken.intended) == [names[1]]
    assert rival.gateway.get(other).value == b"another holder's intent"  # type: ignore[union-attr]
    mine = rival.gateway.get(rival.key("inflight", names[1]))
    assert mine is not None and mine.value == taken.intended[names[1]] and mine.lease
    # Not sent after all: dropped with the lock.
    drop_intents(custody, {names[1]})
    release(custody, names[1])
    assert rival.gateway.get(rival.key("inflight", names[1])) is None
    assert rival.gateway.get(rival.key("locks", names[1])) is None
