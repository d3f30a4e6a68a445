"""Plain values for the plan tests: a desired state, grants and an actual state, at a fixed NOW."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.model import Actual, Desired, Grant, Provider, Secret

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


ALICE = "age1" + "a" * 58


BOB = "age1" + "b" * 58


def desired(providers=(), secrets=(), recipients=(ALICE,)) -> Desired:
    names = [p.name for p in providers] + [s.name for s in secrets]
    return Desired(
        path=Path("providers.yaml"),
        store_dir=Path("secrets"),
        recipients={name: tuple(recipients) for name in names},
        refresh_before=timedelta(minutes=5),
        keepalive=timedelta(days=7),
        providers={p.name: p for p in providers},
        secrets={s.name: s for s in secrets},
    )


def github(**overrides) -> Provider:
    values = dict(name="github", client_id="cid", flow="device_code", scopes=("repo", "read:user"))
    values.update(overrides)
    return Provider(**values)


def oauth_grant(**overrides) -> Grant:
    values = dict(
        name="github",
        kind="oauth2",
        flow="device_code",
        client_id="cid",
        scopes=("repo", "read:user"),
        granted_scopes=("repo", "read:user"),
        expires_at=NOW + timedelta(hours=1),
        obtained_at=NOW - timedelta(hours=1),
        recipients=(ALICE,),
        sealed=frozenset({"access_token", "refresh_token"}),
    )
    values.update(overrides)
    return Grant(**values)


def secret_grant(name="openai", value="sk-1", **overrides) -> Grant:
    values = dict(
        name=name, kind="secret", value=Secret(value), recipients=(ALICE,), decrypted=True
    )
    values.update(overrides)
    return Grant(**values)


def actual(*grants, decrypted=True, unreadable=None) -> Actual:
    return Actual({g.name: g for g in grants}, unreadable or {}, decrypted)
