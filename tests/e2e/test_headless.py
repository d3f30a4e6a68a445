"""Headless machines: no `$BROWSER`, no `$DISPLAY`, often no terminal (cron, CI).

Every test here runs the real CLI against the test authorization server with `$BROWSER`
removed, so Python's ``webbrowser`` finds no browser at all."""

from __future__ import annotations

import signal
import time

import pytest

from .cli_support import approve_at_the_server, record_device_polls, scaled_device_clock


@pytest.fixture
def headless(e2e):
    e2e.env.pop("BROWSER")
    e2e.env.pop("DISPLAY", None)
    return e2e


@pytest.mark.parametrize("how", [["link", "tv", "--device"], ["apply"]])
def test_device_flow_without_a_browser_shows_the_code_and_a_countdown(headless, how):
    """`link --device`, and `apply` of a grant declared `flow: device_code`, on a machine with
    no browser: the code, both verification addresses and the time left are shown, and the
    flow finishes once the user approves on another device."""
    e2e = headless
    auth = e2e.auth
    env = scaled_device_clock(e2e)
    auth.device_interval = 1
    auth.device_expires_in = 150  # 7.5 s on the scaled clock
    auth.device_consent = None
    polls = record_device_polls(auth)
    client = auth.add_client("tv-app")
    e2e.declare("tv", client, flow=None if how[0] == "link" else "device_code")
    e2e.write_config()

    # `apply` needs a person: a terminal on stdin or a browser. `--device` says one is there.
    running = e2e.watch(*how, *([] if how[0] == "link" else ["--device"]), env=env)
    shown = running.expect(r"tv: open (\S+) and enter the code (\S+)")
    user_code = shown.group(2)
    assert shown.group(1) == auth.endpoint("/device")
    complete = running.expect(r"tv: or open (\S+) \(the code is filled in\)").group(1)
    assert complete == f"{auth.endpoint('/device')}?user_code={user_code}"
    running.expect(r"tv: waiting for approval; the code expires in 3 min")
    deadline = time.monotonic() + 10
    while not polls and time.monotonic() < deadline:
        time.sleep(0.01)
    running.expect(r"tv: waiting for approval; the code expires in 2 min")
    approve_at_the_server(e2e, user_code)
    ran = running.finish()
    assert ran.code == 0, ran
    assert "Traceback" not in ran.stderr and "RuntimeError" not in ran.stderr
    assert e2e.sops_decrypt("tv")["refresh_token"] == e2e.latest(client).refresh_token


def test_apply_with_no_terminal_and_no_browser_leaves_link_flows_pending(headless):
    """`reconcile apply </dev/null` in cron or CI: link flows (browser or device) are pending at
    once, exit 2 as with `--no-link`; client credentials and secrets are still written."""
    e2e = headless
    auth = e2e.auth
    e2e.declare("web", auth.add_client("web-app", "web-secret"))
    e2e.declare("tv", auth.add_client("tv-app"), flow="device_code")
    e2e.declare("robot", auth.add_client("robot-app", "robot-secret"), flow="client_credentials")
    e2e.config["secrets"] = {"api": {"value": "env:HEADLESS_API_KEY"}}
    e2e.env["HEADLESS_API_KEY"] = "key-0123456789abcdef"
    e2e.write_config()

    started = time.monotonic()
    ran = e2e.run("apply", timeout=30)
    assert time.monotonic() - started < 20, "a link flow waited for nobody"
    assert ran.code == 2, ran
    assert "no terminal and no browser" in ran.stderr
    for name in ("web", "tv"):
        assert f"{name}: link: pending" in ran.stderr, ran
        assert not e2e.grant_file(name).exists()
    assert "robot: link: done" in ran.stderr and "api: write-secret: done" in ran.stderr
    assert e2e.grant_file("robot").exists() and e2e.grant_file("api").exists()
    assert [
        r.path for r in auth.requests if r.path in ("/authorize", "/device_authorization")
    ] == []
    assert ran.stdout == "Apply: 2 done, 0 failed, 2 pending.\n"


def test_watch_with_no_terminal_and_no_browser_leaves_link_flows_pending(headless):
    """`reconcile --watch` as a service: no link flow blocks the loop waiting for nobody."""
    e2e = headless
    auth = e2e.auth
    e2e.declare("web", auth.add_client("web-app", "web-secret"))
    e2e.declare("robot", auth.add_client("robot-app", "robot-secret"), flow="client_credentials")
    e2e.write_config()

    watching = e2e.watch("--watch", "--link-timeout", "300")
    watching.expect("no terminal and no browser")
    watching.expect(r"web.*pending", timeout=20)
    watching.expect(r"robot.*done", timeout=20)
    watching.process.send_signal(signal.SIGINT)
    ran = watching.finish(timeout=20)
    assert ran.code == 0, ran
    assert not e2e.grant_file("web").exists() and e2e.grant_file("robot").exists()
    assert [r.path for r in auth.requests if r.path == "/authorize"] == []
