"""The plan: a pure function of (desired, actual, now). No I/O, no clock, no network."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..model import (
    Action,
    Actual,
    Desired,
    Grant,
    Plan,
    Provider,
    SecretSpec,
    canonical_resource,
)
from .schedule import refresh_reason

#: Order in which actions on the same grant are listed and carried out.
_ORDER = {
    "link": 0,
    "relink": 1,
    "write-secret": 2,
    "rekey": 3,
    "detach": 4,
    "attach": 5,
    "refresh": 6,
    "prune": 7,
}
#: Actions that rewrite the whole file, and with it its recipients.
_REWRITES = {"link", "relink", "write-secret"}


def plan(desired: Desired, actual: Actual, now: datetime, *, prune: bool = False) -> Plan:
    """Decide what to do to make the grant files match ``providers.yaml`` at ``now``.

    Grants whose file could not be read (``actual.unreadable``) get no action: a tampered or
    undecryptable file is reported by the caller, never overwritten. Nor do secrets whose
    reference did not resolve (``desired.unresolved``): the caller reports them as failed.
    """
    actions: list[Action] = []
    notes: list[str] = []
    for name, provider in desired.providers.items():
        if name in actual.unreadable:
            continue
        grant = actual.grants.get(name)
        found = _oauth_actions(provider, grant, desired, actual, now)
        actions.extend(found)
        if grant is not None:
            actions.extend(_rekey(name, grant, desired, found))
    uncompared = 0
    for name, spec in desired.secrets.items():
        if name in actual.unreadable or name in desired.unresolved:
            continue
        grant = actual.grants.get(name)
        found = _secret_actions(spec, grant, actual.decrypted)
        if not found and grant is not None and not actual.decrypted and spec.ref != "prompt":
            uncompared += 1
        actions.extend(found)
        if grant is not None:
            actions.extend(_rekey(name, grant, desired, found))
    if uncompared:
        why = actual.sealed_reason or "no age identity is available"
        notes.append(f"values of {uncompared} secret(s) were not compared: {why}")
    undeclared = sorted(set(actual.grants).difference(desired.providers, desired.secrets))
    if prune:
        actions.extend(Action(name, "prune", "no longer declared") for name in undeclared)
    elif undeclared:
        notes.append(
            f"{len(undeclared)} grant file(s) no longer declared ({', '.join(undeclared)}); "
            "`reconcile apply --prune` revokes and deletes them"
        )
    if actual.engine_unreached is not None:
        notes.append(
            f"the live state of attached grants was not read ({actual.engine_unreached}); "
            "they are planned as their grant files record them"
        )
    actions.sort(key=lambda a: (a.name, _ORDER[a.action]))
    return Plan(tuple(actions), tuple(notes))


def _oauth_actions(
    provider: Provider, grant: Grant | None, desired: Desired, actual: Actual, now: datetime
) -> list[Action]:
    name = provider.name
    if grant is None:
        return [Action(name, "link", "not linked yet")]
    if desired.coordination is None and grant.custody == "etcd":
        return [Action(name, "detach", "coordination removed: its live state returns to the file")]
    reason = _relink_reason(provider, grant)
    if reason:
        return [Action(name, "relink", reason)]
    if (
        desired.coordination is not None
        and grant.custody == "etcd"
        and grant.revision is None
        and actual.engine_unreached is None
    ):
        lost = "attached, but the coordination engine holds no state for it (namespace changed?)"
        return [Action(name, "relink", lost)]
    actions = []
    if desired.coordination is not None and grant.kind == "oauth2" and grant.custody != "etcd":
        engine = desired.coordination.namespace
        actions.append(
            Action(name, "attach", f"coordination declared: live state to etcd {engine}")
        )
    reason = refresh_reason(grant, desired.refresh_before, desired.keepalive, now)
    if reason:
        actions.append(Action(name, "refresh", reason))
    return actions


def _relink_reason(provider: Provider, grant: Grant) -> str | None:
    if grant.kind != "oauth2":
        return "declared as an OAuth grant, but the file holds a static secret"
    if grant.status == "needs-relink":
        return f"needs relink: {grant.status_reason}" if grant.status_reason else "needs relink"
    if grant.flow is not None and grant.flow != provider.flow:
        return f"flow changed from {grant.flow} to {provider.flow}"
    if provider.mcp and not grant.resource:
        return "declared as an MCP server, but the grant is not bound to one"
    if grant.resource and not provider.mcp:
        return "no longer declared as an MCP server"
    if provider.mcp and grant.resource and canonical_resource(provider.mcp) != grant.resource:
        return f"MCP server changed from {grant.resource} to {canonical_resource(provider.mcp)}"
    if provider.mcp and not provider.client_id:
        # The client came from the MCP server's authorization server (registered, or a
        # client ID metadata document): only a client_id declared before needs a new link.
        source = grant.extra.get("client_source")
        if source == "declared":
            return "client_id removed"
        if source == "metadata-document" and grant.client_id != provider.client_metadata_url:
            return "client_metadata_url changed"
    elif grant.client_id is not None and grant.client_id != provider.client_id:
        return "client_id changed"
    missing = missing_scopes(provider.scopes, grant.granted_scopes)
    if missing:
        return "scopes not granted: " + ", ".join(missing)
    return None


def missing_scopes(declared: Sequence[str], granted: Sequence[str]) -> list[str]:
    """The declared scopes a grant lacks: an under-scoped grant, which apply relinks."""
    return [scope for scope in declared if scope not in granted]


def _secret_actions(spec: SecretSpec, grant: Grant | None, decrypted: bool) -> list[Action]:
    name = spec.name
    if grant is None:
        reason = "not written yet (prompt)" if spec.ref == "prompt" else "not written yet"
        return [Action(name, "write-secret", reason)]
    if grant.kind != "secret":
        return [Action(name, "write-secret", "declared as a secret, but the file holds a grant")]
    if spec.ref == "prompt":  # any value already written satisfies it
        return []
    if decrypted and spec.value is not None and grant.value != spec.value:
        return [Action(name, "write-secret", "value changed")]
    return []


def _rekey(name: str, grant: Grant, desired: Desired, planned: list[Action]) -> list[Action]:
    if any(action.action in _REWRITES for action in planned):
        return []
    wanted = set(desired.recipients.get(name, ()))
    have = set(grant.recipients)
    if not wanted or wanted == have:
        return []
    changes = [f"+{_short(r)}" for r in sorted(wanted - have)]
    changes += [f"-{_short(r)}" for r in sorted(have - wanted)]
    return [Action(name, "rekey", "recipients changed: " + " ".join(changes))]


def _short(recipient: str) -> str:
    return recipient if len(recipient) <= 16 else f"{recipient[:12]}…{recipient[-4:]}"
