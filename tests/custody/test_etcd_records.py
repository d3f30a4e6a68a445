"""A grant as the coordination engine keeps it: every encrypted field of the grant file is a
secret of the state record too, and the attached file's identity covers its plaintext."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from reconciler.custody.etcd_records import file_view, from_record, same_identity, to_record
from reconciler.model import ENCRYPTED_FIELDS, Coordination, Grant, Secret

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
COORDINATION = Coordination(endpoints=("http://127.0.0.1:2379",), namespace="team/agents")


def mcp_grant() -> Grant:
    secrets = {name: Secret(f"{name}-plaintext") for name in ENCRYPTED_FIELDS}
    return Grant(
        name="tools",
        kind="oauth2",
        flow="authorization_code",
        client_id="registered-client",
        token_endpoint="http://127.0.0.1:9000/token",
        scopes=("read",),
        granted_scopes=("read",),
        token_type="Bearer",
        expires_at=NOW + timedelta(hours=1),
        obtained_at=NOW,
        resource="http://127.0.0.1:9001/mcp",
        authorization_server="http://127.0.0.1:9000",
        **secrets,
    )


def test_every_encrypted_field_round_trips_as_plain_json():
    grant = mcp_grant()
    record = to_record(grant)
    text = json.dumps(record)  # a Secret left in the record would not serialise
    back = from_record(json.loads(text))
    for name in ENCRYPTED_FIELDS:
        assert getattr(back, name) == getattr(grant, name), name
    assert back.resource == grant.resource
    assert back.authorization_server == grant.authorization_server
    assert back.expires_at == grant.expires_at and back.scopes == grant.scopes


def test_a_changed_resource_or_authorization_server_rewrites_the_attached_file():
    grant = mcp_grant()
    view = file_view(grant, COORDINATION)
    assert same_identity(view, view)
    for field, value in (("resource", "http://127.0.0.1:9002/mcp"), ("authorization_server", "x")):
        assert not same_identity(view, replace(view, **{field: value})), field
