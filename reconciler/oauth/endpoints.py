"""Checks on the URLs and issuers the protocol talks to or is answered by.

- ``is_secure_url`` / ``check_endpoint`` / ``endpoint``: an endpoint is ``https``, or ``http``
  on a loopback host (SPEC §1, RFC 8252 §7.3), and never carries a control character;
- ``check_response_issuer``: the ``iss`` of an authorization response is the configured issuer
  (RFC 9207 §2.4), and is present when the server announced that it sends it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..model import Provider
from .errors import OAuthError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
#: The redirect path of a link flow (the RFC 8252 loopback server, and the callback of
#: `reconcile serve`), so that one registration at the provider serves both.
CALLBACK_PATH = "/oauth/link/callback"


def is_secure_url(url: str) -> bool:
    """``https``, or ``http`` on a loopback host (SPEC §1, RFC 8252 §7.3); never a URL with a
    control character (it would be shown in messages)."""
    if not url.isprintable():
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if not host:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and host in LOOPBACK_HOSTS


def check_endpoint(provider: Provider, url: str, what: str) -> None:
    if not is_secure_url(url):
        raise OAuthError(
            f"{provider.name}: the {what} URL {url!r} is not https (plain http is allowed only "
            "on 127.0.0.1, [::1] and localhost). Fix the URL in providers.yaml.",
            error="insecure_endpoint",
            provider=provider.name,
        )


def endpoint(provider: Provider, attr: str, what: str) -> str:
    url = getattr(provider, attr)
    if not url:
        raise OAuthError(
            f"{provider.name}: no {what} is known for this provider. Set `{attr}` in "
            "providers.yaml, or an `issuer` that publishes it (RFC 8414 discovery).",
            error="missing_endpoint",
            provider=provider.name,
        )
    check_endpoint(provider, url, what)
    return url


def check_response_issuer(provider: Provider, iss: str | None) -> None:
    """Refuse an authorization response from another issuer (RFC 9207 mix-up defence)."""
    name = provider.name
    expected_issuer = provider.issuer
    if iss is not None:
        if expected_issuer and iss != expected_issuer:
            raise OAuthError(
                f"{name}: the authorization response comes from issuer {iss!r}, not the "
                f"configured {expected_issuer!r} (RFC 9207), so it was rejected as a possible "
                "mix-up attack. Nothing was stored; check `issuer` of this provider and run the "
                "link again.",
                error="issuer_mismatch",
                provider=name,
            )
    elif expected_issuer and provider.extras.get("authorization_response_iss_parameter_supported"):
        raise OAuthError(
            f"{name}: the authorization server announces RFC 9207 but its response has no `iss` "
            "parameter, so it was rejected as a possible mix-up attack. Nothing was stored; run "
            "the link again.",
            error="issuer_missing",
            provider=name,
        )
