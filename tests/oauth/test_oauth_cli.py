"""The real `reconcile` command against a token endpoint (the stub) that answers badly."""

from __future__ import annotations

import pytest

from tests.notify.support import KEY, Receiver

from .support import STUB_ACCESS, STUB_CLIENT_SECRET, STUB_REFRESH, echo, every_form


def test_an_absurd_expires_in_is_clamped_not_a_crash(stub_project, stub, project):
    stub.reply("POST", "/token", body={"access_token": "at-new-0123456789", "expires_in": 1e15})
    ran = project.reconcile("token", "api")
    assert ran.code == 0, ran
    assert ran.stdout.strip() == "at-new-0123456789"
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize("value", [-60, "an hour"])
def test_an_invalid_expires_in_fails_the_refresh_clearly(stub_project, stub, project, value):
    stub.reply("POST", "/token", body={"access_token": "at-new-0123456789", "expires_in": value})
    before = stub_project.read_bytes()
    ran = project.reconcile("token", "api")
    assert ran.code == 1, ran
    assert ran.stderr.startswith("error: api: the token response has an invalid `expires_in`"), ran
    assert "Traceback" not in ran.stderr
    assert stub_project.read_bytes() == before
    for secret in (STUB_ACCESS, STUB_REFRESH, "at-new-0123456789"):
        assert secret not in ran.stderr


def test_echoed_secrets_reach_no_output_file_or_webhook(stub_project, stub, project):
    """invalid_grant whose description quotes the form-encoded request: the grant is marked
    needs-relink with the description, but no encoding of the client secret or refresh token
    is in the committed file, on stderr, in `-o json`, in `status` or in the webhook body."""
    hook = Receiver()
    try:
        project.env["NOTIFY_KEY"] = KEY
        project.write_config(
            project.config.read_text()
            + f"notify:\n  webhook: {hook.url}\n  secret: env:NOTIFY_KEY\n"
        )
        stub.route("POST", "/token", echo)
        ran = project.reconcile("-o", "json", "token", "api")
        assert ran.code == 1, ran
        status = project.reconcile("status", "-o", "json")
        text = project.reconcile("status")
        (event,) = hook.wait_for(lambda: hook.named("needs-relink"), "the needs-relink event")
        bodies = [attempt["body"].decode() for attempt in hook.attempts]
    finally:
        hook.stop()
    grant_file = stub_project.read_text()
    assert "status: needs-relink" in grant_file and "bad request" in grant_file
    assert "bad request" in event["reason"] and "***" in event["reason"]
    outputs = [grant_file, ran.stdout, ran.stderr, status.stdout, text.stdout, *bodies]
    for form in every_form("app-1", STUB_CLIENT_SECRET, STUB_REFRESH):
        for output in outputs:
            assert form not in output, (form, output)


def test_no_control_character_of_the_provider_reaches_the_terminal(stub_project, stub, project):
    description = "revoked\x1b[2J\x1b]0;pwned\x07 by admin"
    stub.reply("POST", "/token", 400, {"error": "invalid_grant", "error_description": description})
    refused = project.reconcile("token", "api")
    assert refused.code == 1
    assert "revoked\\x1b[2J\\x1b]0;pwned\\x07 by admin" in refused.stderr
    status, plan = project.reconcile("status"), project.reconcile("plan")
    assert "needs-relink" in status.stdout and "revoked" in plan.stdout
    for output in (refused.stderr, status.stdout, status.stderr, plan.stdout, plan.stderr):
        assert "\x1b" not in output and "\x07" not in output
