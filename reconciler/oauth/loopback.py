"""The loopback redirect for the CLI (RFC 8252 §7.3, §8.3): a one-shot HTTP server on the
loopback interface receives the authorization response of RFC 6749 §4.1.2.

``run_loopback_flow`` runs the whole flow: the system browser is opened without blocking it,
the answer is checked and the code exchanged by ``authorize.finish_link`` (``state``, RFC 9207
``iss``, RFC 7636 verifier), and the browser gets a small result page. A request that does not
carry the attempt's ``state`` is not the answer (a stray tab, a forged link): it gets an error
page and the flow keeps waiting for the real one. A redirect URL the user pastes (a browser on
another machine) finishes the link as the callback would.
"""

from __future__ import annotations

import hmac
import html
import logging
import queue
import socket
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from ..model import Provider, Secret
from .authorize import (
    PendingLink,
    finish_link,
    params_from_redirect_url,
    start_link,
)
from .endpoints import CALLBACK_PATH, LOOPBACK_HOSTS
from .errors import LinkTimeout, OAuthError
from .tokens import Now, TokenResult

log = logging.getLogger(__name__)

#: How long the browser's callback request waits for the code exchange before showing a page.
PAGE_WAIT = 60.0
PAGE_SENT_WAIT = 5.0
STRAY_CALLBACK = (
    "This answer does not belong to the link attempt in progress (its state does not match), "
    "so it was ignored. Finish the sign-in in the tab the reconciler opened."
)


def _carries_state(params: Mapping[str, list[str]], pending: PendingLink) -> bool:
    """Whether callback ``params`` carry exactly this attempt's ``state``."""
    values = params.get("state") or []
    return len(values) == 1 and hmac.compare_digest(
        values[0].encode("utf-8", "surrogateescape"), pending.state.encode()
    )


@dataclass
class _Callback:
    params: dict[str, list[str]]
    done: threading.Event = field(default_factory=threading.Event)
    sent: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    message: str = ""
    #: Pasted by the user (a wrong state then fails the link) rather than sent by a browser.
    pasted: bool = False

    def reply(self, ok: bool, message: str) -> None:
        self.ok, self.message = ok, message
        self.done.set()


class _CallbackServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], family: int, path: str, grant: str) -> None:
        self.address_family = family
        self.expected_path = path
        self.expected_host: str | None = None
        self.grant = grant
        self.callbacks: queue.Queue[_Callback] = queue.Queue()
        self.finished = threading.Event()
        super().__init__(address, _CallbackHandler)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}}
h1{{font-size:1.3rem}}</style></head>
<body><h1>{title}</h1><p>{body}</p></body></html>
"""


class _CallbackHandler(BaseHTTPRequestHandler):
    server: _CallbackServer
    protocol_version = "HTTP/1.1"
    server_version = "oauth-reconciler"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        # The request line holds the authorization code: never log it.
        pass

    def _page(self, status: int, title: str, body: str) -> None:
        content = _PAGE.format(title=html.escape(title), body=html.escape(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(content)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        host = (self.headers.get("Host") or "").lower()
        if parts.path != self.server.expected_path or (
            self.server.expected_host and host != self.server.expected_host
        ):
            self._page(404, "Not found", "This is the oauth-reconciler link callback.")
            return
        if self.server.finished.is_set():
            self._page(409, "Link already finished", "This link attempt is over; close this tab.")
            return
        callback = _Callback(parse_qs(parts.query, keep_blank_values=True))
        self.server.callbacks.put(callback)
        grant = self.server.grant
        try:
            if not callback.done.wait(PAGE_WAIT):
                self._page(
                    504,
                    f"Linking {grant}: still working",
                    "Return to the terminal to see the result.",
                )
            elif callback.ok:
                self._page(
                    200, f"Linked {grant}", "You can close this tab and return to the terminal."
                )
            else:
                self._page(400, f"Linking {grant} failed", callback.message)
        finally:
            callback.sent.set()

    def do_POST(self) -> None:
        self._page(405, "Method not allowed", "This is the oauth-reconciler link callback.")


def _loopback_redirect(provider: Provider) -> tuple[str, int, int, str, str]:
    """(bind address, port, family, path, redirect URI template with ``{port}``)."""
    if not provider.redirect_uri:
        return (
            "127.0.0.1",
            0,
            socket.AF_INET,
            CALLBACK_PATH,
            "http://127.0.0.1:{port}" + CALLBACK_PATH,
        )
    parts = urlsplit(provider.redirect_uri)
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or host not in LOOPBACK_HOSTS:
        raise OAuthError(
            f"{provider.name}: redirect_uri {provider.redirect_uri} is not a loopback http URL, "
            "so this program cannot receive the browser's redirect. Use the device flow "
            "(`--device`), paste the redirect URL, or register "
            f"http://127.0.0.1{CALLBACK_PATH} at the provider.",
            error="invalid_redirect_uri",
            provider=provider.name,
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{provider.name}: redirect_uri must not have a query or fragment")
    family, bind = (socket.AF_INET6, "::1") if host == "::1" else (socket.AF_INET, "127.0.0.1")
    netloc_host = "[::1]" if host == "::1" else host
    template = urlunsplit(("http", netloc_host + ":{port}", parts.path or "/", "", ""))
    return bind, parts.port or 0, family, parts.path or "/", template


def system_browser(url: str) -> None:
    """Open ``url`` in the system browser (honours ``$BROWSER``); raise if none is available."""
    if not webbrowser.open(url, new=1, autoraise=True):
        raise RuntimeError("no browser available")


def _print_url(url: str) -> None:
    print(f"Open this URL in a browser to continue:\n\n  {url}\n", file=sys.stderr, flush=True)


def run_loopback_flow(
    provider: Provider,
    client_secret: Secret | None,
    scopes: Sequence[str] | None = None,
    *,
    open_browser: Callable[[str], None] | None,
    timeout: float = 300.0,
    now: Now = None,
    show_url: Callable[[str], None] | None = None,
    extra_params: Mapping[str, str] | None = None,
    read_pasted: Callable[[], str | None] | None = None,
) -> TokenResult:
    """Run the authorization code flow through a loopback redirect and return the tokens.

    ``read_pasted`` (optional) returns a line the user pasted, or None at end of input: the
    fallback for a browser on another machine, which cannot reach the loopback server. The
    first valid redirect URL pasted finishes the link as the callback would.

    ``open_browser(url)`` is called in a background thread (a browser launcher may block); when
    it is None or fails, ``show_url(url)`` is called instead (default: print to stderr).
    Raises ``LinkTimeout`` when no callback arrives within ``timeout`` seconds,
    ``AccessDenied`` on refusal, ``OAuthError`` on a state/iss mismatch or another error.
    """
    name = provider.name
    bind, port, family, path, template = _loopback_redirect(provider)
    try:
        server = _CallbackServer((bind, port), family, path, name)
    except OSError as exc:
        raise OAuthError(
            f"{name}: cannot listen on {bind}:{port} for the browser's redirect ({exc.strerror}). "
            "Free the port, or let the reconciler pick one (remove the port from redirect_uri).",
            error="loopback_unavailable",
            provider=name,
        ) from None
    redirect_uri = template.format(port=server.server_address[1])
    server.expected_host = urlsplit(redirect_uri).netloc.lower()
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"link-{name}",
        daemon=True,
    )
    thread.start()
    try:
        pending = start_link(
            provider,
            scopes,
            redirect_uri,
            client_secret=client_secret,
            extra_params=extra_params,
            now=now,
        )
        url = pending.authorization_url
        fallback = show_url or _print_url

        def launch() -> None:
            if open_browser is None:
                fallback(url)
                return
            try:
                open_browser(url)
            except Exception as exc:
                log.warning("%s: could not open a browser (%s)", name, type(exc).__name__)
                fallback(url)

        threading.Thread(target=launch, name=f"browser-{name}", daemon=True).start()
        if read_pasted is not None:

            def paste() -> None:
                while (line := read_pasted()) is not None:
                    if not line.strip():
                        continue
                    try:
                        params = params_from_redirect_url(line, pending)
                    except OAuthError as exc:
                        fallback(str(exc))
                        continue
                    pasted = _Callback(params, pasted=True)
                    pasted.sent.set()  # no browser waits for a page
                    server.callbacks.put(pasted)
                    return

            threading.Thread(target=paste, name=f"paste-{name}", daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                callback = server.callbacks.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise LinkTimeout(
                    f"{name}: no answer from the browser within {timeout:g} s, so the link was "
                    "abandoned and nothing was stored. Run it again and finish the sign-in "
                    "sooner, or use the device flow (`--device`).",
                    error="timeout",
                    provider=name,
                ) from None
            if callback.pasted or _carries_state(callback.params, pending):
                break
            log.warning("%s: ignored a browser request with a wrong state; still waiting", name)
            callback.reply(False, STRAY_CALLBACK)
        ok, message = False, "The link failed; see the terminal for details."
        try:
            result = finish_link(pending, callback.params, now=now)
            ok, message = True, ""
            return result
        except OAuthError as exc:
            message = str(exc)
            raise
        finally:
            callback.reply(ok, message)
            callback.sent.wait(PAGE_SENT_WAIT)  # let the browser get its page before we return
    finally:
        server.finished.set()
        server.shutdown()
        server.server_close()
