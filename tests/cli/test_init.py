"""`reconcile init` next to what a repository already has, and the starter providers.yaml."""

from __future__ import annotations

import json
import re
import subprocess

OTHER_RULES = """\
# team secrets, not managed by reconcile
creation_rules:
    - path_regex: deploy/.*\\.yaml$
      age: {recipient}
"""


def test_init_adds_a_rule_to_a_sops_yaml_that_has_none_for_the_grant_files(project):
    sops_yaml = project.root / ".sops.yaml"
    before = OTHER_RULES.format(recipient=project.recipient)
    sops_yaml.write_text(before)

    init = project.reconcile("init")
    assert init.code == 0, init.stderr
    assert "added a creation rule for secrets/" in init.stderr and "Ready." in init.stdout
    after = sops_yaml.read_text()
    assert after.startswith(before)  # comments and the other rules are kept as they were
    assert "    - path_regex: secrets/.*\\.sops\\.yaml$" in after

    # The grant files now get their recipients from the new rule.
    project.write_config("version: 1\nsecrets:\n  api:\n    value: env:INIT_API_KEY\n")
    applied = project.reconcile("apply", env={"INIT_API_KEY": "key-0123456789"})
    assert applied.code == 0, applied.stderr
    assert project.reconcile("token", "api").stdout == "key-0123456789\n"

    again = project.reconcile("init")
    assert again.code == 0 and "creation rule 2 covers secrets/" in again.stderr
    assert sops_yaml.read_text() == after


def test_init_says_which_lines_to_add_when_it_cannot_edit_sops_yaml(project):
    sops_yaml = project.root / ".sops.yaml"
    sops_yaml.write_text("creation_rules: [{path_regex: deploy/}]\n")
    init = project.reconcile("init", "-o", "json")
    assert init.code == 1
    assert "Ready" not in init.stdout + init.stderr
    (todo,) = json.loads(init.stdout)["todo"]
    assert "has no creation rule for the grant files in secrets/" in todo
    assert "  - path_regex: secrets/.*\\.sops\\.yaml$" in todo and project.recipient in todo
    assert sops_yaml.read_text() == "creation_rules: [{path_regex: deploy/}]\n"


def test_the_starter_examples_work_once_uncommented(project):
    assert project.reconcile("init").code == 0
    config = project.config.read_text()
    uncommented = re.sub(r"(?m)^# (?=providers:|secrets:|  )", "", config)
    assert uncommented != config
    project.write_config(uncommented)
    validate = project.reconcile("validate")
    assert validate.code == 0, validate.stderr
    actions = json.loads(project.reconcile("plan", "-o", "json").stdout)["actions"]
    assert {(a["name"], a["action"]) for a in actions} == {
        ("github", "link"),
        ("linear-mcp", "link"),
        ("openai", "write-secret"),
    }


def test_a_file_source_git_would_commit_gets_a_warning(ready):
    subprocess.run(["git", "init", "-q", str(ready.root)], check=True)
    validate = ready.reconcile("validate", "-o", "json")
    assert validate.code == 0, validate.stderr
    (warning,) = json.loads(validate.stdout)["warnings"]
    assert "secret 'local' reads" in warning and "local.key" in warning
    assert "git would commit the plaintext" in warning
    assert "warning: " in validate.stderr
    assert "local.key" in ready.reconcile("plan").stderr

    (ready.root / ".gitignore").write_text("local.key\n")
    quiet = ready.reconcile("validate")
    assert quiet.code == 0 and "warning" not in quiet.stderr, quiet.stderr
