"""The status report: one row per declared or stored grant, statuses of SPEC §4."""

from __future__ import annotations

from datetime import timedelta

from reconciler.model import SecretSpec
from reconciler.plan import report

from .support import NOW, actual, desired, github, oauth_grant, secret_grant


def statuses(rows) -> dict[str, str]:
    return {row.name: row.status for row in rows}


def test_every_status_value():
    providers = [github(name=n) for n in ("ok", "soon", "gone", "relink", "missing", "bad")]
    grants = [
        oauth_grant(name="ok"),
        oauth_grant(name="soon", expires_at=NOW + timedelta(minutes=2)),
        oauth_grant(name="gone", expires_at=NOW - timedelta(seconds=1)),
        oauth_grant(name="relink", status="needs-relink", status_reason="invalid_grant"),
    ]
    rows = report(desired(providers), actual(*grants, unreadable={"bad": "tampered"}), NOW)
    assert statuses(rows) == {
        "bad": "invalid",
        "gone": "expired",
        "missing": "missing",
        "ok": "ok",
        "relink": "needs-relink",
        "soon": "expiring",
    }


def test_json_shape_keeps_the_spec_fields():
    rows = report(desired([github()]), actual(oauth_grant()), NOW)
    document = rows[0].to_json()
    for field in ("name", "kind", "status", "scopes", "granted_scopes", "expires_at"):
        assert field in document
    assert document["expires_at"] == "2026-06-01T13:00:00Z"
    assert document["scopes"] == ["repo", "read:user"]


def test_undeclared_grant_files_are_listed_as_not_declared():
    rows = report(desired(secrets=[SecretSpec("a", "prompt")]), actual(secret_grant("old")), NOW)
    by_name = {row.name: row for row in rows}
    assert by_name["old"].declared is False
    assert by_name["a"].status == "missing"
