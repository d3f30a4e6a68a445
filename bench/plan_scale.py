"""`reconcile plan` with nothing to do, for N applied secrets, beside a floor measured in the
same run: a Python process that only YAML-parses the same files and decrypts each value
with pyrage + AESGCM.

    python bench/plan_scale.py [--sizes 20,1000,10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_ms, new_workspace, reconcile_command, time_process

FLOOR = r"""
import base64, re, sys
from pathlib import Path
import pyrage, yaml
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
identity = pyrage.x25519.Identity.from_str(
    [l for l in Path(sys.argv[2]).read_text().splitlines() if l.startswith("AGE-SECRET-KEY-")][0])
enc = re.compile(r"^ENC\[AES256_GCM,data:(.*),iv:(.*),tag:(.*),type:(.*)\]$")
for path in sorted(Path(sys.argv[1]).glob("*.sops.yaml")):
    doc = yaml.load(path.read_bytes(), Loader=Loader)
    key = pyrage.decrypt(doc["sops"]["age"][0]["enc"].encode(), [identity])
    data, iv, tag, _ = enc.match(doc["value"]).groups()
    AESGCM(key).decrypt(base64.b64decode(iv), base64.b64decode(data) + base64.b64decode(tag),
                        b"value:")
"""


def setup(count: int) -> tuple[Path, dict[str, str]]:
    root, env, recipient = new_workspace(f"plan-scale-{count}-")
    lines = ["version: 1", "store:", "  dir: secrets", f"  recipients: [{recipient}]", "secrets:"]
    for index in range(count):
        lines += [f"  key-{index:05d}:", "    value: env:BENCH_SECRET"]
    (root / "providers.yaml").write_text("\n".join(lines) + "\n")
    env["BENCH_SECRET"] = "bench-value-0123456789abcdef"
    subprocess.run([*reconcile_command(), "apply", "-q"], env=env, cwd=root, check=True)
    return root, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="20,1000,10000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'N':>6}  {'plan ms':>9}  {'floor ms':>9}  {'ratio':>6}  {'plan µs/grant':>13}")
    for count in [int(n) for n in args.sizes.split(",")]:
        root, env = setup(count)
        runs = args.runs if count < 10000 else max(3, args.runs // 2)
        plan = median_ms(
            time_process(
                [*reconcile_command(), "plan", "--exit-code"], env=env, cwd=root, runs=runs
            )
        )
        floor = median_ms(
            time_process(
                [sys.executable, "-c", FLOOR, str(root / "secrets"), env["SOPS_AGE_KEY_FILE"]],
                env=env, cwd=root, runs=runs,
            )
        )  # fmt: skip
        print(f"{count:>6}  {plan:>9.1f}  {floor:>9.1f}  {plan / floor:>6.2f}  "
              f"{plan * 1000 / count:>13.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
