"""`reconcile exec --env VAR=NAME -- CMD ARGS`: the credential is in the command's environment
and nowhere else; errors stop everything before the command runs."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler import runtime
from reconciler.vault import store

from .support import STATIC_VALUE

REPO = Path(__file__).resolve().parents[2]

#: The child: writes the SHA-256 of two variables, says it is ready, waits for "go", exits 7.
CHILD = """
import hashlib, os, sys, time
out, ready, go = sys.argv[1:4]
digest = lambda name: hashlib.sha256(os.environ.get(name, "").encode()).hexdigest()
open(out, "w").write(digest("STATIC_KEY") + " " + digest("API_TOKEN") + "\\n")
open(ready, "w").close()
deadline = time.time() + 20
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.02)
sys.exit(7)
"""


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def environment() -> dict[str, str]:
    # The test's (isolated) environment, which holds neither credential.
    return {**os.environ, "PYTHONPATH": str(REPO)}


def reconcile(project, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "-f", str(project.config), *args],
        cwd=project.root,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.time() + 30
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"exited early: {process.communicate()}")
        assert time.time() < deadline, "the child never got ready"
        time.sleep(0.02)


def test_the_command_sees_the_credentials_and_nothing_else_does(project, tmp_path, monkeypatch):
    monkeypatch.delenv("STATIC_VALUE")  # only needed to write the secret (it is written)
    api_token = runtime.token("api", project.config)
    values = [STATIC_VALUE, api_token]
    out, ready, go = tmp_path / "out", tmp_path / "ready", tmp_path / "go"
    marker = "exec-test-child-marker"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "reconciler", "-f", str(project.config), "exec"),
            *("--env", "STATIC_KEY=static", "--env", "API_TOKEN=api", "--"),
            *(sys.executable, "-c", CHILD, str(out), str(ready), str(go), marker),
        ],
        cwd=project.root,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(ready, process)
        listings = [
            subprocess.run(["ps", *flags], capture_output=True, text=True, check=True).stdout
            for flags in (["-eo", "args"], ["-ww", "-eo", "args"])
        ]
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
        child_environ = Path(f"/proc/{process.pid}/environ").read_bytes().decode()
    finally:
        go.touch()
        stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 7, stderr  # the command's exit status, unchanged
    assert out.read_text().split() == [sha(STATIC_VALUE), sha(api_token)]
    assert marker in listings[1], "the wide listing does show the child's whole command line"
    assert marker in cmdline and "reconciler" not in cmdline, "reconcile became the command"
    for value in values:
        assert all(value not in listing for listing in listings)
        assert value not in cmdline
        assert f"={value}\0" in child_environ  # the command's environment: the only place
        assert value not in "\0".join(f"{k}={v}" for k, v in os.environ.items())
        assert value not in stdout and value not in stderr


def test_the_rest_of_the_environment_is_kept(project):
    code = "import os; print(os.environ['KEEP_ME'], os.environ['STATIC_KEY'] != '')"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "reconciler", "exec", "--env", "STATIC_KEY=static"),
            *("--", sys.executable, "-c", code),
        ],
        cwd=project.root,
        env={**environment(), "KEEP_ME": "kept", "STATIC_KEY": "overridden"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kept True\n"


def test_arguments_after_the_separator_are_the_commands(project):
    code = "import sys; print(sys.argv[1:])"
    result = reconcile(
        project, "exec", "--env", "K=static", "--", sys.executable, "-c", code, "-f", "--env", "x"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "['-f', '--env', 'x']\n"


def test_the_command_gets_default_signal_dispositions(project):
    # Python ignores SIGPIPE; an ignored signal would stay ignored across exec.
    result = reconcile(project, "exec", "--env", "K=static", "--", "cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    (ignored,) = [line for line in result.stdout.splitlines() if line.startswith("SigIgn:")]
    mask = int(ignored.split()[1], 16)
    assert not mask & (1 << (signal.SIGPIPE - 1))


def test_a_signal_ends_the_command_as_it_would_without_reconcile(project):
    result = reconcile(project, "exec", "--env", "K=static", "--", "sh", "-c", "kill -TERM $$")
    assert result.returncode == -signal.SIGTERM


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["K=nope"], "'nope' is not declared"),
        (["K=static", "L=nope"], "'nope' is not declared"),
        (["K"], "expected VARIABLE=NAME"),
        (["1K=static"], "not a valid environment variable name"),
        ([], "at least one --env"),
    ],
)
def test_errors_stop_before_the_command_runs(project, tmp_path, pairs, expected):
    ran = tmp_path / "ran"
    args = [arg for pair in pairs for arg in ("--env", pair)]
    result = reconcile(project, "exec", *args, "--", "touch", str(ran))
    assert result.returncode == 1
    assert expected in result.stderr
    assert not ran.exists()
    assert STATIC_VALUE not in result.stderr + result.stdout


def test_needs_relink_stops_before_the_command_runs(project, tmp_path):
    path = project.grant_file("api")
    grant = store.read_grant(path, project_identities())
    store.write_grant(
        path,
        replace(grant, status="needs-relink", status_reason="revoked by the user"),
        [project.recipient],
    )
    ran = tmp_path / "ran"
    result = reconcile(project, "exec", "--env", "T=api", "--", "touch", str(ran))
    assert result.returncode == 1
    assert "api needs to be linked again (revoked by the user)" in result.stderr
    assert "reconcile link api" in result.stderr
    assert not ran.exists()


def test_no_command_or_an_unknown_command(project):
    nothing = reconcile(project, "exec", "--env", "K=static")
    assert nothing.returncode == 1 and "nothing to run" in nothing.stderr
    missing = reconcile(project, "exec", "--env", "K=static", "--", "no-such-command-xyz")
    assert missing.returncode == 127
    assert "no-such-command-xyz: command not found" in missing.stderr
    assert STATIC_VALUE not in missing.stderr


def project_identities():
    from reconciler.vault.sops.keys import load_identities

    return load_identities(required=True)
