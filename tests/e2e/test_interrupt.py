"""Ctrl-C while a link flow waits for the browser."""

from __future__ import annotations

import signal


def test_ctrl_c_during_a_link_exits_130_and_writes_nothing(e2e):
    e2e.declare("slow", e2e.auth.add_client("slow-app", "slow-secret"))
    e2e.write_config()
    running = e2e.watch("link", "slow", env={"E2E_BROWSER_MODE": "ignore"})
    running.expect(r"slow: waiting up to 300 s for the browser")
    e2e.visits(1)  # the browser was opened: the flow now waits for it
    running.process.send_signal(signal.SIGINT)
    ran = running.finish(timeout=20)
    assert ran.code == 130, ran
    assert ran.stderr.splitlines()[-1] == "error: interrupted", ran
    assert "Traceback" not in ran.stderr
    assert not e2e.store.exists() or list(e2e.store.iterdir()) == []
