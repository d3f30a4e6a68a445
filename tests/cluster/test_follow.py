"""Long-running faces follow the engine (SPEC §7): a process using ``runtime`` keeps the
current access token in memory, and a token another machine commits replaces it there at once
(without waiting for the kept one's refresh deadline)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

from reconciler.model import Secret

from .support import Fleet, wait_for

HOLDER = r"""
import sys
from reconciler import runtime
from reconciler.runtime import memory
print(runtime.token("api"), flush=True)
for line in sys.stdin:
    key = (memory.resolve_config(None), "api")
    kept = memory.peek(key)
    print(kept.reveal() if kept is not None else "-", flush=True)
"""


def test_a_runtime_process_holds_the_token_another_machine_committed(fleet: Fleet) -> None:
    token = fleet.link(expired=False)
    machine = fleet.machines[1]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        cwd=machine.root,
        env=machine.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == token.access_token
        newer = fleet.issue()
        fleet.put(
            replace(fleet.grant(newer, expired=False), access_token=Secret(newer.access_token))
        )

        def kept() -> str:
            holder.stdin.write("?\n")
            holder.stdin.flush()
            return holder.stdout.readline().strip()

        assert wait_for(lambda: kept() == newer.access_token, 10, 0.05)
    finally:
        holder.kill()
        holder.wait()
