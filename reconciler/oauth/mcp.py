"""MCP servers as providers (SPEC §8): the provider that a link, refresh or revocation of an MCP
grant actually speaks to.

- ``for_link``: discover the MCP server's authorization server (``resource``, RFC 9728), read
  its metadata (``discovery``, RFC 8414 then OpenID), choose or register the client
  (``registration``), and bind every request to the server: ``resource=<canonical URI>`` on
  the authorization and token requests (RFC 8707 §2.1, §2.2);
- ``for_grant``: the same from what the grant file recorded (authorization server, resource,
  client), for refreshes and revocation: no request to the MCP server itself;
- ``record``: the grant to store after a link, with the resource, the authorization server and
  the client (a registered client's secret and registration access token are encrypted leaves).

Importing this module is cheap: Authlib and httpx2 load when a request is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..model import Grant, Provider, Secret
from .discovery import ENDPOINT_FIELDS, discover
from .errors import OAuthError, TransientError
from .registration import SOURCE_KEY, URI_KEY, Client, choose_client
from .resource import discover_resource

#: ``Provider.extras`` key of the binding of a provider returned here.
BINDING = "mcp_binding"


@dataclass(frozen=True)
class Binding:
    """The MCP server a provider was bound to: its resource, authorization server, client."""

    resource: str
    authorization_server: str
    client: Client


def for_link(provider: Provider, previous: Grant | None = None) -> Provider:
    """The provider for a link flow with the MCP server ``provider.mcp``. ``previous`` is the
    grant in place, whose registered client is reused when it still can be."""
    found = discover_resource(provider)
    metadata = discover(found.authorization_server, name=provider.name)
    methods = metadata.get("code_challenge_methods_supported")
    if not isinstance(methods, list) or "S256" not in methods:
        raise OAuthError(
            f"{provider.name}: the authorization server {found.authorization_server} does not "
            "announce PKCE with S256 (`code_challenge_methods_supported`), which MCP requires "
            "to protect the authorization code, so no link was started. Nothing was written; "
            "report it to the server's operator.",
            error="pkce_unsupported",
            provider=provider.name,
        )
    scopes = provider.scopes or found.scopes
    client = choose_client(provider, metadata, scopes, previous, found.authorization_server)
    binding = Binding(found.resource, found.authorization_server, client)
    return _bound(provider, binding, metadata, scopes)


def for_grant(provider: Provider, grant: Grant) -> Provider:
    """The provider to refresh or revoke ``grant`` (an MCP grant) with."""
    issuer, resource = grant.authorization_server, grant.resource
    if not issuer or not resource or not grant.client_id:
        raise OAuthError(
            f"{provider.name}: the grant file does not record the MCP server's authorization "
            f"server, resource and client; link it again (`reconcile link {provider.name}`).",
            error="incomplete_grant",
            provider=provider.name,
        )
    metadata = discover(issuer, name=provider.name)
    if provider.client_id and provider.client_id == grant.client_id:
        method = provider.token_endpoint_auth_method or "none"
        client = Client(provider.client_id, "declared", method)
    else:
        source = grant.extra.get(SOURCE_KEY) or "registered"
        method = grant.extra.get("token_endpoint_auth_method") or (
            "client_secret_basic" if grant.client_secret else "none"
        )
        client = Client(
            grant.client_id,
            "metadata-document" if source == "metadata-document" else "registered",
            method,
            grant.client_secret,
            grant.registration_access_token,
            grant.extra.get(URI_KEY),
        )
    return _bound(provider, Binding(resource, issuer, client), metadata, grant.scopes)


def moved_authorization_server(provider: Provider, grant: Grant) -> str | None:
    """Ask the MCP server again which authorization server it trusts (RFC 9728); the new one
    when it is no longer the one ``grant`` was linked at, else None. An unreachable server
    (a transient failure) tells nothing: None."""
    if not provider.mcp or not grant.authorization_server:
        return None
    try:
        found = discover_resource(provider)
    except TransientError:
        return None
    if found.authorization_server == grant.authorization_server:
        return None
    return found.authorization_server


def _bound(
    provider: Provider, binding: Binding, metadata: Mapping[str, Any], scopes: tuple[str, ...]
) -> Provider:
    endpoints: dict[str, Any] = {
        field: getattr(provider, field) or metadata.get(field) for field in ENDPOINT_FIELDS
    }
    extras: dict[str, object] = {**provider.extras, BINDING: binding}
    if metadata.get("authorization_response_iss_parameter_supported") is True:
        extras.setdefault("authorization_response_iss_parameter_supported", True)
    resource = {"resource": binding.resource}
    return replace(
        provider,
        client_id=binding.client.client_id,
        token_endpoint_auth_method=binding.client.token_endpoint_auth_method,
        issuer=binding.authorization_server,
        scopes=tuple(scopes),
        authorization_params={**provider.authorization_params, **resource},
        token_params={**provider.token_params, **resource},
        extras=extras,
        **endpoints,
    )


def binding_of(provider: Provider) -> Binding | None:
    binding = provider.extras.get(BINDING)
    return binding if isinstance(binding, Binding) else None


def client_secret(provider: Provider) -> Secret | None:
    """The secret of the client the provider was bound to (a registered client's), if any."""
    binding = binding_of(provider)
    return binding.client.client_secret if binding is not None else None


def record(provider: Provider, grant: Grant) -> Grant:
    """``grant`` with what an MCP link must keep: the resource and authorization server
    (plaintext), and the client (its secrets as encrypted leaves)."""
    binding = binding_of(provider)
    if binding is None:
        return grant
    client = binding.client
    extra = {k: v for k, v in grant.extra.items() if k not in (SOURCE_KEY, URI_KEY)}
    extra[SOURCE_KEY] = client.source
    if client.registration_client_uri:
        extra[URI_KEY] = client.registration_client_uri
    extra["token_endpoint_auth_method"] = client.token_endpoint_auth_method
    return replace(
        grant,
        client_id=client.client_id,
        client_secret=client.client_secret or grant.client_secret,
        registration_access_token=client.registration_access_token,
        resource=binding.resource,
        authorization_server=binding.authorization_server,
        extra=extra,
    )
