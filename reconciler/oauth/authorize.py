"""Authorization code flow with PKCE S256 for a native app (RFC 6749 §4.1, RFC 7636, RFC 8252).

- ``build_authorization_url``: the authorization request (Authlib's ``prepare_grant_uri``).
- ``start_link`` / ``finish_link``: the two halves, for callers that carry the pending state
  themselves (the HTTP surface of ``reconcile serve``).
- ``run_loopback_flow``: the whole flow for the CLI: a one-shot HTTP server on the loopback
  interface receives the redirect (RFC 8252 §7.3), the system browser is opened without blocking
  it, ``state`` (CSRF) and ``iss`` (RFC 9207 mix-up defence) are checked, the code is exchanged,
  and the browser gets a small result page. A request that does not carry the attempt's
  ``state`` is not the answer (a stray tab, a forged link): it gets an error page and the flow
  keeps waiting for the real one.
- ``finish_from_redirect_url``: the paste fallback for a browser that cannot reach the loopback
  server (another machine, a sandbox): the user pastes the URL the browser ended on.
"""

from __future__ import annotations

import hmac
import html
import logging
import queue
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from ..model import Provider, Secret
from . import quirks
from .endpoints import LOOPBACK_HOSTS, check_response_issuer, endpoint
from .errors import AccessDenied, LinkTimeout, OAuthError, describe, scrub
from .tokens import Now, TokenResult, exchange_code, join_scopes, resolve_now

log = logging.getLogger(__name__)

CALLBACK_PATH = "/oauth/link/callback"
#: Parameters the flow owns; ``authorization_params`` / ``extra_params`` cannot override them.
PROTECTED_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
    }
)
#: How long the browser's callback request waits for the code exchange before showing a page.
PAGE_WAIT = 60.0
PAGE_SENT_WAIT = 5.0
STRAY_CALLBACK = (
    "This answer does not belong to the link attempt in progress (its state does not match), "
    "so it was ignored. Finish the sign-in in the tab the reconciler opened."
)


# --- PKCE and state --------------------------------------------------------------------------


def new_code_verifier() -> Secret:
    """A fresh RFC 7636 §4.1 code verifier: 64 characters from the unreserved set."""
    from authlib.common.security import generate_token

    return Secret(generate_token(64))


def code_challenge(code_verifier: Secret | str) -> str:
    """``BASE64URL(SHA256(ASCII(code_verifier)))`` (RFC 7636 §4.2, method S256)."""
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    value = code_verifier.reveal() if isinstance(code_verifier, Secret) else code_verifier
    return create_s256_code_challenge(value)


def new_state() -> str:
    return secrets.token_urlsafe(32)


def build_authorization_url(
    provider: Provider,
    scopes: Sequence[str] | None,
    redirect_uri: str,
    state: str,
    code_challenge: str | None,
    extra_params: Mapping[str, str] | None = None,
) -> str:
    """The authorization request URL (RFC 6749 §4.1.1 + RFC 7636 §4.3, method S256).

    Parameters, lowest precedence first: ``provider.authorization_params``, ``extra_params``,
    quirk hooks, then the flow's own (``response_type``, ``client_id``, ``redirect_uri``,
    ``state``, ``code_challenge``), which nothing may override.
    """
    from authlib.oauth2.rfc6749.parameters import prepare_grant_uri

    url = endpoint(provider, "authorization_endpoint", "authorization endpoint")
    if not state:
        raise ValueError("state is required (RFC 6749 §10.12)")
    if provider.pkce and not code_challenge:
        raise ValueError(f"{provider.name}: PKCE is on, a code_challenge is required")
    scopes = tuple(provider.scopes if scopes is None else scopes)
    params: dict[str, str] = {}
    for source in (provider.authorization_params, extra_params or {}):
        for key, value in source.items():
            if key in PROTECTED_PARAMS:
                raise ValueError(f"{provider.name}: parameter {key!r} cannot be overridden")
            params[key] = str(value)
    if scopes:
        params["scope"] = join_scopes(provider, scopes)
    quirks.authorization_params(provider, scopes, params)
    if code_challenge:
        params["code_challenge"] = code_challenge
        params["code_challenge_method"] = "S256"
    scope = params.pop("scope", None)
    return prepare_grant_uri(
        url,
        client_id=provider.client_id,
        response_type="code",
        redirect_uri=redirect_uri,
        scope=scope,
        state=state,
        **params,
    )


# --- pending link, callback validation -------------------------------------------------------


@dataclass(frozen=True)
class PendingLink:
    """An authorization request in flight: what the callback needs to finish it."""

    provider: Provider
    scopes: tuple[str, ...]
    redirect_uri: str
    state: str = field(repr=False)
    code_verifier: Secret | None
    authorization_url: str = field(repr=False)
    client_secret: Secret | None = None
    created_at: datetime | None = None


def start_link(
    provider: Provider,
    scopes: Sequence[str] | None = None,
    redirect_uri: str | None = None,
    *,
    client_secret: Secret | None = None,
    extra_params: Mapping[str, str] | None = None,
    now: Now = None,
) -> PendingLink:
    """Create the state, PKCE verifier and authorization URL for one link attempt."""
    redirect_uri = redirect_uri or provider.redirect_uri
    if not redirect_uri:
        raise ValueError(f"{provider.name}: a redirect_uri is required")
    scopes = tuple(provider.scopes if scopes is None else scopes)
    state = new_state()
    verifier = new_code_verifier() if provider.pkce else None
    url = build_authorization_url(
        provider,
        scopes,
        redirect_uri,
        state,
        code_challenge(verifier) if verifier else None,
        extra_params,
    )
    return PendingLink(
        provider=provider,
        scopes=scopes,
        redirect_uri=redirect_uri,
        state=state,
        code_verifier=verifier,
        authorization_url=url,
        client_secret=client_secret,
        created_at=resolve_now(now),
    )


def _single_values(params: Mapping[str, Any], provider: Provider) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, list | tuple):
            if len(value) != 1:
                raise OAuthError(
                    f"{provider.name}: the authorization response repeats the parameter "
                    f"{key!r}, which is not allowed (RFC 6749 §3.1); it was rejected. Run the "
                    "link again.",
                    error="invalid_request",
                    provider=provider.name,
                )
            value = value[0]
        result[key] = str(value)
    return result


def validate_callback(params: Mapping[str, Any], pending: PendingLink) -> str:
    """Check an authorization response (RFC 6749 §4.1.2) and return the code.

    Order: ``state`` first (a response that does not carry this attempt's state is not ours,
    whatever it says), then ``iss`` (RFC 9207), then ``error``, then ``code``.
    """
    provider = pending.provider
    name = provider.name
    params = _single_values(params, provider)
    state = params.get("state", "")
    if not hmac.compare_digest(state.encode(), pending.state.encode()):
        raise OAuthError(
            f"{name}: the authorization response does not carry the state of this link attempt "
            "(missing or mismatched `state`, RFC 6749 §10.12), so it was rejected as a possible "
            "cross-site request forgery. Nothing was stored; run the link again from a single "
            "browser tab.",
            error="state_mismatch",
            provider=name,
        )
    check_response_issuer(provider, params.get("iss"))
    error = params.get("error")
    if error:
        description = scrub(params.get("error_description"))
        error = scrub(error) or "server_error"
        if error == "access_denied":
            raise AccessDenied(
                f"{name}: the authorization was denied at the provider "
                f"({describe(error, description)}). Nothing was stored; run the link again and "
                "approve the request.",
                error=error,
                description=description,
                provider=name,
            )
        raise OAuthError(
            f"{name}: the provider refused the authorization request "
            f"({describe(error, description)}). Check the client ID, the redirect URI "
            f"registered at the provider ({pending.redirect_uri}) and the scopes, then run the "
            "link again.",
            error=error,
            description=description,
            provider=name,
        )
    code = params.get("code", "")
    if not code.strip():
        raise OAuthError(
            f"{name}: the authorization response has no code; nothing was stored. Run the link "
            "again.",
            error="invalid_request",
            provider=name,
        )
    return code


def _carries_state(params: Mapping[str, list[str]], pending: PendingLink) -> bool:
    """Whether callback ``params`` carry exactly this attempt's ``state``."""
    values = params.get("state") or []
    return len(values) == 1 and hmac.compare_digest(
        values[0].encode("utf-8", "surrogateescape"), pending.state.encode()
    )


def finish_link(pending: PendingLink, params: Mapping[str, Any], *, now: Now = None) -> TokenResult:
    """Validate the callback parameters and exchange the code."""
    code = validate_callback(params, pending)
    return exchange_code(
        pending.provider,
        pending.client_secret,
        Secret(code),
        pending.redirect_uri,
        pending.code_verifier,
        now=now,
    )


def _origin_and_path(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    return (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port, parts.path or "/")


def finish_from_redirect_url(url: str, pending: PendingLink, *, now: Now = None) -> TokenResult:
    """Paste fallback: finish a link from the full URL the browser was redirected to."""
    return finish_link(pending, params_from_redirect_url(url, pending), now=now)


def params_from_redirect_url(url: str, pending: PendingLink) -> dict[str, list[str]]:
    """The callback parameters of a pasted redirect URL, checked against the link attempt."""
    name = pending.provider.name
    url = url.strip()
    if _origin_and_path(url) != _origin_and_path(pending.redirect_uri):
        raise OAuthError(
            f"{name}: the pasted URL does not start with the redirect URI of this link attempt "
            f"({pending.redirect_uri}). Paste the whole address from the browser's address bar "
            "after approving.",
            error="redirect_mismatch",
            provider=name,
        )
    parts = urlsplit(url)
    if parts.fragment and not parts.query:
        raise OAuthError(
            f"{name}: the pasted URL carries its answer in the fragment, which the "
            "authorization code flow never does; it was rejected. Run the link again.",
            error="invalid_request",
            provider=name,
        )
    return parse_qs(parts.query, keep_blank_values=True)


# --- loopback server -------------------------------------------------------------------------


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
    import socket

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
    import webbrowser

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
