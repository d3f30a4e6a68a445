"""``attach`` / ``detach`` (SPEC §3, §7): moving an OAuth grant's live state into the
coordination engine when ``coordination:`` is declared, and back when it is removed."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from reconciler.model import Coordination
from reconciler.plan import plan

from .support import NOW, actual, desired, github, oauth_grant, secret_grant

ENGINE = Coordination(endpoints=("https://etcd.internal:2379",), namespace="acme/agents")


def kinds(result) -> list[tuple[str, str]]:
    return [(a.name, a.action) for a in result.actions]


def coordinated(*args, **kwargs):
    return replace(desired(*args, **kwargs), coordination=ENGINE)


def test_a_grant_kept_in_its_file_is_attached_when_coordination_is_declared():
    result = plan(coordinated([github()]), actual(oauth_grant()), NOW)
    assert kinds(result) == [("github", "attach")]
    assert "acme/agents" in result.actions[0].reason


def test_an_attached_grant_with_state_in_the_engine_needs_nothing():
    attached = oauth_grant(custody="etcd", revision=7, generation=3)
    assert kinds(plan(coordinated([github()]), actual(attached), NOW)) == []


def test_an_attached_grant_due_is_refreshed_and_a_due_unattached_one_attached_first():
    due = {"expires_at": NOW + timedelta(seconds=30)}
    attached = oauth_grant(custody="etcd", revision=7, generation=3, **due)
    assert kinds(plan(coordinated([github()]), actual(attached), NOW)) == [("github", "refresh")]
    unattached = oauth_grant(**due)
    assert kinds(plan(coordinated([github()]), actual(unattached), NOW)) == [
        ("github", "attach"),
        ("github", "refresh"),
    ]


def test_an_attached_grant_is_detached_when_coordination_is_removed():
    attached = oauth_grant(custody="etcd", expires_at=None, obtained_at=None, sealed=frozenset())
    result = plan(desired([github()]), actual(attached), NOW)
    assert kinds(result) == [("github", "detach")]


def test_a_grant_attached_but_missing_from_the_engine_is_linked_again():
    lost = oauth_grant(custody="etcd", revision=None)
    assert kinds(plan(coordinated([github()]), actual(lost), NOW)) == [("github", "relink")]


def test_static_secrets_stay_in_their_files():
    from reconciler.model import SecretSpec

    spec = SecretSpec(name="openai", ref="env:OPENAI", value=None)
    result = plan(coordinated(secrets=[spec]), actual(secret_grant()), NOW)
    assert kinds(result) == []


def test_with_the_engine_unreached_attached_grants_are_planned_as_filed_with_a_note():
    from reconciler.model import Actual

    attached = oauth_grant(custody="etcd", revision=None, expires_at=None, obtained_at=None)
    found = Actual({"github": attached}, decrypted=True, engine_unreached="etcd did not answer")
    result = plan(coordinated([github()]), found, NOW)
    assert kinds(result) == []
    assert any("etcd did not answer" in note for note in result.notes)
