"""Cold `reconcile token NAME` on a grant attached to etcd (`coordination:`), its access token
valid and in this machine's token cache, beside the sops Go binary's `sops -d --extract
'["access_token"]'` on a grant file of the same shape that holds its token (target: ≤ 1.5x).
A cached read must not contact etcd: once the cache is seeded (one `reconcile token`, which
reads the state from etcd), etcd is stopped and a listener that counts connections takes its
port for the timed runs (target: 0 connections).

    python bench/etcd_token_read.py [--runs 20]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    describe_command,
    load_average,
    median_ms,
    new_workspace,
    reconcile_command,
    sops_go_binary,
    time_interleaved,
    use_reconciler_of_command,
)
from _etcd import Etcd

ACCESS_TOKEN = "bench-access-token-" + "x" * 40
REFRESH_TOKEN = "bench-refresh-token-" + "y" * 40


class Counter:
    """Listens where etcd listened and counts the connections made to it."""

    def __init__(self, port: int) -> None:
        self.count = 0
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", port))
        self.socket.listen(16)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            connection, _ = self.socket.accept()
            self.count += 1
            connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    use_reconciler_of_command()
    from reconciler.config import load
    from reconciler.custody.etcd import EtcdCustody
    from reconciler.model import Grant, Secret
    from reconciler.vault.sops.keys import load_identities
    from reconciler.vault.store import write_grant

    print(describe_command())
    print(f"python {sys.version.split()[0]}, {load_average()} at start")
    sops = sops_go_binary()
    etcd = Etcd()
    root, env, recipient = new_workspace("etcd-token-read-")
    endpoint = "https://auth.example.com"  # never contacted: nothing is due
    (root / "providers.yaml").write_text(
        "version: 1\nstore:\n  dir: secrets\n"
        f"  recipients: [{recipient}]\n"
        "providers:\n  api:\n"
        f"    authorization_endpoint: {endpoint}/authorize\n"
        f"    token_endpoint: {endpoint}/token\n"
        "    client_id: bench\n    scopes: [read, write]\n"
        f"coordination:\n  etcd:\n    endpoints: [{etcd.endpoint}]\n    namespace: bench/read\n"
    )
    now = datetime.now(UTC).replace(microsecond=0)
    grant = Grant(
        name="api", kind="oauth2", flow="authorization_code", client_id="bench",
        token_endpoint=f"{endpoint}/token", scopes=("read", "write"),
        granted_scopes=("read", "write"), token_type="Bearer",
        expires_at=now + timedelta(days=1), obtained_at=now,
        access_token=Secret(ACCESS_TOKEN), refresh_token=Secret(REFRESH_TOKEN),
    )  # fmt: skip
    desired = load(root / "providers.yaml", environ=env, resolve_values=False)
    custody = EtcdCustody(desired, load_identities(env, required=True), env)
    with custody.single_flight("api") as held:
        custody.commit(held, grant, durable=True)
    baseline = root / "baseline" / "api.sops.yaml"
    write_grant(baseline, grant, [recipient])
    reconcile = reconcile_command()
    seeded = subprocess.run(
        [*reconcile, "token", "api"], env=env, cwd=root, capture_output=True, text=True
    )
    if seeded.returncode != 0 or seeded.stdout.strip() != ACCESS_TOKEN:
        sys.exit(f"the seeding read failed: {seeded.stderr.strip()}")
    etcd.stop()
    counter = Counter(etcd.port)

    commands = {"reconcile token (attached grant, cached token)": [*reconcile, "token", "api"]}
    if sops:
        commands["sops -d --extract '[\"access_token\"]' (Go binary)"] = [
            sops, "-d", "--extract", '["access_token"]', str(baseline)
        ]  # fmt: skip
    times = time_interleaved(commands, env=env, cwd=root, runs=args.runs)
    print(f"\n{args.runs} runs each, round-robin")
    values = []
    for label, runs in times.items():
        values.append(median_ms(runs))
        print(f"  {label:<52} median {values[-1]:7.1f} ms  (min {min(runs) * 1000:.1f})")
    if len(values) == 2:
        ratio = values[0] / values[1]
        verdict = "ok" if ratio <= 1.5 else "OVER"
        print(f"  ratio reconcile/sops {ratio:.2f}x (target ≤ 1.5x: {verdict})")
    verdict = "ok" if counter.count == 0 else "WRONG"
    print(f"  connections to etcd's port during the cached reads: {counter.count} "
          f"(target 0: {verdict})")  # fmt: skip
    print(f"  {load_average()} at the end")


if __name__ == "__main__":
    main()
