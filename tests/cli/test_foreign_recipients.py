"""A pulled `.sops.yaml` that replaces the recipients must not lock this machine out of its
own grants (nor hand its age key to someone else): such writes need
`apply --allow-foreign-recipients`."""

from __future__ import annotations

import pytest

from tests.support import new_identity

from .support import OPENAI

CONFIG = "version: 1\nstore:\n  dir: secrets\nsecrets:\n  openai:\n    value: env:OPENAI_API_KEY\n"


def sops_yaml(*recipients: str) -> str:
    return (
        "creation_rules:\n"
        "  - path_regex: secrets/.*\\.sops\\.yaml$\n"
        f"    age: {','.join(recipients)}\n"
    )


@pytest.fixture
def pulled(project):
    """Applied with this machine's key, then a pull replaced the recipients with another's."""
    project.write_config(CONFIG)
    (project.root / ".sops.yaml").write_text(sops_yaml(project.recipient))
    project.env["OPENAI_API_KEY"] = OPENAI
    applied = project.reconcile("apply")
    assert applied.code == 0, applied.stderr
    project.stranger_key = project.root.parent / "stranger.txt"
    project.stranger = new_identity(project.stranger_key)
    (project.root / ".sops.yaml").write_text(sops_yaml(project.stranger))
    return project


def test_a_rekey_that_drops_every_key_of_this_machine_is_refused(pulled):
    before = pulled.snapshot()
    result = pulled.reconcile("apply")
    assert result.code == 1
    message = " ".join(result.stderr.split())
    assert "openai: rekey: failed" in message
    assert pulled.stranger in message and ".sops.yaml" in message
    assert "--allow-foreign-recipients" in message
    assert "Traceback" not in result.stderr
    assert pulled.snapshot() == before
    assert pulled.reconcile("token", "openai").stdout == OPENAI + "\n"


def test_the_flag_rekeys_anyway(pulled):
    result = pulled.reconcile("apply", "--allow-foreign-recipients")
    assert result.code == 0, result.stderr
    theirs = pulled.reconcile(
        "token", "openai", env={"SOPS_AGE_KEY_FILE": str(pulled.stranger_key)}
    )
    assert theirs.stdout == OPENAI + "\n"


def test_keeping_one_of_this_machines_keys_is_no_problem(pulled):
    (pulled.root / ".sops.yaml").write_text(sops_yaml(pulled.recipient, pulled.stranger))
    result = pulled.reconcile("apply")
    assert result.code == 0, result.stderr
    assert pulled.reconcile("token", "openai").stdout == OPENAI + "\n"


def test_a_new_secret_holding_the_age_key_is_not_sent_to_a_stranger(pulled):
    pulled.write_config(CONFIG + "  mine:\n    value: file:" + str(pulled.key_file) + "\n")
    result = pulled.reconcile("apply")
    assert result.code == 1
    assert "mine: write-secret: failed" in result.stderr
    assert "mine.sops.yaml" not in pulled.snapshot()
