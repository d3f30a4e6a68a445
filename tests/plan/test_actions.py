"""The plan is a pure function: every row of SPEC §3's action table, with plain values."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reconciler.model import Secret, SecretSpec
from reconciler.plan import plan

from .support import ALICE, BOB, NOW, actual, desired, github, oauth_grant, secret_grant


def kinds(result) -> list[tuple[str, str]]:
    return [(a.name, a.action) for a in result.actions]


def test_nothing_declared_nothing_stored_is_empty():
    result = plan(desired(), actual(), NOW)
    assert result.actions == () and not result


def test_declared_provider_without_file_is_linked():
    result = plan(desired([github()]), actual(), NOW)
    assert kinds(result) == [("github", "link")]
    assert result.summary() == {"link": 1}


def test_in_sync_grant_needs_nothing():
    assert kinds(plan(desired([github()]), actual(oauth_grant()), NOW)) == []


@pytest.mark.parametrize(
    ("grant", "reason_part"),
    [
        (oauth_grant(granted_scopes=("repo",)), "scopes not granted: read:user"),
        (oauth_grant(flow="authorization_code"), "flow changed"),
        (oauth_grant(client_id="other"), "client_id changed"),
        (oauth_grant(status="needs-relink", status_reason="revoked"), "needs relink: revoked"),
        (oauth_grant(status="needs-relink"), "needs relink"),
        (oauth_grant(kind="secret"), "static secret"),
    ],
)
def test_relink_reasons(grant, reason_part):
    result = plan(desired([github()]), actual(grant), NOW)
    assert kinds(result) == [("github", "relink")]
    assert reason_part in result.actions[0].reason


def test_granted_superset_of_declared_is_fine():
    grant = oauth_grant(granted_scopes=("repo", "read:user", "gist"))
    assert kinds(plan(desired([github()]), actual(grant), NOW)) == []


def test_relink_wins_over_refresh():
    grant = oauth_grant(granted_scopes=(), expires_at=NOW - timedelta(minutes=1))
    assert kinds(plan(desired([github()]), actual(grant), NOW)) == [("github", "relink")]


@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [
        (timedelta(minutes=6), []),
        (timedelta(minutes=5), [("github", "refresh")]),
        (timedelta(minutes=1), [("github", "refresh")]),
        (timedelta(0), [("github", "refresh")]),
        (-timedelta(hours=3), [("github", "refresh")]),
    ],
)
def test_refresh_before_expiry(expires_in, expected):
    grant = oauth_grant(expires_at=NOW + expires_in)
    assert kinds(plan(desired([github()]), actual(grant), NOW)) == expected


def test_refresh_reason_says_expired_or_expiring():
    expired = plan(
        desired([github()]), actual(oauth_grant(expires_at=NOW - timedelta(hours=2))), NOW
    )
    assert expired.actions[0].reason == "access token expired 2h ago"
    soon = plan(
        desired([github()]), actual(oauth_grant(expires_at=NOW + timedelta(minutes=3))), NOW
    )
    assert soon.actions[0].reason == "access token expires in 3m"


def test_keepalive_refreshes_idle_refresh_tokens():
    grant = oauth_grant(expires_at=None, obtained_at=NOW - timedelta(days=7))
    result = plan(desired([github()]), actual(grant), NOW)
    assert kinds(result) == [("github", "refresh")]
    assert "keepalive" in result.actions[0].reason
    fresh = oauth_grant(expires_at=None, obtained_at=NOW - timedelta(days=6, hours=23))
    assert kinds(plan(desired([github()]), actual(fresh), NOW)) == []


def test_keepalive_needs_a_refresh_token():
    grant = oauth_grant(expires_at=None, obtained_at=NOW - timedelta(days=30), sealed=frozenset())
    assert kinds(plan(desired([github()]), actual(grant), NOW)) == []


def test_client_credentials_has_no_keepalive_but_renews_on_expiry():
    provider = github(flow="client_credentials")
    idle = oauth_grant(
        flow="client_credentials", expires_at=None, obtained_at=NOW - timedelta(days=90)
    )
    assert kinds(plan(desired([provider]), actual(idle), NOW)) == []
    expiring = oauth_grant(flow="client_credentials", expires_at=NOW + timedelta(seconds=30))
    assert kinds(plan(desired([provider]), actual(expiring), NOW)) == [("github", "refresh")]


def test_missing_secret_is_written():
    spec = SecretSpec("openai", "env:OPENAI_API_KEY", Secret("sk-1"))
    result = plan(desired(secrets=[spec]), actual(), NOW)
    assert kinds(result) == [("openai", "write-secret")]
    assert result.actions[0].reason == "not written yet"


def test_secret_with_same_value_needs_nothing():
    spec = SecretSpec("openai", "env:OPENAI_API_KEY", Secret("sk-1"))
    assert kinds(plan(desired(secrets=[spec]), actual(secret_grant()), NOW)) == []


def test_changed_secret_value_is_rewritten():
    spec = SecretSpec("openai", "env:OPENAI_API_KEY", Secret("sk-2"))
    result = plan(desired(secrets=[spec]), actual(secret_grant()), NOW)
    assert kinds(result) == [("openai", "write-secret")]
    assert result.actions[0].reason == "value changed"


def test_without_identity_values_are_not_compared_and_a_note_says_so():
    spec = SecretSpec("openai", "env:OPENAI_API_KEY", Secret("sk-2"))
    sealed = secret_grant(value="ignored", decrypted=False)
    result = plan(desired(secrets=[spec]), actual(sealed, decrypted=False), NOW)
    assert kinds(result) == []
    assert any("not compared" in note for note in result.notes)


def test_prompt_secret_is_satisfied_by_an_existing_file():
    spec = SecretSpec("anthropic", "prompt", None)
    assert kinds(plan(desired(secrets=[spec]), actual(secret_grant("anthropic")), NOW)) == []
    missing = plan(desired(secrets=[spec]), actual(), NOW)
    assert kinds(missing) == [("anthropic", "write-secret")]
    assert "prompt" in missing.actions[0].reason


def test_secret_name_holding_a_grant_is_rewritten():
    spec = SecretSpec("github", "env:X", Secret("v"))
    assert kinds(plan(desired(secrets=[spec]), actual(oauth_grant()), NOW)) == [
        ("github", "write-secret")
    ]


def test_rekey_when_recipients_differ():
    spec = SecretSpec("openai", "env:X", Secret("sk-1"))
    result = plan(desired(secrets=[spec], recipients=(ALICE, BOB)), actual(secret_grant()), NOW)
    assert kinds(result) == [("openai", "rekey")]
    assert "+age1bbbbbbbb" in result.actions[0].reason
    removed = plan(desired(secrets=[spec], recipients=(BOB,)), actual(secret_grant()), NOW)
    assert "-age1aaaaaaaa" in removed.actions[0].reason


def test_removing_a_recipient_alone_plans_a_rekey():
    """Taking a key out of the declared set is how access is withdrawn: the file must be
    re-encrypted without it, although nobody was added."""
    spec = SecretSpec("openai", "env:X", Secret("sk-1"))
    shared = secret_grant(recipients=(ALICE, BOB))
    result = plan(desired(secrets=[spec], recipients=(ALICE,)), actual(shared), NOW)
    assert kinds(result) == [("openai", "rekey")]
    assert result.actions[0].reason == "recipients changed: -age1bbbbbbbb…bbbb"
    grant = oauth_grant(recipients=(ALICE, BOB))
    assert kinds(plan(desired([github()], recipients=(ALICE,)), actual(grant), NOW)) == [
        ("github", "rekey")
    ]


def test_recipient_order_does_not_matter():
    spec = SecretSpec("openai", "env:X", Secret("sk-1"))
    grant = secret_grant(recipients=(BOB, ALICE))
    assert kinds(plan(desired(secrets=[spec], recipients=(ALICE, BOB)), actual(grant), NOW)) == []


def test_rewrite_makes_rekey_redundant_but_refresh_does_not():
    spec = SecretSpec("openai", "env:X", Secret("new"))
    result = plan(desired(secrets=[spec], recipients=(BOB,)), actual(secret_grant()), NOW)
    assert kinds(result) == [("openai", "write-secret")]
    grant = oauth_grant(expires_at=NOW + timedelta(minutes=1))
    both = plan(desired([github()], recipients=(BOB,)), actual(grant), NOW)
    assert kinds(both) == [("github", "rekey"), ("github", "refresh")]


def test_undeclared_files_are_pruned_only_when_asked():
    stale = secret_grant("old")
    without = plan(desired(), actual(stale), NOW)
    assert kinds(without) == []
    assert any("old" in note and "--prune" in note for note in without.notes)
    assert kinds(plan(desired(), actual(stale), NOW, prune=True)) == [("old", "prune")]


def test_unreadable_files_get_no_action():
    spec = SecretSpec("openai", "env:X", Secret("sk-1"))
    result = plan(
        desired([github()], [spec]),
        actual(unreadable={"openai": "tampered", "github": "tampered"}),
        NOW,
        prune=True,
    )
    assert kinds(result) == []


def test_actions_are_sorted_by_name_and_plan_is_deterministic():
    specs = [SecretSpec(n, "env:X", Secret("v")) for n in ("zeta", "alpha", "mid")]
    first = plan(desired([github()], specs), actual(), NOW)
    assert [a.name for a in first.actions] == ["alpha", "github", "mid", "zeta"]
    assert first == plan(desired([github()], specs), actual(), NOW)


def test_plan_of_the_result_of_a_plan_is_empty():
    """Applying twice changes nothing: once files match, the plan is empty."""
    specs = [SecretSpec("a", "env:A", Secret("1")), SecretSpec("b", "prompt", None)]
    before = plan(desired(secrets=specs), actual(), NOW)
    assert len(before.actions) == 2
    after = actual(secret_grant("a", "1"), secret_grant("b", "typed"))
    assert plan(desired(secrets=specs), after, NOW).actions == ()
