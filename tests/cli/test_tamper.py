"""Hand-edited grant files: `status` checks the MAC when the key is present, and the hint
restores the one damaged file, never the whole store folder."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.model import Grant, Secret
from reconciler.vault.store import grant_path, write_grant

from .support import config

PROVIDER = (
    "providers:\n"
    "  api:\n"
    "    client_id: reconciler\n"
    "    authorization_endpoint: http://127.0.0.1:9/authorize\n"
    "    token_endpoint: http://127.0.0.1:9/token\n"
    "    scopes: [read]\n"
)


@pytest.fixture
def linked(ready):
    """`ready` plus an OAuth grant `api`, granted `read`, valid for a day."""
    ready.write_config(config([ready.recipient], extra=PROVIDER))
    now = datetime.now(UTC).replace(microsecond=0)
    grant = Grant(
        name="api", kind="oauth2", flow="authorization_code", client_id="reconciler",
        scopes=("read",), granted_scopes=("read",), token_type="Bearer",
        expires_at=now + timedelta(days=1), obtained_at=now,
        access_token=Secret("at-0123456789"), refresh_token=Secret("rt-0123456789"),
    )  # fmt: skip
    write_grant(grant_path(ready.store, "api"), grant, [ready.recipient])
    applied = ready.reconcile("apply")
    assert applied.code == 0, applied.stderr
    return ready


def _hand_edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("granted_scopes:\n    - read\n", "granted_scopes:\n    - read\n    - admin\n"),
        ("status: ok", "status: needs-relink"),
    ],
    ids=["granted_scopes", "status"],
)
def test_status_with_the_key_shows_a_hand_edited_file_as_invalid(linked, old, new):
    _hand_edit(linked.store / "api.sops.yaml", old, new)
    status = linked.reconcile("status", "-o", "json")
    assert status.code == 1, status.stdout
    rows = {row["name"]: row for row in json.loads(status.stdout)["grants"]}
    assert rows["api"]["status"] == "invalid"
    assert "api.sops.yaml" in rows["api"]["reason"] and "tamper" in rows["api"]["reason"]
    assert rows["openai"]["status"] == "ok"


def test_the_tamper_hint_names_the_one_file_not_the_store(linked):
    path = linked.store / "api.sops.yaml"
    _hand_edit(path, "client_id: reconciler", "client_id: someone-else")
    plan = linked.reconcile("plan")
    assert plan.code == 1
    message = " ".join(plan.stderr.split())
    assert f"`git checkout -- {path}`" in message
    assert f"git checkout -- {linked.store}`" not in message
