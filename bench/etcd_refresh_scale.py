"""N due grants of a provider that rotates refresh tokens, kept in etcd (`coordination:`),
refreshed by 3 machines at once: each machine is a folder with its own HOME, caches, age
identity and clone of the project, and runs `reconcile apply` as its own process; all three
start together. Measured: the wall time until the last one exits, the refresh requests the
token endpoint received (target: exactly N, one per grant, none rejected), and the peak RSS of
any reconcile process. Target: N = 1000 in ≤ 3 s.

The token endpoint is refresh_scale.py's loopback server (rotating; a rotated token used
twice is refused). etcd is one local member (the Debian etcd binary). The grants are put
into etcd before the clock starts, as `reconcile apply` attaches them.

    python bench/etcd_refresh_scale.py [--grants 1000] [--machines 3]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    describe_command,
    load_average,
    new_workspace,
    reconcile_command,
    use_reconciler_of_command,
)
from _etcd import Etcd
from refresh_scale import CLIENT_SECRET, SCOPES, TokenEndpoint, _Server


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grants", type=int, default=1000)
    parser.add_argument("--machines", type=int, default=3)
    args = parser.parse_args()
    use_reconciler_of_command()
    import threading

    import yaml

    from reconciler.config import load
    from reconciler.custody.etcd import EtcdCustody
    from reconciler.model import Grant, Secret
    from reconciler.vault.sops.keys import load_identities

    print(describe_command())
    print(f"python {sys.version.split()[0]}, {load_average()} at start")
    etcd = Etcd()
    endpoint = TokenEndpoint(rotate=True)
    server = _Server(endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    names = [f"g{index:04d}" for index in range(args.grants)]
    machines = [new_workspace(f"etcd-scale-m{i}-") for i in range(args.machines)]
    origin = machines[0][0] / "origin"
    origin.mkdir()
    providers = {}
    for name in names:
        endpoint.clients[name] = f"client-{name}"
        endpoint.initial[name] = f"rt-{name}-0-" + "r" * 24
        providers[name] = {
            "client_id": f"client-{name}",
            "client_secret": "env:BENCH_CLIENT_SECRET",
            "authorization_endpoint": f"{server.base_url}/authorize",
            "token_endpoint": f"{server.base_url}/token/{name}",
            "scopes": list(SCOPES),
        }
    endpoint.reset()
    document = {
        "version": 1,
        "store": {"dir": "secrets", "recipients": [m[2] for m in machines]},
        "providers": providers,
        "coordination": {"etcd": {"endpoints": [etcd.endpoint], "namespace": "bench/scale"}},
    }
    (origin / "providers.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    started = time.perf_counter()
    env0 = {**machines[0][1], "BENCH_CLIENT_SECRET": CLIENT_SECRET}
    desired = load(origin / "providers.yaml", environ=env0, resolve_values=False)
    custody = EtcdCustody(desired, load_identities(env0, required=True), env0)
    now = datetime.now(UTC)
    for name in names:
        grant = Grant(
            name=name, kind="oauth2", flow="authorization_code", client_id=f"client-{name}",
            token_endpoint=f"{server.base_url}/token/{name}", scopes=SCOPES,
            granted_scopes=SCOPES, token_type="Bearer", obtained_at=now - timedelta(hours=2),
            expires_at=now - timedelta(hours=1), access_token=Secret(f"at-{name}-0"),
            refresh_token=Secret(endpoint.initial[name]),
        )  # fmt: skip
        with custody.single_flight(name) as held:
            custody.commit(held, grant, durable=True)
    clones = []
    for root, env, _ in machines:
        clone = root / "project"
        shutil.copytree(origin, clone)
        clones.append((clone, {**env, "BENCH_CLIENT_SECRET": CLIENT_SECRET}))
    print(f"setup: {args.grants} grants put into etcd in {time.perf_counter() - started:.1f} s")
    clone, env = clones[0]
    begun = time.perf_counter()
    subprocess.run([*reconcile_command(), "plan", "-q"], cwd=clone, env=env, capture_output=True)
    print(f"baseline: `reconcile plan` on one machine (reads every state and file): "
          f"{time.perf_counter() - begun:.2f} s")  # fmt: skip

    start = time.perf_counter()
    runs = [
        subprocess.Popen(
            [*reconcile_command(), "apply", "-q"], cwd=clone, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for clone, env in clones
    ]  # fmt: skip
    errors = [run.communicate()[1] for run in runs]
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = usage.ru_maxrss / 1024
    calls = sum(endpoint.calls.values())
    print(f"\n{args.machines} machines x `reconcile apply`, {args.grants} due rotating grants")
    print(f"  wall time until the last exits: {wall:.2f} s (target ≤ 3 s: "
          f"{'ok' if wall <= 3 else 'OVER'})")  # fmt: skip
    print(
        f"  refresh requests: {calls} (target exactly {args.grants}: "
        f"{'ok' if calls == args.grants else 'WRONG'}); rejected: {len(endpoint.rejected)}"
    )
    print(f"  grants refreshed more than once: {sum(1 for c in endpoint.calls.values() if c > 1)}")
    print(f"  exit codes: {[run.returncode for run in runs]}")
    print(f"  peak RSS of any reconcile process: {peak:.0f} MiB")
    print(f"  CPU of the reconcile processes (user + sys, the plan baseline included): "
          f"{usage.ru_utime + usage.ru_stime:.1f} s")  # fmt: skip
    print(f"  {load_average()} at the end")
    for run, error in zip(runs, errors, strict=True):
        if run.returncode != 0:
            print("  stderr:", error.strip()[-800:])
    server.shutdown()


if __name__ == "__main__":
    main()
