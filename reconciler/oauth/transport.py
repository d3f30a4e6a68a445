"""HTTP exchanges with a provider's endpoints: one kept-alive client per thread over one
TLS context per process, short timeouts, no redirects followed (RFC 9700 §4.11), and the
answers every endpoint reads alike (bodies that are JSON or form-encoded, 429 and 5xx with
their ``Retry-After``).

Importing this module is cheap: httpx2 is imported inside the functions.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from ..model import Provider
from .errors import OAuthError, TransientError, scrub

if TYPE_CHECKING:
    import ssl

    import httpx2

#: Seconds to establish a connection / for the whole exchange. Token endpoints answer fast; a
#: hung endpoint must not hang ``reconcile`` or a runtime ``token()`` call.
CONNECT_TIMEOUT = 5.0
TIMEOUT = 15.0
USER_AGENT = "oauth-reconciler/0.1 (+https://datatracker.ietf.org/doc/html/rfc6749)"


def retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

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
        from http.cookiejar import CookieJar, DefaultCookiePolicy

        import httpx2

        client = _local.client = httpx2.Client(
            follow_redirects=False,
            verify=tls_context(),
            headers={"User-Agent": USER_AGENT},
            # No state from one provider's answer may ride along on the next request.
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
        )
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
            import httpx2

            context = httpx2.create_ssl_context()
            context.set_alpn_protocols(list(ALPN))

            def alpn_already_set(protocols: Sequence[str]) -> None:
                if tuple(protocols) != ALPN:
                    raise ValueError(f"ALPN {list(protocols)} asked for; this context has {ALPN}")

            context.set_alpn_protocols = alpn_already_set  # type: ignore[method-assign]
            _tls = context
        return _tls


def send(provider: Provider, method: str, url: str, *, what: str, **kwargs: Any) -> httpx2.Response:
    """One HTTP exchange with a provider. Network failures become ``TransientError``; a redirect
    is refused (RFC 9700 §4.11: token and revocation requests are never redirected)."""
    import httpx2

    name = provider.name
    try:
        timeout = httpx2.Timeout(TIMEOUT, connect=CONNECT_TIMEOUT)
        response = http_client().request(method, url, timeout=timeout, **kwargs)
    except httpx2.TimeoutException:
        raise TransientError(
            f"{name}: the {what} at {url} did not answer within {TIMEOUT:g} s. The provider may "
            "be down or unreachable; the current grant is kept, try again later.",
            error="timeout",
            provider=name,
        ) from None
    except httpx2.TransportError as exc:
        raise TransientError(
            f"{name}: could not reach the {what} at {url} ({type(exc).__name__}: "
            f"{scrub(str(exc)) or 'network error'}). Check the network and the endpoint URL; "
            "the current grant is kept.",
            error="network_error",
            provider=name,
        ) from None
    if 300 <= response.status_code < 400:
        raise OAuthError(
            f"{name}: the {what} at {url} answered with a redirect (HTTP "
            f"{response.status_code}); redirects are never followed for credential requests. "
            "Check the endpoint URL in providers.yaml (scheme, host, trailing slash).",
            error="unexpected_redirect",
            provider=name,
            status_code=response.status_code,
        )
    return response


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
