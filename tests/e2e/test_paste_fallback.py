"""The paste fallback of the loopback flow: the browser runs where it cannot reach the
loopback server, so the user pastes the address it ended on into the terminal."""

from __future__ import annotations

import queue

import pytest

from reconciler.oauth.errors import OAuthError
from reconciler.oauth.loopback import run_loopback_flow

from .browser import ScriptedBrowser


def remote_browser(auth_server, *, edit=lambda url: url):
    """A browser on another machine: it follows the provider's redirects but never reaches
    127.0.0.1; the address it ends on is handed to ``read_pasted``, as the user would paste."""
    pasted: queue.Queue[str | None] = queue.Queue()

    def stop_at_callback(target: str) -> str:
        if target.startswith("http://127.0.0.1") and "/oauth/link/callback" in target:
            pasted.put(edit(target))
            return auth_server.endpoint("/nowhere")  # the loopback is unreachable from there
        return target

    def read_pasted() -> str | None:
        return pasted.get(timeout=20)

    return ScriptedBrowser(tamper=stop_at_callback), read_pasted


def test_a_pasted_redirect_url_finishes_the_link(auth_server, public_client):
    provider = auth_server.provider(public_client)
    browser, read_pasted = remote_browser(auth_server)
    result = run_loopback_flow(
        provider, None, open_browser=browser, timeout=20, read_pasted=read_pasted
    )
    assert result.access_token.reveal()
    assert auth_server.token_calls == {"authorization_code": 1}


def test_a_pasted_url_with_a_forged_state_is_refused(auth_server, public_client):
    provider = auth_server.provider(public_client)
    forged = lambda url: url.replace("state=", "state=forged")  # noqa: E731
    browser, read_pasted = remote_browser(auth_server, edit=forged)
    with pytest.raises(OAuthError) as raised:
        run_loopback_flow(provider, None, open_browser=browser, timeout=20, read_pasted=read_pasted)
    assert "state" in str(raised.value)
    assert auth_server.token_calls == {}


def test_a_pasted_url_for_another_redirect_is_ignored_until_the_right_one(
    auth_server, public_client
):
    provider = auth_server.provider(public_client)
    browser, read_right = remote_browser(auth_server)
    lines = iter(["", "https://evil.example/oauth/link/callback?code=x&state=y"])
    shown: list[str] = []

    def read_pasted() -> str | None:
        line = next(lines, None)
        return read_right() if line is None else line

    result = run_loopback_flow(
        provider,
        None,
        open_browser=browser,
        timeout=20,
        read_pasted=read_pasted,
        show_url=shown.append,
    )
    assert result.access_token.reveal()
    assert any("does not start with the redirect URI" in line for line in shown), shown
