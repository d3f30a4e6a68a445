"""Many refreshes at once, in forked worker processes.

A refresh spends its CPU in Python (the HTTP client, age, the SOPS encoding), and one process
runs Python on one core at a time (the GIL). When many refreshes are due, ``apply`` forks a few
workers instead: each inherits the loaded config, identities and grants, carries out its share
on a few threads of its own (to overlap network and fsync waits) and reports back. Nothing is
sent to a worker (its share of job numbers is fixed when it is forked) and only (job number,
result, message) comes back: nothing secret crosses a pipe. Every grant keeps its file lock,
so refreshes stay single-flight across all processes.

Forking is safe only in a process with no other thread (a lock another thread holds would stay
held in the child for ever) and on Linux (macOS system libraries do not survive a fork);
elsewhere, and for few refreshes, ``apply`` keeps to threads.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, cast

#: Below this many refreshes, forking costs more than it brings.
FORK_THRESHOLD = 64
#: Worker processes at most, and threads in each.
MAX_PROCESSES = 4
THREADS_PER_PROCESS = 4

#: ``(job number, result, message)``; result "crash" carries an unexpected error's summary.
Report = tuple[int, str, str]

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    #: The reading end of a worker's pipe.
    Reader = Connection[object, Report]


class WorkerError(RuntimeError):
    """A worker process died, or a job raised an unexpected error."""


def can_fork(jobs: int) -> bool:
    return (
        jobs >= FORK_THRESHOLD
        and sys.platform == "linux"
        and threading.active_count() == 1
        and _cores() > 1
    )


def _cores() -> int:
    return len(os.sched_getaffinity(0))


class Forked:
    """Jobs ``0 .. count - 1``, run as ``carry_out(number)`` in forked workers, which start
    at once. ``carry_out`` returns ``(result, message)``; both must be safe to show."""

    def __init__(
        self,
        count: int,
        carry_out: Callable[[int], tuple[str, str]],
        *,
        processes: int | None = None,
        threads: int = THREADS_PER_PROCESS,
    ) -> None:
        processes = max(1, min(processes or min(_cores(), MAX_PROCESSES), count))
        context = multiprocessing.get_context("fork")
        self._stop = context.Event()
        self._expected: dict[Reader, int] = {}  # reader -> jobs still to report
        self._processes = []
        # Anything buffered now would be written again by every child.
        sys.stdout.flush()
        sys.stderr.flush()
        for number in range(processes):
            reader, writer = context.Pipe(duplex=False)
            share = range(number, count, processes)
            process = context.Process(
                target=_work,
                args=(share, carry_out, writer, self._stop, threads, os.getpid()),
                name=f"reconcile-refresh-{number}",
            )
            process.start()
            writer.close()  # the child's copy is the only writer: EOF when it is done
            self._expected[reader] = len(share)
            self._processes.append(process)

    def reports(self, *, block: bool = True) -> Iterator[Report]:
        """Reports as they arrive; with ``block=False`` only those already there. Raises
        WorkerError for a crashed job or a worker that died with jobs unreported."""
        while self._expected:
            # wait() hands back the objects it was given: here, only readers.
            ready = cast("list[Reader]", wait(list(self._expected), timeout=None if block else 0))
            if not ready:
                return
            for reader in ready:
                try:
                    number, result, message = reader.recv()
                except EOFError:
                    self._finished(reader)
                    continue
                self._expected[reader] -= 1
                if result == "crash":
                    raise WorkerError(message)
                yield number, result, message

    def _finished(self, reader: Reader) -> None:
        missing = self._expected.pop(reader)
        reader.close()
        if missing and not self._stop.is_set():
            self._stop.set()
            raise WorkerError(
                f"a refresh worker process stopped with {missing} refresh(es) not carried out; "
                "run `reconcile apply` again"
            )

    def stop(self) -> None:
        """Start no further job. Jobs under way finish (a rotated refresh token still reaches
        its file); the workers then exit, and the interpreter waits for them at exit."""
        self._stop.set()
        for reader in self._expected:
            reader.close()
        self._expected.clear()


def _work(share: range, carry_out, writer, stop, threads: int, parent: int) -> None:
    """A worker process: its share of the jobs on ``threads`` threads."""
    # Ctrl-C is the parent's to handle: it stops handing out work, and jobs under way finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sending = threading.Lock()

    def job(number: int) -> None:
        if stop.is_set() or os.getppid() != parent:
            return
        try:
            result, message = carry_out(number)
        except BaseException as error:  # reported, so that the parent fails as threads would
            result, message = "crash", f"unexpected {type(error).__name__}: {error}"
        with sending:
            try:
                writer.send((number, result, message))
            except OSError:  # the parent is gone or stopped listening
                stop.set()

    with ThreadPoolExecutor(threads, thread_name_prefix="reconcile-refresh") as pool:
        for _ in pool.map(job, share):
            pass
    notify = sys.modules.get("reconciler.apply.notify")
    if notify is not None:
        notify.flush()  # a worker leaves through os._exit: atexit would not run
    writer.close()
