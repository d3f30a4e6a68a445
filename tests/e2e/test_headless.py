"""Headless machines: no `$BROWSER`, no `$DISPLAY`, often no terminal (cron, CI).

Every test here runs the real CLI against the test authorization server with `$BROWSER`
removed, so Python's ``webbrowser`` finds no browser at all."""

from __future__ import annotations

import time

import pytest

from . import cli_support
from .test_cli_oauth import approve_at_the_server, record_device_polls, scaled_device_clock

e2e = cli_support.e2e  # the fixture


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
