"""`plan` and `status` with an age identity that is not a recipient (a reviewer's or a CI
runner's own key) behave as with no key at all."""

from __future__ import annotations

import json

import pytest

from tests.support import new_identity

from .support import config


@pytest.fixture
def reviewer(ready):
    """The project applied by its owner, then seen with another key and no secret values."""
    assert ready.reconcile("apply").code == 0
    key_file = ready.root.parent / "reviewer.txt"
    new_identity(key_file)
    ready.env["SOPS_AGE_KEY_FILE"] = str(key_file)
    ready.env.pop("OPENAI_API_KEY")
    return ready


def test_plan_with_a_reviewers_key_plans_from_metadata(reviewer):
    plan = reviewer.reconcile("plan", "--exit-code")
    assert plan.code == 0, plan.stderr
    assert plan.stderr == ""
    notes = [line for line in plan.stdout.splitlines() if line.startswith("Note:")]
    assert len(notes) == 1
    assert "not compared" in notes[0] and "not a recipient" in notes[0]
    assert reviewer.recipient in notes[0]


def test_a_reviewers_plan_still_shows_the_changes(reviewer):
    reviewer.write_config(config([reviewer.recipient], extra="  new:\n    value: prompt\n"))
    plan = reviewer.reconcile("plan", "--exit-code", "-o", "json")
    assert plan.code == 2, plan.stderr
    document = json.loads(plan.stdout)
    assert document["actions"] == [
        {"name": "new", "action": "write-secret", "reason": "not written yet (prompt)"}
    ]
    assert any("not a recipient" in note for note in document["notes"])


def test_status_with_a_reviewers_key_shows_the_metadata(reviewer):
    before = reviewer.snapshot()
    status = reviewer.reconcile("status", "-o", "json")
    assert status.code == 0, status.stderr
    rows = {row["name"]: row["status"] for row in json.loads(status.stdout)["grants"]}
    assert rows == {"local": "ok", "openai": "ok"}
    assert reviewer.snapshot() == before
