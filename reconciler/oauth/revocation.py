"""Token revocation (RFC 7009), or a provider's own call in its place (``quirks.revoker``).

The request is RFC 7009 §2.1 (built with Authlib's ``prepare_revoke_token_request``, or a JSON
body for providers that want one) with the client authentication of the token endpoint. Of the
answer (§2.2), a 2xx is success unless the body carries an ``error`` other than "already
invalid"; ``unsupported_token_type`` (§2.2.1) and the other error codes become ``OAuthError``
with the action to take; 429 and 5xx are ``TransientError``.

Importing this module is cheap: Authlib and httpx2 are imported inside the functions.
"""

from __future__ import annotations

import logging
from typing import Any

from ..model import Provider, Secret
from . import quirks
from .endpoints import endpoint
from .errors import OAuthError, client_secrets, describe, scrub
from .tokens import client_auth, error_from_payload
from .transport import parse_body, send, unavailable

log = logging.getLogger(__name__)


def revoke(
    provider: Provider,
    client_secret: Secret | None,
    token: Secret,
    token_type_hint: str | None = None,
) -> None:
    """Revoke a token (RFC 7009), or through the provider's own call when a quirk says so.
    Revoking a refresh token normally revokes the whole grant (RFC 7009 §2.1)."""
    override = quirks.revoker(provider)
    if override is not None:
        override(provider, client_secret, token, token_type_hint)
        return
    name = provider.name
    if not provider.revocation_endpoint:
        raise OAuthError(
            f"{name}: the provider has no revocation endpoint (RFC 7009), so the grant cannot be "
            "revoked from here. Revoke the app's access in your account settings at the "
            "provider, or set `revocation_endpoint` if it has one.",
            error="revocation_unsupported",
            provider=name,
        )
    url = endpoint(provider, "revocation_endpoint", "revocation endpoint")
    # Authlib is heavy; only a revocation needs its request builder.
    from authlib.oauth2.rfc7009 import prepare_revoke_token_request

    headers: dict[str, str] = {"Accept": "application/json"}
    if quirks.json_token_request(provider):
        fields = {"token": token.reveal()}
        if token_type_hint:
            fields["token_type_hint"] = token_type_hint
        kwargs: dict[str, Any] = {"json": fields}
        auth = client_auth(provider, client_secret, json_body=True)
    else:
        body, headers = prepare_revoke_token_request(token.reveal(), token_type_hint, None, headers)
        kwargs = {"content": body.encode()}
        auth = client_auth(provider, client_secret)
    response = send(provider, "POST", url, what="revocation", headers=headers, auth=auth, **kwargs)
    status = response.status_code
    plain_secret = client_secret.reveal() if client_secret is not None else None
    secrets = [token.reveal(), *client_secrets(provider.client_id, plain_secret)]
    if 200 <= status < 300:
        # RFC 7009 §2.2 ignores the body, but some providers answer 200 with an error in it.
        payload = parse_body(response) or {}
        payload = quirks.normalize_token_response(provider, payload, {})
        error = payload.get("error")
        if not error:
            return
        if error in ("invalid_grant", "invalid_token"):
            log.info("%s: the token was already invalid; nothing left to revoke", name)
            return
        raise error_from_payload(
            provider, payload, what="revocation", status=status, secrets=secrets
        )
    busy = unavailable(
        provider,
        response,
        endpoint=f"revocation endpoint answered HTTP {status}",
        outcome="the token is not revoked yet",
        secrets=secrets,
    )
    if busy is not None:
        raise busy
    payload = parse_body(response) or {}
    if payload.get("error") == "unsupported_token_type":
        description = scrub(payload.get("error_description"), secrets)
        raise OAuthError(
            f"{name}: the provider does not revoke {token_type_hint or 'this kind of'} tokens "
            f"({describe('unsupported_token_type', description)}). Revoke the app's access in "
            "your account settings at the provider.",
            error="unsupported_token_type",
            description=description,
            provider=name,
            status_code=status,
        )
    if payload.get("error"):
        raise error_from_payload(
            provider, payload, what="revocation", status=status, secrets=secrets
        )
    raise OAuthError(
        f"{name}: the revocation endpoint answered HTTP {status}; the token may still be valid. "
        "Check the revocation endpoint URL and client settings.",
        error="revocation_failed",
        provider=name,
        status_code=status,
    )
