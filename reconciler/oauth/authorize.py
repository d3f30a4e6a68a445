"""The authorization request of the code flow and its answer, for a native app: RFC 6749
§4.1.1-§4.1.3 with PKCE S256 (RFC 7636 §4.1-§4.5), the redirect URI of RFC 8252 §7.3, and
the ``iss`` check of RFC 9207.

- ``build_authorization_url``: the authorization request (Authlib's ``prepare_grant_uri``);
- ``start_link`` / ``finish_link``: the two halves, for callers that carry the pending state
  themselves (the HTTP surface of ``reconcile serve``, and ``loopback``);
- ``validate_callback``: the authorization response (§4.1.2): ``state`` (CSRF, §10.12), then
  ``iss`` (RFC 9207 mix-up defence), then ``error``, then ``code``;
- ``finish_from_redirect_url``: the paste fallback for a browser that cannot reach the loopback
  server (another machine, a sandbox): the user pastes the URL the browser ended on.

The loopback redirect server that receives the answer for the CLI is ``loopback``.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..model import Provider, Secret
from . import quirks
from .endpoints import check_response_issuer, endpoint
from .errors import AccessDenied, OAuthError, describe, scrub
from .tokens import Now, TokenResult, exchange_code, join_scopes, resolve_now

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


# --- PKCE and state --------------------------------------------------------------------------


def new_code_verifier() -> Secret:
    """A fresh RFC 7636 §4.1 code verifier: 64 characters from the unreserved set."""
    # Authlib is heavy; only a new link attempt needs its token generator.
    from authlib.common.security import generate_token

    return Secret(generate_token(64))


def code_challenge(code_verifier: Secret | str) -> str:
    """``BASE64URL(SHA256(ASCII(code_verifier)))`` (RFC 7636 §4.2, method S256)."""
    # Authlib is heavy; only a new link attempt needs the S256 transform.
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
    # Authlib is heavy; only a new link attempt needs its URL builder.
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
