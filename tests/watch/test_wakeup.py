"""The watcher's timer, with plain values: when is the next refresh due, and does that agree
with the plan's `refresh` rule at every instant?"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from reconciler.model import Actual, Desired, Grant, Provider, Secret, SecretSpec
from reconciler.plan import plan
from reconciler.watch import next_wakeup
from reconciler.watch.inputs import ignored

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ALICE = "age1" + "a" * 58


def desired(*providers: Provider, secrets=()) -> Desired:
    names = [p.name for p in providers] + [s.name for s in secrets]
    return Desired(
        path=Path("providers.yaml"),
        store_dir=Path("secrets"),
        recipients={name: (ALICE,) for name in names},
        refresh_before=timedelta(minutes=5),
        keepalive=timedelta(days=7),
        providers={p.name: p for p in providers},
        secrets={s.name: s for s in secrets},
    )


def provider(name="gh", flow="authorization_code") -> Provider:
    return Provider(name=name, client_id="cid", flow=flow, scopes=("read",))


def grant(name="gh", flow="authorization_code", **overrides) -> Grant:
    values = dict(
        name=name,
        kind="oauth2",
        flow=flow,
        client_id="cid",
        scopes=("read",),
        granted_scopes=("read",),
        expires_at=NOW + timedelta(hours=1),
        obtained_at=NOW,
        recipients=(ALICE,),
        sealed=frozenset({"access_token", "refresh_token"}),
    )
    values.update(overrides)
    return Grant(**values)


def test_the_access_token_deadline():
    due = next_wakeup(desired(provider()), Actual({"gh": grant()}))
    assert due == {"gh": NOW + timedelta(hours=1) - timedelta(minutes=5)}


def test_keepalive_when_it_comes_first():
    long_lived = grant(expires_at=NOW + timedelta(days=30))
    due = next_wakeup(desired(provider()), Actual({"gh": long_lived}))
    assert due == {"gh": NOW + timedelta(days=7)}


def test_no_keepalive_without_a_refresh_token_or_for_client_credentials():
    no_refresh = grant(expires_at=None, sealed=frozenset({"access_token"}))
    assert next_wakeup(desired(provider()), Actual({"gh": no_refresh})) == {}
    robot = grant(flow="client_credentials", expires_at=None)
    assert next_wakeup(desired(provider(flow="client_credentials")), Actual({"gh": robot})) == {}


def test_nothing_is_due_for_missing_relink_undeclared_or_static_grants():
    actual = Actual(
        {
            "gh": grant(status="needs-relink"),
            "old": grant(name="old"),
            "key": Grant(name="key", kind="secret", value=Secret("v"), recipients=(ALICE,)),
        }
    )
    spec = SecretSpec(name="key", ref="env:KEY", value=Secret("v"))
    assert next_wakeup(desired(provider(), provider("gone"), secrets=[spec]), actual) == {}


@given(
    expires=st.one_of(st.none(), st.integers(-3 * 86400, 30 * 86400)),
    obtained=st.one_of(st.none(), st.integers(-30 * 86400, 0)),
    refresh_token=st.booleans(),
    flow=st.sampled_from(["authorization_code", "device_code", "client_credentials"]),
    later=st.integers(0, 40 * 86400),
)
def test_the_timer_agrees_with_the_plan(expires, obtained, refresh_token, flow, later):
    """At any instant, the plan refreshes the grant exactly when the timer says it is due."""
    sealed = {"access_token", "refresh_token"} if refresh_token else {"access_token"}
    state = grant(
        flow=flow,
        expires_at=None if expires is None else NOW + timedelta(seconds=expires),
        obtained_at=None if obtained is None else NOW + timedelta(seconds=obtained),
        sealed=frozenset(sealed),
    )
    wanted = desired(provider(flow=flow))
    actual = Actual({"gh": state})
    due = next_wakeup(wanted, actual).get("gh")
    at = NOW + timedelta(seconds=later)
    refreshing = any(a.action == "refresh" for a in plan(wanted, actual, at).actions)
    assert refreshing == (due is not None and at >= due)


def test_own_lock_and_temp_files_areignored():
    assert ignored(None, "/p/secrets/gh.sops.yaml.lock")
    assert ignored(None, "/p/secrets/.gh.sops.yaml.0a1b2c3d4e5f.tmp")
    assert not ignored(None, "/p/secrets/gh.sops.yaml")
    assert not ignored(None, "/p/providers.yaml")
