"""The OAuth 2.0 protocol, on Authlib and httpx2, one private module per concern.

- ``endpoints``: URL checks (https, or http on loopback) and the RFC 9207 issuer check;
- ``discovery``: authorization server metadata (RFC 8414, OpenID discovery) with a disk cache;
- ``authorize``: the authorization request with PKCE S256 and its answer (RFC 6749 §4.1, RFC
  7636, RFC 9207), and the paste fallback;
- ``loopback``: the loopback redirect server that receives the answer for the CLI (RFC 8252);
- ``device``: the device authorization grant (RFC 8628);
- ``tokens``: code exchange, refresh, client credentials, token response validation (RFC 6749
  §4.1.3, §4.4, §5, §6), and ``grant_from_result`` to build a ``model.Grant``;
- ``revocation``: token revocation (RFC 7009);
- ``resource``: protected resource discovery for MCP servers (RFC 9728) and the challenge parser;
- ``registration``: an MCP grant's client: declared, a client ID metadata document, or dynamic
  registration (RFC 7591);
- ``mcp``: MCP servers as providers (SPEC §8): the provider bound to the server (RFC 8707
  ``resource``) for a link, a refresh or a revocation;
- ``transport`` (with ``deadline``): the HTTP client, timeouts, overall deadlines, size caps;
- ``quirks``: named provider hooks selected by ``Provider.quirks``; it imports neither
  ``tokens`` nor ``revocation``, which call its hooks;
- ``errors``: ``OAuthError`` and its subclasses, and the scrubbing of secrets from messages.

May import: ``model``, ``errors``, ``secret`` (layer 0), Authlib and httpx2 (inside the
functions that send a request). Nothing above it (``custody``, ``apply``, the faces).

The names below are the public surface. They are loaded on first use, not here: a caller that
needs one module (``reconcile token`` refreshing through ``tokens``) does not pay for the
others (``loopback`` pulls in ``http.server``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Public name -> the private module that defines it.
_PUBLIC = {
    "AccessDenied": "errors",
    "InvalidGrant": "errors",
    "InvalidTokenResponse": "errors",
    "LinkTimeout": "errors",
    "OAuthError": "errors",
    "TransientError": "errors",
    "LOOPBACK_HOSTS": "endpoints",
    "is_secure_url": "endpoints",
    "discover": "discovery",
    "resolve_endpoints": "discovery",
    "CALLBACK_PATH": "endpoints",
    "PendingLink": "authorize",
    "build_authorization_url": "authorize",
    "finish_from_redirect_url": "authorize",
    "finish_link": "authorize",
    "start_link": "authorize",
    "run_loopback_flow": "loopback",
    "system_browser": "loopback",
    "DeviceAuthorization": "device",
    "DevicePoll": "device",
    "poll_once": "device",
    "run_device_flow": "device",
    "start_device_flow": "device",
    "TokenResult": "tokens",
    "client_credentials": "tokens",
    "exchange_code": "tokens",
    "grant_from_result": "tokens",
    "refresh": "tokens",
    "revoke": "revocation",
    "KNOWN_QUIRKS": "quirks",
    "discover_resource": "resource",
    "parse_challenge": "resource",
    "register": "registration",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
