"""The status report: one row per declared or stored grant. Pure, like the plan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..model import Actual, Desired
from .actions import missing_scopes
from .schedule import access_deadline


@dataclass(frozen=True)
class GrantReport:
    name: str
    kind: str
    #: ok | expiring | expired | needs-relink | missing | invalid
    status: str
    scopes: tuple[str, ...]
    granted_scopes: tuple[str, ...]
    expires_at: datetime | None
    obtained_at: datetime | None
    declared: bool
    reason: str | None = None
    #: Where the live state is kept: ``files`` or ``etcd`` (SPEC §7).
    custody: str = "files"
    #: For ``etcd``: the state's revision and generation.
    revision: int | None = None
    generation: int | None = None

    @property
    def missing_scopes(self) -> tuple[str, ...]:
        """Declared scopes the stored grant was not given (empty when there is no grant)."""
        if self.kind != "oauth2" or not self.declared or self.status in ("missing", "invalid"):
            return ()
        return tuple(missing_scopes(self.scopes, self.granted_scopes))

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "scopes": list(self.scopes),
            "granted_scopes": list(self.granted_scopes),
            "missing_scopes": list(self.missing_scopes),
            "expires_at": _rfc3339(self.expires_at),
            "last_refresh": _rfc3339(self.obtained_at),
            "declared": self.declared,
            "reason": self.reason,
            "custody": self.custody,
            **(
                {"revision": self.revision, "generation": self.generation}
                if self.custody == "etcd"
                else {}
            ),
        }


def report(desired: Desired, actual: Actual, now: datetime) -> list[GrantReport]:
    rows: list[GrantReport] = []
    declared_kinds = {name: "oauth2" for name in desired.providers}
    declared_kinds.update({name: "secret" for name in desired.secrets})
    for name in sorted(set(declared_kinds) | set(actual.grants) | set(actual.unreadable)):
        provider = desired.providers.get(name)
        scopes = provider.scopes if provider else ()
        declared = name in declared_kinds
        if name in actual.unreadable:
            rows.append(
                GrantReport(
                    name, declared_kinds.get(name, "unknown"), "invalid", scopes, (), None, None,
                    declared, actual.unreadable[name],
                )
            )  # fmt: skip
            continue
        grant = actual.grants.get(name)
        if grant is None:
            rows.append(
                GrantReport(name, declared_kinds[name], "missing", scopes, (), None, None, True)
            )
            continue
        status: str = grant.status
        reason = grant.status_reason
        if status == "ok" and grant.expires_at is not None:
            deadline = access_deadline(grant.expires_at, grant.obtained_at, desired.refresh_before)
            if grant.expires_at <= now:
                status = "expired"
            elif deadline is not None and now >= deadline:
                status = "expiring"
        rows.append(
            GrantReport(
                name, grant.kind, status, scopes if provider else grant.scopes,
                grant.granted_scopes,
                grant.expires_at, grant.obtained_at, declared, reason,
                grant.custody or "files", grant.revision, grant.generation,
            )
        )  # fmt: skip
    return rows


def _rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
