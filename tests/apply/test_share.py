"""Machines applying the same plan at once start on different grants (``batched.share``):
each grant's preferred refresher is one of its recipients, the same on every machine, so the
shares of the recipients split the plan between them."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyrage

from reconciler.apply import batched
from reconciler.apply.context import Context
from reconciler.model import Action, Actual, Desired

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NAMES = [f"g{index:04d}" for index in range(300)]


def _context(identity, recipients: dict[str, tuple[str, ...]]) -> Context:
    desired = Desired(
        path=Path("providers.yaml"),
        store_dir=Path("secrets"),
        recipients=recipients,
        refresh_before=timedelta(minutes=5),
        keepalive=timedelta(days=7),
        providers={},
        secrets={},
    )
    return Context(desired, Actual({}), [identity] if identity else None, NOW)


def test_the_shares_of_the_recipients_split_the_plan_between_them() -> None:
    people = [pyrage.x25519.Identity.generate() for _ in range(3)]
    everyone = tuple(str(p.to_public()) for p in people)
    recipients = dict.fromkeys(NAMES, everyone)
    actions = [Action(name, "refresh", "due") for name in NAMES]
    shares = [batched.share(actions, _context(p, recipients)) for p in people]
    owner = Counter(a.name for mine, _ in shares for a in mine)
    assert set(owner) == set(NAMES) and set(owner.values()) == {1}  # each exactly once
    assert all(60 < len(mine) < 140 for mine, _ in shares)  # about a third each
    for mine, theirs in shares:
        assert sorted(a.name for a in mine + theirs) == NAMES
    # The same on every run and whatever the order the plan lists them in.
    again = batched.share(list(reversed(actions)), _context(people[0], recipients))
    assert {a.name for a in again[0]} == {a.name for a in shares[0][0]}
    ordered = batched.share_first(actions, _context(people[0], recipients))
    assert {a.name for a in ordered[: len(shares[0][0])]} == {a.name for a in shares[0][0]}


def test_a_machine_that_is_no_recipient_has_no_share() -> None:
    outsider = pyrage.x25519.Identity.generate()
    others = (str(pyrage.x25519.Identity.generate().to_public()),)
    actions = [Action(name, "refresh", "due") for name in NAMES[:20]]
    for identity in (outsider, None):
        mine, theirs = batched.share(actions, _context(identity, dict.fromkeys(NAMES, others)))
        assert mine == [] and theirs == actions
