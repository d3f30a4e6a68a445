"""HTTP exchanges with a provider's endpoints: one kept-alive client per thread over one
TLS context per process, short timeouts, an overall deadline per exchange
(``Provider.request_deadline``, see ``deadline``), answers capped at ``MAX_RESPONSE_BYTES``,
no redirects followed (RFC 9700 §4.11), and the answers every endpoint reads alike (bodies that
are JSON or form-encoded, 429 and 5xx with their ``Retry-After``).

Importing this module is cheap: httpx2 is imported inside the functions.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from ..model import Provider
from . import deadline
from .errors import OAuthError, TransientError, scrub

if TYPE_CHECKING:
    import ssl

    import httpx2

#: Seconds to establish a connection / for each read or write. Token endpoints answer fast; a
#: hung endpoint must not hang ``reconcile`` or a runtime ``token()`` call. The exchange as a
#: whole is bounded by the provider's ``request_deadline``.
CONNECT_TIMEOUT = 5.0
TIMEOUT = 15.0
#: No endpoint answer is read past this size: token, device and metadata documents are small.
MAX_RESPONSE_BYTES = 1024 * 1024
USER_AGENT = "oauth-reconciler/0.1 (+https://datatracker.ietf.org/doc/html/rfc6749)"


def retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime  # ~10 ms; an HTTP-date is rare here

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


#: One client per thread, kept for the life of the thread: its connections stay open between
#: requests (apply's refresh workers make hundreds against one token endpoint).
_local = threading.local()
#: One TLS context per process, shared by those clients (see ``tls_context``).
_tls: ssl.SSLContext | None = None
_tls_lock = threading.Lock()
#: The ALPN protocols httpcore2 sets on the context for each connection (HTTP/2 is off).
ALPN = ("http/1.1",)


def http_client() -> httpx2.Client:
    """This thread's client: never follows redirects, keeps no cookies (``send`` gives each
    request its timeouts)."""
    client = getattr(_local, "client", None)
    if client is None:
        # httpx2 is heavy (and loads http.cookiejar); only a request to an endpoint needs one.
        from http.cookiejar import CookieJar, DefaultCookiePolicy

        import httpx2

        client = _local.client = httpx2.Client(
            follow_redirects=False,
            verify=tls_context(),
            headers={"User-Agent": USER_AGENT},
            # No state from one provider's answer may ride along on the next request.
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
        )
        for transport in (client._transport, *client._mounts.values()):
            pool = getattr(transport, "_pool", None)
            if pool is not None:  # every socket operation honours ``deadline.within``
                pool._network_backend = deadline.wrap_backend(pool._network_backend)
    return client


def tls_context() -> ssl.SSLContext:
    """The process's TLS context, built once: loading the CA certificates is the costly part
    (~70 ms on a small machine, per context).

    httpcore2 calls ``set_alpn_protocols`` on the context for every new connection; on a
    context that several threads share, that would rewrite OpenSSL's protocol list while
    another thread's handshake reads it. So the protocols are set once, here, and the
    context's own ``set_alpn_protocols`` then only checks that the same ones are asked for."""
    global _tls
    with _tls_lock:
        if _tls is None:
            # httpx2 is heavy; only a request to an endpoint needs its TLS context.
            import httpx2

            context = httpx2.create_ssl_context()
            context.set_alpn_protocols(list(ALPN))

            def alpn_already_set(protocols: Iterable[str]) -> None:
                if tuple(protocols) != ALPN:
                    raise ValueError(f"ALPN {list(protocols)} asked for; this context has {ALPN}")

            # Replacing the method is the point (see above); mypy types it as the unbound one.
            context.set_alpn_protocols = alpn_already_set  # type: ignore[method-assign, assignment]
            _tls = context
        return _tls


def send(provider: Provider, method: str, url: str, *, what: str, **kwargs: Any) -> httpx2.Response:
    """One HTTP exchange with a provider, read in full within ``provider.request_deadline``.
    Network failures and a passed deadline become ``TransientError``; an answer larger than
    ``MAX_RESPONSE_BYTES`` and a redirect are refused (RFC 9700 §4.11: token and revocation
    requests are never redirected)."""
    # httpx2 is heavy; only a request to an endpoint needs it.
    import httpx2

    name = provider.name
    limit = provider.request_deadline
    try:
        timeout = httpx2.Timeout(TIMEOUT, connect=CONNECT_TIMEOUT)
        with (
            deadline.within(limit),
            http_client().stream(method, url, timeout=timeout, **kwargs) as streamed,
        ):
            body = _read_capped(provider, streamed, url, what)
    except httpx2.TimeoutException as exc:
        raise TransientError(
            f"{name}: the {what} at {url} did not complete within {limit:g} s. The provider may "
            "be down or unreachable; the current grant is kept, try again later (the limit is "
            "`defaults.request_deadline` in providers.yaml).",
            error="timeout",
            provider=name,
            ambiguous=not isinstance(exc, (httpx2.ConnectTimeout, httpx2.PoolTimeout)),
        ) from None
    except httpx2.TransportError as exc:
        raise TransientError(
            f"{name}: could not reach the {what} at {url} ({type(exc).__name__}: "
            f"{scrub(str(exc)) or 'network error'}). Check the network and the endpoint URL; "
            "the current grant is kept.",
            error="network_error",
            provider=name,
            ambiguous=not isinstance(exc, httpx2.ConnectError),
        ) from None
    if 300 <= streamed.status_code < 400:
        raise OAuthError(
            f"{name}: the {what} at {url} answered with a redirect (HTTP "
            f"{streamed.status_code}); redirects are never followed for credential requests. "
            "Check the endpoint URL in providers.yaml (scheme, host, trailing slash).",
            error="unexpected_redirect",
            provider=name,
            status_code=streamed.status_code,
        )
    # The body is decoded already: drop the headers that described its encoding on the wire.
    headers = [
        (key, value)
        for key, value in streamed.headers.multi_items()
        if key.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx2.Response(
        streamed.status_code, headers=headers, content=body, request=streamed.request
    )


def _read_capped(provider: Provider, response: httpx2.Response, url: str, what: str) -> bytes:
    """The decoded body, refused once it passes ``MAX_RESPONSE_BYTES`` (before reading any of
    it when ``Content-Length`` already says so)."""
    declared = response.headers.get("content-length", "")
    too_large = declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES
    chunks: list[bytes] = []
    size = 0
    if not too_large:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                too_large = True
                break
            chunks.append(chunk)
    if too_large:
        raise OAuthError(
            f"{provider.name}: the {what} at {url} answered with more than "
            f"{MAX_RESPONSE_BYTES / 2**20:g} MiB; the answer was not read and nothing was stored. "
            "Check the endpoint URL in providers.yaml.",
            error="response_too_large",
            provider=provider.name,
            status_code=response.status_code,
        )
    return b"".join(chunks)


def parse_body(response: httpx2.Response, *, form_ok: bool = False) -> dict[str, Any] | None:
    """The response body as a dict: JSON object, or form-encoded (by Content-Type, or whenever
    ``form_ok``). None when it is neither."""
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    text = response.text
    if ctype != "application/x-www-form-urlencoded":
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return data
        if data is not None or not form_ok:
            return None
    if not text.strip() or "=" not in text:
        return None
    pairs = parse_qsl(text.strip(), keep_blank_values=True)
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            return None  # a repeated parameter is malformed (RFC 6749 §3.1)
        result[key] = value
    return result


def unavailable(
    provider: Provider,
    response: httpx2.Response,
    *,
    endpoint: str,
    outcome: str,
    secrets: Sequence[str | None] = (),
) -> TransientError | None:
    """A 429 or 5xx answer as the TransientError to raise: the provider cannot serve the request
    for now (with its ``Retry-After``). None for any other status. ``endpoint`` reads "the
    ENDPOINT; OUTCOME, try again later" in the message."""
    status = response.status_code
    if status != 429 and status < 500:
        return None
    payload = parse_body(response) or {}
    description = scrub(payload.get("error_description"), secrets)
    default = "rate_limited" if status == 429 else "temporarily_unavailable"
    return TransientError(
        f"{provider.name}: the {endpoint}{' (' + description + ')' if description else ''}; "
        f"{outcome}, try again later.",
        error=scrub(str(payload.get("error") or default), secrets) or default,
        description=description,
        provider=provider.name,
        status_code=status,
        retry_after=retry_after(response),
    )
