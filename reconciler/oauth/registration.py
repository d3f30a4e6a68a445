"""The client an MCP grant is linked with (SPEC §8): the declared ``client_id``; else a client ID
metadata document (its URL is the client ID) when the authorization server announces
``client_id_metadata_document_supported``; else dynamic client registration (RFC 7591 §3).

A registered client (``client_id``, ``client_secret``, ``registration_access_token``,
``registration_client_uri``) is kept in the grant file, the secrets encrypted, and reused on
the next link with the same authorization server, unless the server has since rejected it (a
refresh met ``invalid_client``) or no longer knows it (RFC 7592 §2.1: its client configuration
endpoint answers 401, 403 or 404); a new client is then registered.

Importing this module is cheap: httpx2 is imported by ``transport`` when a request is sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..model import Grant, Provider, Secret
from .endpoints import CALLBACK_PATH, is_secure_url
from .errors import OAuthError, describe, printable, scrub
from .transport import parse_body, send, unavailable

ClientSource = Literal["declared", "metadata-document", "registered"]
#: ``extra`` keys of a grant file that describe its client (plaintext).
SOURCE_KEY = "client_source"
URI_KEY = "registration_client_uri"
#: The source recorded when the authorization server no longer accepts a registered client:
#: the next link registers a new one.
REJECTED = "rejected"
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
#: Registered for the loopback redirect; any port matches it (RFC 8252 §7.3).
LOOPBACK_REDIRECT = "http://127.0.0.1" + CALLBACK_PATH


@dataclass(frozen=True)
class Client:
    """The client of an MCP grant. Secrets are ``Secret``: ``repr`` never shows them."""

    client_id: str
    source: ClientSource
    token_endpoint_auth_method: str = "none"
    client_secret: Secret | None = None
    registration_access_token: Secret | None = None
    registration_client_uri: str | None = None


def choose_client(
    provider: Provider,
    metadata: Mapping[str, Any],
    scopes: Sequence[str],
    previous: Grant | None,
    authorization_server: str,
) -> Client:
    """The client to link ``provider`` (an MCP provider) with at the authorization server whose
    ``metadata`` is given: see the module docstring for the order."""
    if provider.client_id:
        method = provider.token_endpoint_auth_method or "none"
        return Client(provider.client_id, "declared", method)
    if (
        provider.client_metadata_url
        and metadata.get("client_id_metadata_document_supported") is True
    ):
        return Client(provider.client_metadata_url, "metadata-document", "none")
    kept = stored_client(previous, authorization_server)
    if kept is not None and still_registered(provider, kept):
        return kept
    return register(provider, metadata, scopes)


def still_registered(provider: Provider, client: Client) -> bool:
    """Whether the authorization server still knows ``client``, asked with its registration
    access token at its ``registration_client_uri`` (RFC 7592 §2.1) when it has both: a 401,
    403 or 404 means the registration is gone. Without them, or when the answer is anything
    else, the client is assumed to be known (a refresh that meets ``invalid_client`` marks it
    rejected)."""
    uri, token = client.registration_client_uri, client.registration_access_token
    if not uri or token is None:
        return True
    response = send(
        provider,
        "GET",
        uri,
        what="client configuration endpoint",
        headers={"Accept": "application/json", "Authorization": f"Bearer {token.reveal()}"},
    )
    return response.status_code not in (401, 403, 404)


def stored_client(grant: Grant | None, authorization_server: str) -> Client | None:
    """The registered client recorded in ``grant``, if it can be used again: registered at the
    same authorization server, not rejected since, and its secret readable when it has one."""
    if grant is None or grant.kind != "oauth2" or not grant.client_id:
        return None
    if grant.extra.get(SOURCE_KEY) != "registered":
        return None
    if grant.authorization_server != authorization_server:
        return None
    if "client_secret" in grant.sealed and grant.client_secret is None:
        return None  # not decrypted here: register a new client rather than guess
    method = grant.extra.get("token_endpoint_auth_method") or (
        "client_secret_basic" if grant.client_secret else "none"
    )
    return Client(
        grant.client_id,
        "registered",
        method,
        grant.client_secret,
        grant.registration_access_token,
        grant.extra.get(URI_KEY),
    )


def _auth_method(metadata: Mapping[str, Any]) -> str:
    """``none`` when the server takes public clients, else what it supports (RFC 8414 §2:
    ``client_secret_basic`` when it does not say)."""
    supported = metadata.get("token_endpoint_auth_methods_supported")
    if not isinstance(supported, list):
        return "client_secret_basic"
    for method in AUTH_METHODS:
        if method in supported:
            return method
    return "client_secret_basic"


def register(provider: Provider, metadata: Mapping[str, Any], scopes: Sequence[str]) -> Client:
    """Register a client at the ``registration_endpoint`` of ``metadata`` (RFC 7591 §3)."""
    name = provider.name
    url = metadata.get("registration_endpoint")
    if not isinstance(url, str) or not url:
        raise OAuthError(
            f"{name}: no client_id is declared and the authorization server "
            f"{metadata.get('issuer')!r} offers no dynamic client registration (no "
            "`registration_endpoint`, RFC 7591). Register a client at the server by hand and "
            "set `client_id` (and `client_secret`) in providers.yaml"
            + (
                ", or publish a client ID metadata document (`client_metadata_url`)"
                if metadata.get("client_id_metadata_document_supported") is True
                else ""
            )
            + ". Nothing was written.",
            error="registration_unsupported",
            provider=name,
        )
    if not is_secure_url(url):
        raise OAuthError(
            f"{name}: the registration endpoint {printable(url)[:200]!r} is not https (http only "
            "on loopback hosts), so no client was registered. Nothing was written.",
            error="insecure_endpoint",
            provider=name,
        )
    method = _auth_method(metadata)
    body: dict[str, Any] = {
        "client_name": f"oauth-reconciler ({name})",
        "redirect_uris": [provider.redirect_uri or LOOPBACK_REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
    }
    if scopes:
        body["scope"] = " ".join(scopes)
    response = send(
        provider,
        "POST",
        url,
        what="client registration",
        headers={"Accept": "application/json", "Content-Type": "application/json"},
        content=json.dumps(body).encode(),
    )
    busy = unavailable(
        provider,
        response,
        endpoint=f"registration endpoint answered HTTP {response.status_code}",
        outcome="no client was registered and nothing was written",
    )
    if busy is not None:
        raise busy
    payload = parse_body(response) or {}
    if payload.get("error") or response.status_code not in (200, 201):
        code = scrub(str(payload.get("error") or f"HTTP {response.status_code}"))
        description = scrub(
            None if payload.get("error_description") is None else str(payload["error_description"])
        )
        raise OAuthError(
            f"{name}: the authorization server refused to register a client at {url} "
            f"({describe(code, description)}; RFC 7591 §3.2.2). Nothing was written. Register a "
            "client at the server by hand and set `client_id` in providers.yaml, or ask its "
            "operator to allow registration.",
            error=code,
            description=description,
            provider=name,
            status_code=response.status_code,
        )
    return _client_from(provider, url, payload, method)


def _client_from(provider: Provider, url: str, payload: Mapping[str, Any], method: str) -> Client:
    name = provider.name
    client_id = payload.get("client_id")
    if not isinstance(client_id, str) or not client_id.strip() or not client_id.isprintable():
        raise OAuthError(
            f"{name}: the client registration at {url} answered without a usable client_id "
            "(RFC 7591 §3.2.1). Nothing was written.",
            error="invalid_registration_response",
            provider=name,
        )
    answered = payload.get("token_endpoint_auth_method")
    if isinstance(answered, str) and answered in AUTH_METHODS:
        method = answered
    secret = _secret(payload.get("client_secret"))
    if method != "none" and secret is None:
        method = "none"
    uri = payload.get(URI_KEY)
    return Client(
        client_id,
        "registered",
        method,
        secret,
        _secret(payload.get("registration_access_token")),
        uri if isinstance(uri, str) and is_secure_url(uri) else None,
    )


def _secret(value: object) -> Secret | None:
    if isinstance(value, str) and value.strip() and value.isprintable():
        return Secret(value)
    return None
