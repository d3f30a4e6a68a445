"""N due grants of a provider that rotates refresh tokens, kept in etcd (`coordination:`),
refreshed by 3 machines at once: each machine is a folder with its own HOME, caches, age
identity and clone of the project, and runs `reconcile apply` as its own process; all three
start together. Measured: the wall time until the last one exits, the refresh requests the
token endpoint received (target: exactly N, one per grant, none rejected), and the peak RSS of
any reconcile process. Target: N = 1000 in ≤ 3 s (the median of the runs).

The token endpoint is refresh_scale.py's loopback server (rotating; a rotated token used
twice is refused). etcd is one local member (the Debian etcd binary). Each run has a project
and an etcd namespace of its own; its grants are put into etcd before the clock starts, as
`reconcile apply` attaches them. The machines are in service: before the clock starts, each
has run `reconcile status` on its clone once (as it would have since it pulled it), which
leaves what a machine keeps between commands (the config found valid, the grant files
verified). With ``--cold`` they have not: each apply is the machine's first command on its
clone.

    python bench/etcd_refresh_scale.py [--grants 1000] [--machines 3] [--runs 3] [--cold]

``BENCH_WRAP`` (a command prefix, split on spaces, with ``{machine}`` and ``{run}`` filled
in) runs each measured `reconcile apply` under another program, e.g. a sampling profiler.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
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


@dataclass
class Run:
    wall: float
    #: CPU seconds (user + sys) of the reconcile processes, and of etcd, during the run.
    cpu: float
    etcd_cpu: float
    calls: int
    rejected: int
    twice: int
    exit_codes: list[int]
    errors: list[str]


def seed(run: int, args, etcd: Etcd, endpoint: TokenEndpoint, base_url: str, machines) -> list:
    """A project with ``args.grants`` due grants attached to namespace ``bench/scale/<run>``,
    copied to every machine: [(clone, environment)]."""
    import yaml

    from reconciler.config import load
    from reconciler.custody.etcd import EtcdCustody
    from reconciler.model import Grant, Secret
    from reconciler.vault.sops.keys import load_identities

    names = [f"g{index:04d}" for index in range(args.grants)]
    origin = machines[0][0] / f"origin-{run}"
    origin.mkdir()
    providers = {}
    for name in names:
        endpoint.clients[name] = f"client-{name}"
        endpoint.initial[name] = f"rt-{name}-{run}-0-" + "r" * 24
        providers[name] = {
            "client_id": f"client-{name}",
            "client_secret": "env:BENCH_CLIENT_SECRET",
            "authorization_endpoint": f"{base_url}/authorize",
            "token_endpoint": f"{base_url}/token/{name}",
            "scopes": list(SCOPES),
        }
    endpoint.reset()
    document = {
        "version": 1,
        "store": {"dir": "secrets", "recipients": [m[2] for m in machines]},
        "providers": providers,
        "coordination": {"etcd": {"endpoints": [etcd.endpoint], "namespace": f"bench/scale/{run}"}},
    }
    (origin / "providers.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    env0 = {**machines[0][1], "BENCH_CLIENT_SECRET": CLIENT_SECRET}
    desired = load(origin / "providers.yaml", environ=env0, resolve_values=False)
    custody = EtcdCustody(desired, load_identities(env0, required=True), env0)
    now = datetime.now(UTC)
    for name in names:
        grant = Grant(
            name=name, kind="oauth2", flow="authorization_code", client_id=f"client-{name}",
            token_endpoint=f"{base_url}/token/{name}", scopes=SCOPES,
            granted_scopes=SCOPES, token_type="Bearer", obtained_at=now - timedelta(hours=2),
            expires_at=now - timedelta(hours=1), access_token=Secret(f"at-{name}-0"),
            refresh_token=Secret(endpoint.initial[name]),
        )  # fmt: skip
        with custody.single_flight(name) as held:
            custody.commit(held, grant, durable=True)
    clones = []
    for number, (root, env, _) in enumerate(machines):
        clone = root / f"project-{run}"
        shutil.copytree(origin, clone)
        wrap = [
            part.format(machine=number, run=run)
            for part in os.environ.get("BENCH_WRAP", "").split()
        ]
        clones.append((clone, {**env, "BENCH_CLIENT_SECRET": CLIENT_SECRET}, wrap))
    return clones


def _cpu_of(pid: int) -> float:
    """CPU seconds a running process has used (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(clones, endpoint: TokenEndpoint, etcd: Etcd) -> Run:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    etcd_before = _cpu_of(etcd.process.pid)
    start = time.perf_counter()
    runs = [
        subprocess.Popen(
            [*wrap, *reconcile_command(), "apply", "-q"], cwd=clone, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for clone, env, wrap in clones
    ]  # fmt: skip
    errors = [run.communicate()[1] for run in runs]
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Run(
        wall=wall,
        cpu=after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        etcd_cpu=_cpu_of(etcd.process.pid) - etcd_before,
        calls=sum(endpoint.calls.values()),
        rejected=len(endpoint.rejected),
        twice=sum(1 for count in endpoint.calls.values() if count > 1),
        exit_codes=[run.returncode for run in runs],
        errors=[error for run, error in zip(runs, errors, strict=True) if run.returncode != 0],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grants", type=int, default=1000)
    parser.add_argument("--machines", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="no `reconcile status` before")
    args = parser.parse_args()
    use_reconciler_of_command()
    import threading

    print(describe_command())
    print(f"python {sys.version.split()[0]}, {load_average()} at start")
    etcd = Etcd()
    endpoint = TokenEndpoint(rotate=True)
    server = _Server(endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    machines = [new_workspace(f"etcd-scale-m{i}-") for i in range(args.machines)]
    results: list[Run] = []
    for run in range(args.runs):
        started = time.perf_counter()
        clones = seed(run, args, etcd, endpoint, server.base_url, machines)
        print(f"run {run + 1}: {args.grants} grants put into etcd in "
              f"{time.perf_counter() - started:.1f} s; {load_average()}")  # fmt: skip
        if not args.cold:
            for clone, env, _ in clones:
                subprocess.run([*reconcile_command(), "status", "-q"], cwd=clone, env=env,
                               capture_output=True, check=True)  # fmt: skip
        if run == 0:
            clone, env, _ = clones[0]
            begun = time.perf_counter()
            subprocess.run([*reconcile_command(), "plan", "-q"], cwd=clone, env=env,
                           capture_output=True)  # fmt: skip
            print(f"  baseline: `reconcile plan` on one machine (reads every state and file): "
                  f"{time.perf_counter() - begun:.2f} s")  # fmt: skip
        result = measure(clones, endpoint, etcd)
        results.append(result)
        print(f"  wall {result.wall:.2f} s, CPU {result.cpu:.1f} s (etcd {result.etcd_cpu:.1f} s), "
              f"refresh requests {result.calls}, rejected "
              f"{result.rejected}, refreshed twice {result.twice}, exit codes "
              f"{result.exit_codes}")  # fmt: skip
        for error in result.errors:
            print("  stderr:", error.strip()[-800:])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = statistics.median(r.wall for r in results)
    exact = all(r.calls == args.grants and not r.rejected and not r.twice for r in results)
    state = "first command on their clones" if args.cold else "in service"
    print(f"\n{args.machines} machines ({state}) x `reconcile apply`, {args.grants} due rotating "
          f"grants, {args.runs} runs")  # fmt: skip
    print(f"  wall time until the last exits: median {wall:.2f} s "
          f"(runs {', '.join(f'{r.wall:.2f}' for r in results)}; target ≤ 3 s: "
          f"{'ok' if wall <= 3 else 'OVER'})")  # fmt: skip
    print(f"  refresh requests: {[r.calls for r in results]} (target exactly {args.grants} "
          f"each, none rejected, none twice: {'ok' if exact else 'WRONG'})")  # fmt: skip
    print(f"  exit codes: {[r.exit_codes for r in results]}")
    print(f"  peak RSS of any reconcile process: {usage.ru_maxrss / 1024:.0f} MiB")
    print(f"  CPU per run (user + sys), median: reconcile processes "
          f"{statistics.median(r.cpu for r in results):.1f} s, etcd "
          f"{statistics.median(r.etcd_cpu for r in results):.1f} s "
          f"(on {os.cpu_count()} cores)")  # fmt: skip
    print(f"  {load_average()} at the end")
    server.shutdown()


if __name__ == "__main__":
    main()
