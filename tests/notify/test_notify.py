"""Webhook notifications: signed, sent once per status change, retried, never fatal."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from reconciler.apply import notify
from reconciler.model import Desired, Notify

from .support import KEY

CLIENT_SECRET = "notify-client-secret-0123456789"


def write_config(project, auth_server, webhook: str, providers: dict, **defaults) -> None:
    (project.root / "client.secret").write_text(CLIENT_SECRET + "\n")
    entries = {
        name: {
            "client_id": client_id,
            "client_secret": "file:client.secret",
            "authorization_endpoint": auth_server.endpoint("/authorize"),
            "token_endpoint": auth_server.endpoint("/token"),
            "revocation_endpoint": auth_server.endpoint("/revoke"),
            "token_endpoint_auth_method": "client_secret_basic",
            "scopes": ["read"],
            **fields,
        }
        for name, (client_id, fields) in providers.items()
    }
    project.write_config(
        yaml.safe_dump(
            {
                "version": 1,
                "store": {"dir": "secrets", "recipients": [project.recipient]},
                "defaults": defaults or {"refresh_before": "30s"},
                "providers": entries,
                "notify": {"webhook": webhook, "secret": "env:NOTIFY_KEY"},
            },
            sort_keys=False,
        )
    )
    project.env["NOTIFY_KEY"] = KEY


def link_in_process(project, name: str) -> None:
    """`reconcile link NAME`, in this process, with a scripted browser playing the user."""
    from reconciler import operations
    from reconciler.model import Browser
    from tests.e2e.browser import ScriptedBrowser

    browser = Browser(open=ScriptedBrowser(), show=lambda line: None, timeout=30)
    operations.link(project.config, name, browser, environ=project.env)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_revoked_grant_sends_one_signed_needs_relink(project, auth_server, receiver):
    hook = receiver()
    auth_server.add_client("web-app", CLIENT_SECRET)
    auth_server.token_lifetime = 2  # due for refresh after 1 s (half its lifetime)
    write_config(project, auth_server, hook.url, {"web": ("web-app", {})}, refresh_before="5m")

    link_in_process(project, "web")
    time.sleep(1.1)
    hook.wait_for(lambda: hook.named("linked"), "the linked event")

    with auth_server.lock:  # the user revokes the app at the provider, behind our back
        for token in auth_server.tokens:
            token.refresh_revoked = True
    refused = project.reconcile("token", "web")  # due: refreshes, gets invalid_grant
    assert refused.code == 1
    assert "needs to be linked again" in refused.stderr
    # The process has exited: whatever it had to send was sent before it did.
    (event,) = hook.named("needs-relink")
    assert event["grant"] == "web"
    assert "revoked" in event["reason"]
    assert datetime.strptime(event["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert yaml.safe_load((project.store / "web.sops.yaml").read_text())["status"] == (
        "needs-relink"
    )

    # Still needs relinking: no second event, whatever is run.
    assert project.reconcile("token", "web").code == 1
    assert project.reconcile("apply", "--no-link").code == 2
    assert len(hook.named("needs-relink")) == 1
    assert all(a["status"] == 204 for a in hook.attempts)

    link_in_process(project, "web")
    hook.wait_for(lambda: hook.named("recovered"), "the recovered event")
    assert [e["event"] for e in hook.events] == ["linked", "needs-relink", "recovered"]
    assert len({e["delivery"] for e in hook.events}) == 3


def test_a_failing_receiver_gets_the_event_on_a_retry(project, auth_server, receiver):
    hook = receiver(fail_first=2)
    auth_server.add_client("robot", CLIENT_SECRET)
    write_config(
        project, auth_server, hook.url, {"robot": ("robot", {"flow": "client_credentials"})}
    )

    applied = project.reconcile("apply")
    assert applied.code == 0, applied.stderr
    assert (project.store / "robot.sops.yaml").exists()
    assert [a["status"] for a in hook.attempts] == [500, 500, 204]
    assert len({a["headers"]["x-reconciler-delivery"] for a in hook.attempts}) == 1
    ((event),) = hook.events
    assert (event["event"], event["grant"]) == ("linked", "robot")
    assert "retrying" in applied.stderr


def test_an_unreachable_webhook_does_not_fail_the_apply(project, auth_server):
    auth_server.add_client("robot", CLIENT_SECRET)
    webhook = f"http://127.0.0.1:{closed_port()}/hook"
    write_config(
        project, auth_server, webhook, {"robot": ("robot", {"flow": "client_credentials"})}
    )

    started = time.monotonic()
    applied = project.reconcile("apply")
    elapsed = time.monotonic() - started
    assert applied.code == 0, applied.stderr
    assert (project.store / "robot.sops.yaml").exists()
    assert "notify:" in applied.stderr and "not delivered" in applied.stderr
    assert elapsed < notify.FLUSH_AT_EXIT + 15  # bounded wait at exit, not the whole backoff
    assert KEY not in applied.stderr and webhook not in applied.stderr.replace("127.0.0.1:", "")


def test_a_rejected_signature_is_not_retried(project, auth_server, receiver):
    hook = receiver(key="a-different-key-on-the-receiver")
    auth_server.add_client("robot", CLIENT_SECRET)
    write_config(
        project, auth_server, hook.url, {"robot": ("robot", {"flow": "client_credentials"})}
    )
    applied = project.reconcile("apply")
    assert applied.code == 0, applied.stderr
    assert [a["status"] for a in hook.attempts] == [401]
    assert "giving up" in applied.stderr


# --- the format, in process ----------------------------------------------------------------


def desired(tmp_path: Path, webhook: str, secret_ref: str | None) -> Desired:
    return Desired(
        path=tmp_path / "providers.yaml",
        store_dir=tmp_path / "secrets",
        recipients={},
        refresh_before=__import__("datetime").timedelta(minutes=5),
        keepalive=__import__("datetime").timedelta(days=7),
        providers={},
        secrets={},
        notify=Notify(webhook=webhook, secret_ref=secret_ref),
    )


def test_sign_and_verify():
    body = notify.body_for("linked", "github", datetime(2025, 6, 1, 12, tzinfo=UTC))
    assert json.loads(body) == {"event": "linked", "grant": "github", "at": "2025-06-01T12:00:00Z"}
    key = b"k" * 32
    signature = notify.sign(key, 1_750_000_000, body)
    expected = hmac.new(key, b"1750000000." + body, hashlib.sha256).hexdigest()
    assert signature == "sha256=" + expected
    assert notify.verify(key, body, "1750000000", signature, now=1_750_000_100)
    assert not notify.verify(key, body + b" ", "1750000000", signature, now=1_750_000_100)
    assert not notify.verify(key, body, "1750000001", signature, now=1_750_000_100)
    assert not notify.verify(b"x" * 32, body, "1750000000", signature, now=1_750_000_100)
    assert not notify.verify(key, body, "1750000000", signature, now=1_750_000_000 + 301)
    assert not notify.verify(key, body, None, signature)


def test_needs_relink_carries_its_reason():
    body = notify.body_for("needs-relink", "x", datetime(2025, 6, 1, tzinfo=UTC), "revoked")
    assert json.loads(body)["reason"] == "revoked"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/x", True),
        ("http://127.0.0.1:8080/x", True),
        ("http://localhost/x", True),
        ("http://[::1]:9/x", True),
        ("http://hooks.example.com/x", False),
        ("ftp://hooks.example.com/x", False),
    ],
)
def test_webhooks_must_be_https_except_on_loopback(url, allowed):
    assert notify.allowed_webhook(url) is allowed


def test_an_unsigned_webhook_has_no_signature(tmp_path, receiver):
    hook = receiver()
    notify.emit(desired(tmp_path, hook.url, None), "linked", "svc")
    assert notify.flush(10)
    (attempt,) = hook.attempts
    assert "x-reconciler-signature" not in attempt["headers"]
    assert attempt["status"] == 401  # this receiver insists on a signature


def test_an_unresolvable_secret_sends_nothing_and_does_not_raise(tmp_path, receiver, caplog):
    hook = receiver()
    notify.emit(desired(tmp_path, hook.url, "env:NOT_SET_ANYWHERE_42"), "linked", "svc", environ={})
    assert notify.flush(10)
    assert hook.attempts == []
    assert "NOT_SET_ANYWHERE_42" in caplog.text


def test_no_notify_section_is_a_no_op(tmp_path, receiver, caplog):
    hook = receiver()
    configured = desired(tmp_path, hook.url, None)
    caplog.set_level(logging.DEBUG, logger="reconciler")
    notify.emit(replace(configured, notify=None), "linked", "svc")
    assert notify.flush(10)
    assert hook.attempts == [] and caplog.records == []  # nothing sent, nothing to report
    # The same event with the section declared does reach the receiver.
    notify.emit(configured, "linked", "svc")
    assert notify.flush(10)
    assert [json.loads(a["body"])["grant"] for a in hook.attempts] == ["svc"]
