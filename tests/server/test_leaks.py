"""No secret value reaches the server's output or a response: every test's teardown scans
(``conftest.LeakWatch``); this one drives every route, failures included, and checks the scan
itself can fail."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.browser import ScriptedBrowser

from .support import CLIENT_SECRET, CONTROL_SECRET, PUT_VALUE, LeakWatch, approve, poll

WRONG_SECRET = "wrong-client-secret-5e4d3c2b1a09"


def test_nothing_secret_is_printed_or_answered(harness):
    auth_server = harness.auth_server
    server = harness.start(env={"RECONCILER_CONTROL_PLANE_SECRET": CONTROL_SECRET})
    client = server.client(harness.local_secret())
    # A browser link, a device link, a secret, the status, refusals.
    browser = ScriptedBrowser()
    browser.open(client.post("/v1/links", json={"name": "demo"}).json()["authorize_url"])
    assert browser.final.status_code == 200
    auth_server.device_consent = None
    started = client.post("/v1/links/device", json={"name": "gadget"}).json()
    approve(auth_server, started)
    assert poll(client, started)["poll_status"] == "completed"
    assert client.put("/v1/secrets/openai", json={"value": PUT_VALUE}).status_code == 204
    assert client.get("/v1/status").status_code == 200
    assert client.get("/v1/status", token=CONTROL_SECRET).status_code == 401
    assert client.get("/v1/status", token=PUT_VALUE).status_code == 401
    internal = server.client(None)
    response = internal.post(
        "/internal/outbound-secrets/v1/put",
        json={"key": "openai", "value": PUT_VALUE},
        headers={"x-control-plane-secret": harness.local_secret()},
    )
    assert response.status_code == 401
    # The callback's query (code, state) is never logged.
    replay = next(u for u in browser.visited if "/oauth/link/callback" in u)
    with_cookie = ScriptedBrowser()
    with_cookie.open(replay)
    assert with_cookie.final.status_code == 400
    server.stop()
    assert auth_server.tokens, "the scan needs issued tokens to look for"
    issued = harness.watch.issued()
    for secret in issued | {CLIENT_SECRET, PUT_VALUE, harness.local_secret()}:
        assert secret not in server.output
    code = parse_qs(urlsplit(replay).query)["code"][0]
    assert code in issued


def test_a_wrong_client_secret_is_reported_without_it(harness):
    harness.watch.secrets.add(WRONG_SECRET)
    server = harness.start(env={"DEMO_CLIENT_SECRET": WRONG_SECRET})
    client = server.client(harness.local_secret())
    started = client.post("/v1/links", json={"name": "demo", "return_url": server.url + "/r"})
    browser = ScriptedBrowser()
    browser.open(started.json()["authorize_url"])
    result = parse_qs(urlsplit(browser.visited[-1]).query)
    assert result["oauth_status"] == ["error"]
    assert WRONG_SECRET not in result["oauth_error"][0]
    response = client.post("/v1/links/device", json={"name": "gadget"})
    assert response.status_code >= 400 and WRONG_SECRET not in response.text


def test_the_scan_can_fail(auth_server):
    watch = LeakWatch(auth_server)
    watch.texts.append(("output", f"started with {CONTROL_SECRET}"))
    with pytest.raises(AssertionError, match="leaked"):
        watch.check()
