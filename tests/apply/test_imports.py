"""The etcd backend loads only where `coordination:` is in play: a refresh on the grant files
(`reconcile token` at expiry, `apply` without coordination) imports none of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_refresh_stack_loads_no_etcd_module():
    code = (
        "import sys\n"
        "import reconciler.apply, reconciler.operations.refreshes\n"
        "print(sorted(m for m in sys.modules if m.startswith('reconciler.custody.etcd')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert done.stdout.strip() == "[]"
