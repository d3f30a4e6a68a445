"""One `reconcile --watch` among all machines is elected to refresh ahead of expiry (SPEC §7);
the others stand by (refreshing on demand only), and one takes over when the elected one
dies."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading

from .support import Fleet, wait_for


class Events:
    """The JSON events a `reconcile --watch -o json` prints, read as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.seen: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.seen.put(json.loads(line))

    def wait(self, kind: str, timeout: float = 30) -> dict:
        while True:
            event = self.seen.get(timeout=timeout)
            if event["event"] == kind:
                return event

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def test_one_watcher_refreshes_ahead_and_another_takes_over_when_it_dies(fleet: Fleet) -> None:
    fleet.link(expired=True)
    first = Events(fleet.machines[0].start("--watch", "-o", "json", "--no-link"))
    second = None
    try:
        first.wait("elected")
        assert wait_for(lambda: fleet.refreshes() == 1, 30)
        second = Events(fleet.machines[1].start("--watch", "-o", "json", "--no-link"))
        second.wait("standby")
        assert fleet.refreshes() == 1
        first.stop()  # its lease runs out: the other campaigns again within a lease
        second.wait("elected", timeout=30)
        assert fleet.refreshes() == 1 and fleet.auth.reuse_detected == 0
    finally:
        first.stop()
        if second is not None:
            second.stop()
