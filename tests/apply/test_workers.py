"""Forked refresh workers: every job reported once, from other processes, and failures loud.

Each case runs in a fresh interpreter: forking needs a process with no other thread, and the
test process has some (servers of other tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers fork on Linux only")


def run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_every_job_is_reported_once_from_worker_processes():
    done = run("""
        import os
        from reconciler.apply.workers import Forked

        parent = os.getpid()
        batch = Forked(40, lambda number: ("done", f"{number * number} {os.getpid()}"),
                       processes=3, threads=2)
        reports = list(batch.reports())
        batch.stop()
        assert sorted(n for n, _, _ in reports) == list(range(40)), reports
        assert all(int(m.split()[0]) == n * n and r == "done" for n, r, m in reports)
        pids = {int(m.split()[1]) for _, _, m in reports}
        assert parent not in pids and len(pids) == 3, pids
        print("ok")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        ('raise KeyError("no such grant")', "unexpected KeyError: 'no such grant'"),
        ("os._exit(3)", "a refresh worker process stopped with"),  # the worker dies
    ],
    ids=["job-raises", "worker-dies"],
)
def test_a_failing_job_fails_the_batch(failure, said):
    done = run(f"""
        import os
        from reconciler.apply.workers import Forked, WorkerError

        def carry_out(number):
            if number == 7:
                {failure}
            return "done", ""

        batch = Forked(20, carry_out, processes=2, threads=1)
        try:
            list(batch.reports())
        except WorkerError as error:
            print(error)
        finally:
            batch.stop()
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(said), done.stdout


def test_reports_without_blocking_returns_what_is_there():
    done = run("""
        import time
        from reconciler.apply.workers import Forked

        batch = Forked(4, lambda number: (time.sleep(0.5), ("done", ""))[1], processes=2)
        assert list(batch.reports(block=False)) == []  # nothing finished yet
        assert len(list(batch.reports())) == 4
        batch.stop()
        print("ok")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


def test_forking_only_for_many_jobs_and_without_other_threads():
    done = run("""
        import os, threading
        from reconciler.apply import workers

        cores = len(os.sched_getaffinity(0))
        print(workers.can_fork(workers.FORK_THRESHOLD - 1),
              workers.can_fork(workers.FORK_THRESHOLD) == (cores > 1))
        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        print(workers.can_fork(workers.FORK_THRESHOLD))
        stop.set()
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "False"]
