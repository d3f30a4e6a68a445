"""A Slack grant with bot and user scopes keeps both tokens in its grant file, encrypted, and
the real CLI and `sops` read them back."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

import pytest
import yaml

from reconciler.apply import lifecycle
from reconciler.config import load
from reconciler.custody.files import FileCustody
from reconciler.oauth import tokens
from tests.support import sops_binary

from .support import SLACK_V2

BOT = SLACK_V2["access_token"]
USER = SLACK_V2["authed_user"]["access_token"]


@pytest.fixture
def slack(project, stub):
    """`project` declaring a Slack bot (scope `commands`) with user scopes, on the stub."""
    project.env["SLACK_SECRET"] = "slack-client-secret-0123"
    project.write_config(
        "version: 1\n"
        f"store:\n  dir: secrets\n  recipients: [{project.recipient}]\n"
        "providers:\n  slack:\n    preset: slack\n    client_id: '123.456'\n"
        "    client_secret: env:SLACK_SECRET\n"
        f"    token_endpoint: {stub.url('/token')}\n"
        f"    authorization_endpoint: {stub.url('/authorize')}\n"
        f"    revocation_endpoint: {stub.url('/revoke')}\n"
        "    scopes: [commands]\n"
        "    authorization_params: {user_scope: 'chat:write,channels:history'}\n"
    )
    # Token rotation on: the bot token expires and comes with a refresh token.
    stub.reply(
        "POST", "/token", body={**SLACK_V2, "refresh_token": "xoxe-1-bot", "expires_in": 43200}
    )
    desired = load(project.config, environ=project.env)
    provider = desired.providers["slack"]
    secret = lifecycle.client_secret(desired, provider, project.env)
    now = datetime.now(UTC)
    result = tokens.exchange_code(provider, secret, "code-1", "http://127.0.0.1/cb", None, now=now)
    lifecycle.store_link(desired, provider, result, now, provider.scopes, client_secret=secret)
    return project.store / "slack.sops.yaml"


def test_both_tokens_are_kept_encrypted_with_their_scopes(slack, project):
    text = slack.read_text()
    assert BOT not in text and USER not in text
    plain = yaml.safe_load(text)
    assert plain["granted_scopes"] == ["commands"]
    assert plain["extra"]["secondary_token_kind"] == "user"
    assert plain["extra"]["secondary_granted_scopes"] == "chat:write,channels:history"
    assert plain["secondary_token"].startswith("ENC[AES256_GCM,")

    done = subprocess.run(
        [sops_binary(), "-d", "--extract", '["secondary_token"]', str(slack)],
        env={**project.env, "SOPS_AGE_KEY_FILE": str(project.key_file)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == USER


def test_token_prints_the_bot_token_and_the_plan_is_satisfied(slack, project):
    ran = project.reconcile("token", "slack")
    assert ran.code == 0, ran
    assert ran.stdout.strip() == BOT
    plan = project.reconcile("plan", "--exit-code")
    assert plan.code == 0, plan  # the declared bot scopes are granted: no relink


def test_a_refresh_keeps_the_secondary_token(slack, project, stub):
    from reconciler.vault.sops.keys import load_identities

    stub.reply(
        "POST",
        "/token",
        body={
            "ok": True,
            "access_token": "xoxe.xoxb-2",
            "refresh_token": "xoxe-1-bot-2",
            "token_type": "bot",
            "expires_in": 43200,
            "scope": "commands",
        },
    )
    desired = load(project.config, environ=project.env)
    identities = load_identities(project.env, required=True)
    now = datetime.now(UTC)
    lifecycle.refresh(desired, "slack", now, identities, force=True, environ=project.env)
    again = FileCustody(desired, identities, project.env).read("slack").grant
    assert again.access_token.reveal() == "xoxe.xoxb-2"
    assert again.refresh_token.reveal() == "xoxe-1-bot-2"  # rotated: in the grant file
    assert again.secondary_token.reveal() == USER
    assert yaml.safe_load(slack.read_text())["extra"]["secondary_token_kind"] == "user"


def test_revoke_revokes_both_tokens(slack, project, stub):
    stub.reply("POST", "/revoke", body={"ok": True, "revoked": True})
    ran = project.reconcile("revoke", "slack")
    assert ran.code == 0, ran
    revoked = [request.form["token"] for request in stub.hits("/revoke")]
    assert revoked == ["xoxe-1-bot", BOT, USER]
    assert not slack.exists()
