"""`reconcile --watch` end to end: a separate process, real files, real inotify."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support import new_identity

from .support import read_value, save


def config(recipient: str | None, secrets: dict[str, str], *, extra: str = "") -> str:
    lines = ["version: 1", "store:", "  dir: secrets"]
    if recipient:
        lines.append(f"  recipients: [{recipient}]")
    lines.append("secrets:")
    for name, ref in secrets.items():
        lines += [f"  {name}:", f"    value: {ref}"]
    return "\n".join(lines) + "\n" + extra


@pytest.fixture
def ready(project):
    (project.root / "alpha.key").write_text("alpha-value-1\n")
    project.write_config(config(project.recipient, {"alpha": "file:alpha.key"}))
    return project


def test_applies_at_start_then_on_each_config_edit(ready, watch):
    watching = watch()
    assert read_value(ready, "alpha") == "alpha-value-1"

    (ready.root / "beta.key").write_text("beta-value-1\n")
    save(
        ready.config,
        config(ready.recipient, {"alpha": "file:alpha.key", "beta": "file:beta.key"}),
    )
    watching.wait_for(lambda: read_value(ready, "beta") == "beta-value-1", "beta to be written")
    assert read_value(ready, "alpha") == "alpha-value-1"
    assert watching.errors() == []
    assert watching.stop() == 0
    assert watching.seen("stopped")


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        ("secrets: [\n", "invalid YAML"),
        ("bogus_key: 1\n", "bogus_key"),
    ],
    ids=["yaml", "schema"],
)
def test_a_bad_edit_changes_nothing_and_the_fix_applies(ready, watch, spoil, expected):
    watching = watch()
    good = ready.config.read_text()
    before = ready.snapshot()

    ready.config.write_text(good + spoil)
    watching.wait_for(lambda: any(expected in e for e in watching.errors()), "the error line")
    assert watching.alive()
    assert ready.snapshot() == before

    # While the config is bad, other inputs change too: still nothing is written.
    (ready.root / "alpha.key").write_text("alpha-value-2\n")
    watching.wait_for(lambda: len(watching.errors()) >= 2, "the error to be shown again")
    assert ready.snapshot() == before
    assert watching.alive()

    save(ready.config, good)
    watching.wait_for(lambda: read_value(ready, "alpha") == "alpha-value-2", "the fix to apply")
    assert watching.stop() == 0


def test_an_unresolvable_reference_stays_with_its_grant(ready, watch):
    """One secret whose file is missing is reported; every other grant is still served."""
    watching = watch()
    save(ready.config, ready.config.read_text() + "  gamma:\n    value: file:gamma.key\n")
    watching.wait_for(lambda: any("gamma.key" in e for e in watching.errors()), "the error line")

    (ready.root / "alpha.key").write_text("alpha-value-2\n")
    watching.wait_for(lambda: read_value(ready, "alpha") == "alpha-value-2", "alpha still served")
    assert not (ready.store / "gamma.sops.yaml").exists()

    # The fix is the missing file itself: it is watched although it did not resolve.
    (ready.root / "gamma.key").write_text("gamma-value-1\n")
    watching.wait_for(lambda: read_value(ready, "gamma") == "gamma-value-1", "gamma")
    assert watching.stop() == 0


def test_a_deleted_grant_file_is_recreated(ready, watch):
    watching = watch()
    path = ready.store / "alpha.sops.yaml"
    path.unlink()
    watching.wait_for(lambda: path.exists(), "alpha.sops.yaml to be recreated")
    watching.wait_for(
        lambda: len(watching.seen("outcome", name="alpha", action="write-secret")) == 2,
        "the second write to be reported",
    )
    assert read_value(ready, "alpha") == "alpha-value-1"
    assert watching.stop() == 0


def test_a_changed_source_file_rewrites_the_grant(ready, watch):
    watching = watch()
    (ready.root / "alpha.key").write_text("alpha-value-2\n")  # in place, as `echo >` does
    watching.wait_for(lambda: read_value(ready, "alpha") == "alpha-value-2", "the new value")
    token = ready.reconcile("token", "alpha")
    assert token.code == 0 and token.stdout == "alpha-value-2\n"

    save(ready.root / "alpha.key", "alpha-value-3\n")  # replaced by rename
    watching.wait_for(lambda: read_value(ready, "alpha") == "alpha-value-3", "the next value")
    assert watching.stop() == 0


def test_no_loop_on_its_own_writes(ready, watch):
    watching = watch()
    writes = len(watching.seen("outcome", result="done"))
    idle = len(watching.seen("idle"))
    (ready.root / "alpha.key").write_text("alpha-value-2\n")
    watching.wait_for(lambda: read_value(ready, "alpha") == "alpha-value-2", "the new value")
    watching.wait_idle(idle)
    assert len(watching.seen("outcome", result="done")) == writes + 1
    mtime = (ready.store / "alpha.sops.yaml").stat().st_mtime_ns
    cycles = len(watching.seen("reconcile"))
    # Our own write, lock and temp files, and a `touch` that changes no content: none of
    # them starts another cycle. (A bounded look: a loop would show within this window.)
    os.utime(ready.config)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert len(watching.seen("outcome")) == writes + 1, watching.dump()
        assert len(watching.seen("reconcile")) == cycles, watching.dump()
        time.sleep(0.05)
    assert (ready.store / "alpha.sops.yaml").stat().st_mtime_ns == mtime
    assert watching.stop() == 0


def test_a_changed_sops_yaml_is_reported_and_rekeyed_only_by_apply(project, watch, tmp_path):
    (project.root / "alpha.key").write_text("alpha-value-1\n")
    sops_yaml = project.root / ".sops.yaml"
    rule = "creation_rules:\n  - path_regex: secrets/.*\\.sops\\.yaml$\n    age: {}\n"
    sops_yaml.write_text(rule.format(project.recipient))
    project.write_config(config(None, {"alpha": "file:alpha.key"}))
    watching = watch()

    from reconciler.vault.store import read_grant

    path = project.store / "alpha.sops.yaml"
    assert read_grant(path, None).recipients == (project.recipient,)
    second = new_identity(tmp_path / "second.txt")
    idle = len(watching.seen("idle"))
    save(sops_yaml, rule.format(f"{project.recipient},{second}"))
    watching.wait_for(lambda: watching.seen("rekey", names=["alpha"]), "the rekey report")
    watching.wait_idle(idle)
    assert read_grant(path, None).recipients == (project.recipient,)

    assert project.reconcile("apply").code == 0  # the user, after checking the change
    assert set(read_grant(path, None).recipients) == {project.recipient, second}
    assert read_value(project, "alpha") == "alpha-value-1"
    assert watching.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_stop_with_exit_0(ready, watch, sig):
    watching = watch()
    assert watching.stop(sig) == 0
    assert watching.seen("stopped")
    assert not [line for line in watching.stderr if "Traceback" in line]


def test_watch_is_also_a_flag_of_apply(ready, watch):
    watching = watch("apply", "--no-link")
    assert read_value(ready, "alpha") == "alpha-value-1"
    assert watching.stop() == 0


def test_watch_with_another_command_is_a_usage_error(ready):
    result = ready.reconcile("--watch", "plan")
    assert result.code == 1  # an error; 2 would mean "changes pending"
    assert "--watch" in result.stderr


def test_a_missing_config_is_an_error_at_start(project):
    result = project.reconcile("--watch")
    assert result.code == 1
    assert "does not exist" in result.stderr
