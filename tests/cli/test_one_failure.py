"""SPEC §3: a failure on one grant does not stop the others. Every run prints its summary
(with `-o json`, exactly one JSON document on stdout, errors included), names each failed
grant with the reason, and exits 1 if any failed."""

from __future__ import annotations

import json

import pytest

from .support import LOCAL, OPENAI, config


@pytest.fixture
def one_unset(project):
    """`openai` reads an environment variable that is not set; `local` resolves."""
    project.write_config(config([project.recipient]))
    (project.root / "local.key").write_text(LOCAL + "\n")
    return project


def test_apply_writes_the_others_and_names_the_unresolved_reference(one_unset):
    applied = one_unset.reconcile("apply")
    assert applied.code == 1
    assert "local: write-secret: done" in applied.stderr
    assert "openai: write-secret: failed:" in applied.stderr
    assert "OPENAI_API_KEY" in applied.stderr and "providers.yaml:" in applied.stderr
    assert "Apply: 1 done, 1 failed, 0 pending." in applied.stdout
    assert "Traceback" not in applied.stderr
    assert sorted(one_unset.snapshot()) == ["local.sops.yaml"]


def test_apply_json_is_one_document_with_the_failure(one_unset):
    applied = one_unset.reconcile("apply", "-o", "json")
    assert applied.code == 1
    document = json.loads(applied.stdout)  # one document, nothing else on stdout
    results = {o["name"]: (o["result"], o["message"]) for o in document["outcomes"]}
    assert results["local"][0] == "done"
    assert results["openai"][0] == "failed" and "OPENAI_API_KEY" in results["openai"][1]
    assert document["summary"] == {"done": 1, "failed": 1, "pending": 0}


def test_once_set_the_next_apply_writes_it(one_unset):
    assert one_unset.reconcile("apply").code == 1
    fixed = one_unset.reconcile("apply", env={"OPENAI_API_KEY": OPENAI})
    assert fixed.code == 0, fixed.stderr
    assert sorted(one_unset.snapshot()) == ["local.sops.yaml", "openai.sops.yaml"]


def test_plan_shows_the_others_and_fails_on_the_unresolved_reference(one_unset):
    planned = one_unset.reconcile("plan", "--exit-code")
    assert planned.code == 1
    assert "+ local" in planned.stdout and "openai" not in planned.stdout
    assert "OPENAI_API_KEY" in planned.stderr


def test_validate_still_refuses_an_unresolved_reference(one_unset):
    checked = one_unset.reconcile("validate")
    assert checked.code == 1
    assert "OPENAI_API_KEY" in checked.stderr


@pytest.mark.parametrize(
    ("args", "setup", "said"),
    [
        (("token", "nope"), None, "not declared"),
        (("plan",), "version: [1\n", "providers.yaml"),
        (("status",), "version: 1\nbogus: 2\n", "bogus"),
    ],
    ids=["token-undeclared", "plan-invalid-yaml", "status-schema-error"],
)
def test_errors_are_one_json_document_on_stdout(one_unset, args, setup, said):
    if setup is not None:
        one_unset.write_config(setup)
    ran = one_unset.reconcile(*args, "-o", "json")
    assert ran.code == 1
    document = json.loads(ran.stdout)
    assert set(document) == {"error"}
    assert said in document["error"]["message"]
    assert said in ran.stderr  # people still read it on stderr
    assert "Traceback" not in ran.stderr
