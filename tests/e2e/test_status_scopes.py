"""`reconcile status` shows what was declared next to what was granted."""

from __future__ import annotations

import json


def test_status_shows_an_under_scoped_grant(e2e):
    client = e2e.auth.add_client("narrow-app", "narrow-secret")
    e2e.declare("narrow", client, scopes=("read",))
    e2e.write_config()
    assert e2e.run("apply").code == 0
    e2e.declare("narrow", client, scopes=("read", "write"))  # declared more since the link
    e2e.write_config()

    ran = e2e.run("status", "-o", "json")
    assert ran.code == 0, ran
    (row,) = json.loads(ran.stdout)["grants"]
    assert row["scopes"] == ["read", "write"]
    assert row["granted_scopes"] == ["read"]
    assert row["missing_scopes"] == ["write"]

    text = e2e.run("status")
    assert text.code == 0, text
    (line,) = [line for line in text.stdout.splitlines() if line.startswith("narrow ")]
    assert line.endswith("read (declared: read write)")
    assert "narrow: declared but not granted: write" in text.stdout

    assert e2e.run("apply").code == 0  # relinks with the declared scopes
    (row,) = json.loads(e2e.run("status", "-o", "json").stdout)["grants"]
    assert row["missing_scopes"] == [] and row["granted_scopes"] == ["read", "write"]
    (line,) = [line for line in e2e.run("status").stdout.splitlines() if "narrow " in line]
    assert line.endswith(" read write")
