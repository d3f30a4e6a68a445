"""Browser link flows through `reconcile serve`: POST /v1/links, the first hop that binds the
browser, the real authorization server, the callback, the grant file, the return_url."""

from __future__ import annotations

from urllib.parse import parse_qs, urljoin, urlsplit

import pytest

from reconciler.vault.store import grant_path
from tests.e2e.authserver import replace_param
from tests.e2e.browser import ScriptedBrowser, http_client

from .support import CLIENT_SECRET, CONTROL_SECRET, decrypt

CALLBACK = "/oauth/link/callback"


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def token_calls(harness) -> int:
    return harness.auth_server.token_calls["authorization_code"]


def start(client, name: str = "demo", **body):
    response = client.post("/v1/links", json={"name": name, **body})
    assert response.status_code == 200, response.text
    return response.json()


def to_callback(url: str) -> tuple[ScriptedBrowser, str, dict[str, str]]:
    """Play the browser up to the provider's redirect to the callback, without following it:
    returns the browser, the callback URL and the cookies the first hop set."""
    browser = ScriptedBrowser(max_hops=2)
    with pytest.raises(RuntimeError, match="too many redirects"):
        browser.open(url)
    first, authorize = browser.pages
    assert first.status_code == 303 and authorize.status_code == 302
    callback = urljoin(browser.visited[-1], authorize.headers["location"])
    assert urlsplit(callback).path == CALLBACK
    return browser, callback, dict(first.cookies)


def visit(url: str, cookies: dict[str, str] | None = None):
    with http_client(follow_redirects=False, cookies=cookies or {}) as client:
        return client.get(url)


# --- the happy path --------------------------------------------------------------------------


def test_link_end_to_end_with_a_browser(serve, harness):
    server, client = serve
    return_url = server.url + "/composer/done?tab=links"
    started = start(client, return_url=return_url)
    authorize_url, state = started["authorize_url"], started["state"]
    assert authorize_url == f"{server.url}/oauth/link/start?state={state}"

    browser = ScriptedBrowser()
    browser.open(authorize_url)
    paths = [urlsplit(u).path for u in browser.visited]
    assert paths == ["/oauth/link/start", "/authorize", CALLBACK, "/composer/done"]

    first = browser.pages[0]
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/oauth/link" in cookie
    (authz,) = [r for r in harness.auth_server.requests if r.path == "/authorize"]
    assert authz.query["redirect_uri"] == [f"{server.url}{CALLBACK}"]
    assert authz.query["state"] == [state]
    assert authz.query["code_challenge_method"] == ["S256"]

    final = browser.visited[-1]
    assert final.startswith(server.url + "/composer/done?")
    assert query(final) == {"tab": ["links"], "oauth_status": ["ok"], "entry_id": ["demo"]}

    grant = decrypt(harness, "demo")
    assert grant.kind == "oauth2" and grant.status == "ok"
    assert grant.granted_scopes == ("read",) and grant.flow == "authorization_code"
    assert grant.refresh_token is not None and grant.access_token is not None
    token = grant.access_token.reveal()
    assert any(t.access_token == token for t in harness.auth_server.tokens)
    assert grant.client_secret is not None and grant.client_secret.reveal() == CLIENT_SECRET

    status = {row["name"]: row for row in client.get("/v1/status").json()["grants"]}
    assert status["demo"]["status"] == "ok" and status["demo"]["granted_scopes"] == ["read"]


def test_link_without_return_url_shows_a_result_page(serve, harness):
    _server, client = serve
    browser = ScriptedBrowser()
    browser.open(start(client)["authorize_url"])
    page = browser.final
    assert page.status_code == 200 and "Linked demo" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert decrypt(harness, "demo").status == "ok"


def test_extra_scopes_widen_the_link_but_never_narrow_it(serve, harness):
    _server, client = serve
    browser = ScriptedBrowser()
    browser.open(start(client, scopes=["write", "read"])["authorize_url"])
    assert browser.final.status_code == 200, browser.final.text
    assert decrypt(harness, "demo").granted_scopes == ("read", "write")
    (authz,) = [r for r in harness.auth_server.requests if r.path == "/authorize"]
    assert authz.query["scope"] == ["read write"]
    for scopes in ("read", ["read write"], [""], [1], ['a"b'], ["x"] * 65):
        response = client.post("/v1/links", json={"name": "demo", "scopes": scopes})
        assert response.status_code == 400, scopes


def test_a_provider_error_goes_back_to_return_url(serve, harness):
    server, client = serve
    harness.auth_server.consent = "deny"
    browser = ScriptedBrowser()
    browser.open(start(client, return_url=server.url + "/back")["authorize_url"])
    result = query(browser.visited[-1])
    assert result["oauth_status"] == ["error"] and result["entry_id"] == ["demo"]
    assert "denied" in result["oauth_error"][0]
    assert not grant_path(harness.project.store, "demo").exists()


# --- refusals --------------------------------------------------------------------------------


def test_state_mismatch_is_refused(serve, harness):
    server, client = serve
    started = start(client, return_url=server.url + "/back")

    def forge(url: str) -> str:
        if urlsplit(url).path == CALLBACK:
            return replace_param(url, "state", "forged-" + started["state"][7:])
        return url

    browser = ScriptedBrowser(tamper=forge)
    browser.open(started["authorize_url"])
    assert urlsplit(browser.visited[-1]).path == CALLBACK  # no redirect to return_url
    assert browser.final.status_code == 400 and "unknown" in browser.final.text
    assert token_calls(harness) == 0
    assert not grant_path(harness.project.store, "demo").exists()


def test_replayed_state_is_refused(serve, harness):
    server, client = serve
    _, callback, cookies = to_callback(
        start(client, return_url=server.url + "/back")["authorize_url"]
    )
    first = visit(callback, cookies)
    assert first.status_code == 303 and "oauth_status=ok" in first.headers["location"]
    assert token_calls(harness) == 1
    before = grant_path(harness.project.store, "demo").read_bytes()

    replay = visit(callback, cookies)
    assert replay.status_code == 400 and "already used" in replay.text
    assert token_calls(harness) == 1, "a replayed callback must not reach the token endpoint"
    assert grant_path(harness.project.store, "demo").read_bytes() == before


def test_callback_from_another_browser_is_refused(serve, harness):
    server, client = serve
    _, callback, cookies = to_callback(
        start(client, return_url=server.url + "/back")["authorize_url"]
    )
    (name,) = cookies
    for other in ({}, {name: "another-browsers-cookie-value-0123456789"}, {"unrelated": "1"}):
        refused = visit(callback, other)
        assert refused.status_code == 400 and "did not start" in refused.text
        assert "location" not in refused.headers
    assert token_calls(harness) == 0
    assert not grant_path(harness.project.store, "demo").exists()
    # The browser that started the link can still finish it.
    finished = visit(callback, cookies)
    assert finished.status_code == 303 and "oauth_status=ok" in finished.headers["location"]
    assert decrypt(harness, "demo").status == "ok"


def test_the_first_hop_binds_one_browser_only(serve, harness):
    server, client = serve
    url = start(client)["authorize_url"]
    with http_client(follow_redirects=False) as preview:  # a link preview must not bind it
        assert preview.head(url).status_code == 405
    first = visit(url)
    assert first.status_code == 303 and first.cookies
    second = visit(url)
    assert second.status_code == 409 and not second.cookies
    assert visit(server.url + "/oauth/link/start?state=nope").status_code == 400
    assert visit(server.url + "/oauth/link/start").status_code == 400


FOREIGN = [
    "http://127.0.0.1:4000.evil.com/cb",
    "http://user@127.0.0.1:4000/cb",
    "http://127.0.0.1:4000@evil.com/cb",
    "http://user:pw@127.0.0.1:4000/cb",
    "http://127.0.0.1:4000\\@evil.com/cb",
    "http://127.0.0.1:4001/cb",
    "https://127.0.0.1:4000/cb",
    "http://evil.com/cb",
    "http://127.0.0.1%2e:4000/cb",
    "http://127.0.0.1:4000%2eevil.com/cb",
    "//127.0.0.1:4000/cb",
    "/cb",
    "javascript:alert(1)//127.0.0.1:4000",
    "ftp://127.0.0.1:4000/cb",
    "data:text/html,hi",
    "http:/127.0.0.1:4000/cb",
    "http://127.0.0.1:4000 /cb",
    "http://localhost.:4000/cb",
    "http://xn--80ak6aa92e.com:4000/cb",
    ["http://127.0.0.1:4000/cb"],
    42,
]


def test_foreign_return_urls_are_refused(harness):
    server = harness.start(
        "--allow-origin", "http://127.0.0.1:4000",
        env={"RECONCILER_ALLOWED_ORIGINS": "https://composer.example, http://[::1]:5000"},
    )  # fmt: skip
    client = server.client(harness.local_secret())
    for url in FOREIGN:
        response = client.post("/v1/links", json={"name": "demo", "return_url": url})
        assert response.status_code == 400, url
        assert response.json()["error"] in ("invalid_return_url", "invalid_request"), url
    for url in (
        "http://127.0.0.1:4000/cb?x=1#frag",
        "http://127.0.0.1:4000",
        "HTTP://127.0.0.1:4000/cb",
        "https://composer.example/links",
        "https://composer.example:443/links",
        "http://[::1]:5000/",
        f"{server.url}/back",
        f"http://localhost:{server.port}/back",
    ):
        response = client.post("/v1/links", json={"name": "demo", "return_url": url})
        assert response.status_code == 200, (url, response.text)


def test_undeclared_names_are_404(serve, harness):
    _server, client = serve
    for name in ("nope", "openai", "../demo", "Demo", ""):
        response = client.post("/v1/links", json={"name": name})
        assert response.status_code == 404, name
        assert response.json()["error"] == "not_declared"
    assert client.post("/v1/links", json={}).status_code == 400
    machine = client.post("/v1/links", json={"name": "machine"})
    assert machine.status_code == 400 and machine.json()["error"] == "unsupported_flow"
    assert not harness.project.store.exists() or not any(harness.project.store.iterdir())


# --- expiry (the same app factory in a thread, with a fake clock) ----------------------------


def test_expired_state_is_refused_at_the_first_hop(threaded_serve, harness):
    client = threaded_serve.client
    url = start(client)["authorize_url"]
    threaded_serve.clock.advance(minutes=15, seconds=1)
    refused = visit(url)
    assert refused.status_code == 400 and "expired" in refused.text
    assert not refused.cookies


def test_expired_state_is_refused_at_the_callback(threaded_serve, harness):
    client = threaded_serve.client
    url = start(client, return_url=threaded_serve.url + "/back")["authorize_url"]
    threaded_serve.clock.advance(minutes=14)
    _, callback, cookies = to_callback(url)
    threaded_serve.clock.advance(minutes=1, seconds=1)
    refused = visit(callback, cookies)
    assert refused.status_code == 303
    result = query(refused.headers["location"])
    assert result["oauth_status"] == ["error"] and "expired" in result["oauth_error"][0]
    assert token_calls(harness) == 0
    assert not grant_path(harness.project.store, "demo").exists()
    assert visit(callback, cookies).status_code == 400  # and it is gone for good


def test_just_before_expiry_still_links(threaded_serve, harness):
    client = threaded_serve.client
    url = start(client)["authorize_url"]
    threaded_serve.clock.advance(minutes=14, seconds=59)
    browser = ScriptedBrowser()
    browser.open(url)
    assert browser.final.status_code == 200, browser.final.text
    assert decrypt(harness, "demo").status == "ok"


# --- the control plane's variant -------------------------------------------------------------


def test_internal_start_links_and_returns_to_the_composer(harness):
    server = harness.start(
        "--allow-origin", "https://composer.example",
        env={"RECONCILER_CONTROL_PLANE_SECRET": CONTROL_SECRET},
    )  # fmt: skip
    client = server.client(None)
    client.http.headers["x-control-plane-secret"] = CONTROL_SECRET
    response = client.post(
        "/internal/oauth-link/v1/start",
        json={"entry_id": "demo", "return_url": "https://composer.example/outbound?x=1"},
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"authorize_url"}
    _, callback, cookies = to_callback(response.json()["authorize_url"])
    done = visit(callback, cookies)
    assert done.status_code == 303
    location = done.headers["location"]
    assert location.startswith("https://composer.example/outbound?")
    assert query(location) == {"x": ["1"], "oauth_status": ["ok"], "entry_id": ["demo"]}
    assert decrypt(harness, "demo").status == "ok"

    for body, status in [
        ({"entry_id": "demo"}, 400),  # return_url is required here
        ({"entry_id": "nope", "return_url": "https://composer.example/"}, 404),
        ({"entry_id": "demo", "return_url": "https://composer.example.evil.com/"}, 400),
    ]:
        assert client.post("/internal/oauth-link/v1/start", json=body).status_code == status
