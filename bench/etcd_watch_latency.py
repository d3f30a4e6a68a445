"""Commit on one machine → another machine's long-running process holds the new token: the
time from a commit starting on machine A (its compare-and-swap and its own token cache
included) to machine B's follower (``operations.follow``, what
``runtime`` runs in a thread with `coordination:` declared) having the new token in memory.
Both are separate processes with their own HOME, caches and identity, on one local etcd
member. Target: median ≤ 50 ms.

    python bench/etcd_watch_latency.py [--commits 30]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, new_workspace, use_reconciler_of_command
from _etcd import Etcd

FOLLOWER = r"""
import sys, threading, time
from pathlib import Path
from reconciler import operations
print("ready", flush=True)
for name, issued in operations.follow(Path(sys.argv[1]), threading.Event()):
    if issued is not None:
        print(f"{time.time():.6f} {issued.secret.reveal()}", flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commits", type=int, default=30)
    args = parser.parse_args()
    use_reconciler_of_command()
    from reconciler.config import load
    from reconciler.custody.etcd import EtcdCustody
    from reconciler.model import Grant, Secret
    from reconciler.vault.sops.keys import load_identities

    print(f"python {sys.version.split()[0]}, {load_average()} at start")
    etcd = Etcd()
    a_root, a_env, a_recipient = new_workspace("etcd-watch-a-")
    b_root, b_env, b_recipient = new_workspace("etcd-watch-b-")
    endpoint = "https://auth.example.com"
    text = (
        "version: 1\nstore:\n  dir: secrets\n"
        f"  recipients: [{a_recipient}, {b_recipient}]\n"
        "providers:\n  api:\n"
        f"    authorization_endpoint: {endpoint}/authorize\n"
        f"    token_endpoint: {endpoint}/token\n"
        "    client_id: bench\n    scopes: [read, write]\n"
        f"coordination:\n  etcd:\n    endpoints: [{etcd.endpoint}]\n    namespace: bench/watch\n"
    )
    (a_root / "providers.yaml").write_text(text)
    desired = load(a_root / "providers.yaml", environ=a_env, resolve_values=False)
    custody = EtcdCustody(desired, load_identities(a_env, required=True), a_env)
    now = datetime.now(UTC).replace(microsecond=0)

    def grant(serial: int) -> Grant:
        return Grant(
            name="api", kind="oauth2", flow="authorization_code", client_id="bench",
            token_endpoint=f"{endpoint}/token", scopes=("read", "write"),
            granted_scopes=("read", "write"), token_type="Bearer",
            expires_at=now + timedelta(days=1), obtained_at=now + timedelta(seconds=serial),
            access_token=Secret(f"at-{serial}-" + "x" * 30), refresh_token=Secret("rt-bench"),
        )  # fmt: skip

    with custody.single_flight("api") as held:
        custody.commit(held, grant(0), durable=True)
    shutil.copytree(a_root / "secrets", b_root / "secrets")
    (b_root / "providers.yaml").write_text(text)
    follower = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, str(b_root / "providers.yaml")],
        env=b_env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert follower.stdout is not None
    assert follower.stdout.readline().strip() == "ready"
    time.sleep(1.0)  # the watch is in place
    latencies = []
    for serial in range(1, args.commits + 1):
        with custody.single_flight("api") as held:
            committed = time.time()  # from the commit's start: the txn and the local cache
            custody.commit(held, grant(serial), durable=False)
        expected = f"at-{serial}-"
        while True:
            line = follower.stdout.readline()
            stamp, _, token = line.strip().partition(" ")
            if token.startswith(expected):
                latencies.append((float(stamp) - committed) * 1000)
                break
        time.sleep(0.05)
    follower.kill()
    median = statistics.median(latencies)
    print(f"\ncommit on machine A → machine B's follower holds the token ({args.commits} commits)")
    print(f"  median {median:.1f} ms, p90 {sorted(latencies)[int(len(latencies) * 0.9) - 1]:.1f} "
          f"ms, max {max(latencies):.1f} ms (target median ≤ 50 ms: "
          f"{'ok' if median <= 50 else 'OVER'})")  # fmt: skip
    print(f"  {load_average()} at the end")


if __name__ == "__main__":
    main()
