"""The refresh rule end to end: a token that lives less than ``refresh_before`` is not
refreshed on every read (due once the time left is under half its lifetime)."""

from __future__ import annotations

import json
import time


def test_a_60s_token_with_the_default_margin_is_not_refreshed_on_every_read(e2e):
    e2e.refresh_before = "5m"  # the default margin, longer than the token's whole life
    e2e.auth.token_lifetime = 60
    client = e2e.auth.add_client("short-app", "short-secret-0123456789")
    e2e.declare("short", client)
    e2e.write_config()
    started = time.monotonic()
    assert e2e.run("apply").code == 0
    linked = e2e.latest(client)

    assert e2e.run("plan", "--exit-code").code == 0, "nothing is due right after apply"
    (row,) = json.loads(e2e.run("status", "-o", "json").stdout)["grants"]
    assert row["status"] == "ok"
    for _ in range(20):
        ran = e2e.run("token", "short")
        assert ran.code == 0, ran
        assert ran.stdout == linked.access_token + "\n"
    assert time.monotonic() - started < 30, "the reads must fall in the first half-life"
    assert e2e.token_calls("refresh_token") == 0
