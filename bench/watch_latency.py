"""Edit-to-applied latency of `reconcile --watch`.

A watcher runs on a project with a few `file:` secrets. Each round rewrites one secret's source
file and times how long until the grant file is replaced on disk (its inode or mtime changes,
polled every 0.2 ms), then waits for the watcher to be idle (0.3-0.5 s) before the next round.

    python bench/watch_latency.py [--edits 20] [--secrets 5] [--step MS] [--debounce MS]

Without --step/--debounce the real console script runs (`reconcile --watch -o json`); with
them, the same loop runs with those watchfiles parameters (to compare settings).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, new_workspace, reconcile_command

sys.path.insert(0, str(REPO))

_DRIVER = """
import json, sys
from reconciler import watch
from reconciler.model import Browser
def report(event):
    sys.stdout.write(json.dumps(event.to_json()) + "\\n"); sys.stdout.flush()
watcher = watch.Watcher("providers.yaml", report, link=False,
                        step_ms=int(sys.argv[1]), debounce_ms=int(sys.argv[2]))
sys.exit(watcher.run())
"""


def _fingerprint(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns)


def _events(stream, sink: queue.Queue) -> None:
    for line in stream:
        with contextlib.suppress(ValueError):
            sink.put(json.loads(line))
    sink.put(None)


def _wait_for(sink: queue.Queue, kind: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {kind!r} event within {timeout} s")
        event = sink.get(timeout=left)
        if event is None:
            raise RuntimeError("the watcher exited")
        if event.get("event") == kind:
            return event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--secrets", type=int, default=5)
    parser.add_argument("--step", type=int, help="watchfiles step (ms)")
    parser.add_argument("--debounce", type=int, help="watchfiles debounce (ms)")
    args = parser.parse_args()

    root, env, recipient = new_workspace("watch-latency-")
    lines = ["version: 1", "store:", "  dir: secrets", f"  recipients: [{recipient}]", "secrets:"]
    for index in range(args.secrets):
        (root / f"s{index}.key").write_text(f"initial-value-{index}\n")
        lines += [f"  s{index}:", f"    value: file:s{index}.key"]
    (root / "providers.yaml").write_text("\n".join(lines) + "\n")
    source = root / "s0.key"
    grant = root / "secrets" / "s0.sops.yaml"

    if args.step is None and args.debounce is None:
        argv = [*reconcile_command(), "--watch", "-o", "json", "-q"]
        setting = "default (reconcile --watch)"
    else:
        from reconciler import watch

        step = args.step if args.step is not None else watch.STEP_MS
        debounce = args.debounce if args.debounce is not None else watch.DEBOUNCE_MS
        argv = [sys.executable, "-c", _DRIVER, str(step), str(debounce)]
        setting = f"step={step} ms, debounce={debounce} ms"
    process = subprocess.Popen(
        argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    sink: queue.Queue = queue.Queue()
    threading.Thread(target=_events, args=(process.stdout, sink), daemon=True).start()
    latencies: list[float] = []
    try:
        _wait_for(sink, "watching", 30)
        for round_ in range(args.edits):
            before = _fingerprint(grant)
            with open(source, "w") as handle:  # what an editor's plain save does
                handle.write(f"edited-value-{round_}\n")
            saved = time.perf_counter()
            deadline = saved + 10
            while _fingerprint(grant) == before:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"round {round_}: the grant file was not rewritten")
                time.sleep(0.0002)
            latencies.append((time.perf_counter() - saved) * 1000)
            _wait_for(sink, "idle", 10)  # the watcher is waiting again
            # Let the echo of its own write pass too, so that each edit meets an idle watcher
            # (a random gap, so that edits do not fall in step with the watcher's polling).
            time.sleep(random.uniform(0.3, 0.5))
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)

    in_order = list(latencies)
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    print(f"watch latency, file: secret saved -> grant file written ({setting})")
    print(f"  edits {len(latencies)}, secrets {args.secrets}")
    print(f"  median {statistics.median(latencies):7.1f} ms")
    print(f"  p95    {p95:7.1f} ms")
    print(f"  min    {latencies[0]:7.1f} ms   max {latencies[-1]:7.1f} ms")
    print(f"  watcher exit code after SIGTERM: {code}")
    if os.environ.get("BENCH_VERBOSE"):
        print("  in order:", " ".join(f"{x:.0f}" for x in in_order))


if __name__ == "__main__":
    main()
