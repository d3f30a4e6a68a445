"""apply carries each action out on its own: an unexpected error in one (a bug, an
OverflowError from a provider's absurd answer) fails that grant and no other."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler import apply
from reconciler.apply import runner
from reconciler.model import Action, Actual, Desired, Plan

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def desired(**fields) -> Desired:
    from datetime import timedelta

    values = dict(
        path=Path("providers.yaml"),
        store_dir=Path("secrets"),
        recipients={},
        refresh_before=timedelta(minutes=5),
        keepalive=timedelta(days=7),
        providers={},
        secrets={},
    )
    values.update(fields)
    return Desired(**values)


@pytest.mark.parametrize("count", [1, 3])  # one action at a time, and concurrent refreshes
def test_an_unexpected_error_fails_only_its_grant(monkeypatch, count):
    def refresh(action: Action, context: apply.Context) -> str:
        if action.name == "b":
            raise OverflowError("date value out of range")
        return "refreshed"

    monkeypatch.setitem(runner._HANDLERS, "refresh", refresh)
    names = ["a", "b", "c"][:count] if count > 1 else ["b"]
    plan = Plan(tuple(Action(name, "refresh", "due") for name in [*names, "z"]))
    monkeypatch.setitem(runner._HANDLERS, "write-secret", lambda action, context: "written")
    plan = Plan((*plan.actions, Action("w", "write-secret", "not written yet")))
    outcomes = {
        o.action.name: o for o in apply.apply(plan, apply.Context(desired(), Actual({}), [], NOW))
    }

    assert outcomes["b"].result == "failed"
    assert outcomes["b"].message == "b: unexpected OverflowError: date value out of range"
    assert all(o.result == "done" for name, o in outcomes.items() if name != "b")
    assert set(outcomes) == {*names, "z", "w"}


def test_unresolved_secrets_are_failed_outcomes():
    problems = {"b": "providers.yaml:9:12: unset", "a": "providers.yaml:7:12: unset"}
    found = apply.unresolved(desired(unresolved=problems))
    assert [(o.action.name, o.result, o.message) for o in found] == [
        ("a", "failed", "providers.yaml:7:12: unset"),
        ("b", "failed", "providers.yaml:9:12: unset"),
    ]
