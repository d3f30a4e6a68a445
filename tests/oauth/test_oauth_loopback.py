"""The loopback redirect server: the whole code flow for the CLI, its pages, and the browser."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest

from reconciler.model import Secret
from reconciler.oauth import loopback
from reconciler.oauth.endpoints import CALLBACK_PATH
from reconciler.oauth.errors import AccessDenied, LinkTimeout, OAuthError
from reconciler.oauth.loopback import run_loopback_flow

NOW = datetime(2025, 3, 1, tzinfo=UTC)


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# --- loopback server -----------------------------------------------------------------------


class FakeAuthorizationServer:
    """Plays both the authorization server's redirect and the browser, without an AS: reads
    the authorization URL and requests the callback the way the redirect would."""

    def __init__(
        self, extra: dict | None = None, first: str | None = None, stray: dict | None = None
    ) -> None:
        self.extra = extra or {}
        self.first = first
        self.stray = stray  # a query sent to the callback before the real answer
        self.responses: list[httpx2.Response] = []
        self.done = threading.Event()

    def __call__(self, url: str) -> None:
        params = {k: v[0] for k, v in query(url).items()}
        redirect = params["redirect_uri"]
        try:
            with httpx2.Client(verify=False, timeout=10) as client:  # plain http on loopback
                if self.first:
                    self.responses.append(
                        client.get(urlsplit(redirect)._replace(path=self.first).geturl())
                    )
                if self.stray is not None:
                    self.responses.append(client.get(f"{redirect}?{urlencode(self.stray)}"))
                answer = {"code": "the-code", "state": params["state"], **self.extra}
                self.responses.append(client.get(f"{redirect}?{urlencode(answer)}"))
        finally:
            self.done.set()


def test_loopback_flow_receives_the_code_and_shows_a_page(stub, make_provider):
    stub.reply("POST", "/token", body={"access_token": "at", "expires_in": 60})
    browser = FakeAuthorizationServer(first="/favicon.ico")
    result = run_loopback_flow(
        make_provider(), Secret("sec"), open_browser=browser, timeout=10, now=NOW
    )
    assert result.access_token.reveal() == "at"
    assert browser.done.wait(5)
    not_found, page = browser.responses
    assert not_found.status_code == 404
    assert page.status_code == 200 and "Linked acme" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "the-code" not in page.text
    (request,) = stub.hits("/token")
    redirect = request.form["redirect_uri"]
    parts = urlsplit(redirect)
    assert parts.scheme == "http" and parts.hostname == "127.0.0.1"
    assert parts.port and parts.path == CALLBACK_PATH


def test_loopback_flow_failure_page_and_error(stub, make_provider):
    browser = FakeAuthorizationServer(extra={"error": "access_denied"})
    with pytest.raises(AccessDenied):
        run_loopback_flow(make_provider(), Secret("sec"), open_browser=browser, timeout=10)
    assert browser.done.wait(5)
    (page,) = browser.responses
    assert page.status_code == 400 and "failed" in page.text
    assert stub.hits("/token") == []


@pytest.mark.parametrize(
    "stray",
    [{"code": "forged-code", "state": "forged"}, {"error": "access_denied"}, {"code": "c"}],
    ids=["wrong state", "error without state", "code without state"],
)
def test_loopback_flow_ignores_a_wrong_state_and_waits(stub, make_provider, stray):
    stub.reply("POST", "/token", body={"access_token": "at"})
    browser = FakeAuthorizationServer(stray=stray)
    result = run_loopback_flow(make_provider(), Secret("sec"), open_browser=browser, timeout=10)
    assert result.access_token.reveal() == "at"
    assert browser.done.wait(5)
    ignored, page = browser.responses
    assert ignored.status_code == 400 and "does not belong" in ignored.text
    assert page.status_code == 200 and "Linked acme" in page.text
    (request,) = stub.hits("/token")
    assert request.form["code"] == "the-code"


def test_loopback_flow_with_a_fixed_redirect_uri(stub, make_provider):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stub.reply("POST", "/token", body={"access_token": "at"})
    fixed = f"http://localhost:{port}/oauth/link/callback"
    browser = FakeAuthorizationServer()
    run_loopback_flow(
        make_provider(redirect_uri=fixed), Secret("s"), open_browser=browser, timeout=10
    )
    assert stub.hits("/token")[0].form["redirect_uri"] == fixed


def test_loopback_flow_refuses_a_non_loopback_redirect(make_provider):
    provider = make_provider(redirect_uri="https://app.example.com/oauth/link/callback")
    with pytest.raises(OAuthError) as info:
        run_loopback_flow(provider, None, open_browser=None, timeout=1)
    assert info.value.error == "invalid_redirect_uri"


def test_loopback_flow_times_out(make_provider):
    shown: list[str] = []
    with pytest.raises(LinkTimeout) as info:
        run_loopback_flow(
            make_provider(), None, open_browser=None, timeout=0.3, show_url=shown.append
        )
    assert "acme" in str(info.value)
    assert len(shown) == 1 and shown[0].startswith("http://127.0.0.1:")


def test_browser_failure_falls_back_to_showing_the_url(stub, make_provider):
    shown: list[str] = []

    def broken(url: str) -> None:
        raise RuntimeError("no display")

    with pytest.raises(LinkTimeout):
        run_loopback_flow(
            make_provider(), None, open_browser=broken, timeout=0.3, show_url=shown.append
        )
    assert len(shown) == 1 and "code_challenge=" in shown[0]


def test_system_browser_uses_webbrowser(monkeypatch):
    import webbrowser

    opened = []
    monkeypatch.setattr(
        webbrowser, "open", lambda url, new=0, autoraise=True: opened.append(url) or True
    )
    loopback.system_browser("https://example.com/a")
    assert opened == ["https://example.com/a"]
    monkeypatch.setattr(webbrowser, "open", lambda url, new=0, autoraise=True: False)
    with pytest.raises(RuntimeError):
        loopback.system_browser("https://example.com/a")
