"""What the CLI tests share: a project with two static secrets (see conftest.py's ``ready``)."""

from __future__ import annotations

OPENAI = "sk-test-9f8e7d6c5b4a39281706"
LOCAL = "local-key-0a1b2c3d4e5f60718293"


def config(recipients: list[str], *, extra: str = "") -> str:
    return (
        "version: 1\n"
        "store:\n"
        "  dir: secrets\n"
        f"  recipients: [{', '.join(recipients)}]\n"
        "secrets:\n"
        "  openai:\n"
        "    value: env:OPENAI_API_KEY\n"
        "  local:\n"
        "    value: file:local.key\n" + extra
    )


def on_a_terminal(project, *args: str, typed: str) -> tuple[int, str]:
    """Run `reconcile ARGS` with a terminal on stdin, where ``typed`` is typed; the exit code
    and stderr (stdout is captured too, and dropped)."""
    import os
    import pty
    import subprocess
    import sys

    controller, terminal = pty.openpty()
    try:
        os.write(controller, typed.encode())
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            cwd=project.root,
            env=project.env,
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    return done.returncode, done.stderr
