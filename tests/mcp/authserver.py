"""The authorization server of an MCP server: tests/e2e/authserver.py's Authlib server, plus

- dynamic client registration (RFC 7591) with Authlib's ``ClientRegistrationEndpoint`` at
  ``POST /register``, returning a ``registration_access_token`` and a
  ``registration_client_uri`` (``GET /register/<client_id>`` reads it back, RFC 7592 §2.1);
- resource indicators (RFC 8707), which Authlib does not have, through its grant hooks: the
  ``resource`` of an authorization request must be one of ``resources`` (else ``invalid_target``)
  and is kept with the code; a token request may repeat it, never change it; a refresh keeps it;
  the issued token's audience is that resource;
- token introspection (RFC 7662) with Authlib's ``IntrospectionEndpoint`` at
  ``POST /introspect`` (``aud`` is the token's resource), for the protected resources.

Knobs: ``resources`` (the resource URIs it issues tokens for), ``require_resource`` (refuse a
request without one), ``registration_refused`` (answer every registration with
``invalid_client_metadata`` and ``registration_refusal``),
``public_registration`` (offer ``none``: public clients), ``metadata_overrides``.
Observations: ``registrations`` (what each registration asked for), ``issued_secrets``
(every client secret and registration access token handed out).
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any

from authlib.common.security import generate_token
from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6749.requests import JsonPayload, JsonRequest
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint, InvalidClientMetadataError
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from tests.e2e import authserver
from tests.e2e.authserver import (
    AuthCodeGrant,
    AuthServer,
    HTTPRequest,
    Response,
    RotatingRefreshTokenGrant,
    S256Required,
)

RS_CLIENT = ("protected-resource", "rs-introspection-secret-0123456789")


class InvalidTarget(OAuth2Error):
    """RFC 8707 §2: the requested resource is invalid, unknown or not allowed."""

    error = "invalid_target"


def _resource(request) -> str | None:
    values = request.payload.datalist.get("resource") or []
    if len(values) > 1:
        raise InvalidTarget("one resource per request")
    return values[0] if values else None


class ResourceCodeGrant(AuthCodeGrant):
    """The code grant with RFC 8707: the authorization request's ``resource`` is checked and
    kept with the code; the token request may repeat it, never change it."""

    def validate_authorization_request(self):
        redirect_uri = super().validate_authorization_request()
        state = self.server.state
        resource = _resource(self.request)
        where = {"redirect_uri": redirect_uri, "state": self.request.payload.state}
        if resource is None and state.require_resource:
            raise InvalidTarget("a resource is required", **where)
        if resource is not None and resource not in state.resources:
            raise InvalidTarget(f"unknown resource {resource}", **where)
        return redirect_uri

    def save_authorization_code(self, code, request):
        super().save_authorization_code(code, request)
        self.server.state.code_resources[code] = _resource(request)

    def validate_token_request(self):
        super().validate_token_request()
        state = self.server.state
        kept = state.code_resources.get(self.request.authorization_code.code)
        asked = _resource(self.request)
        if asked is not None and asked != kept:
            raise InvalidTarget("the resource differs from the authorization request's")
        self.request.resource = kept


class ResourceRefreshGrant(RotatingRefreshTokenGrant):
    """A refresh keeps the resource of the grant; asking for another is ``invalid_target``."""

    def validate_token_request(self):
        super().validate_token_request()
        kept = getattr(self.request.refresh_token, "resource", None)
        asked = _resource(self.request)
        if asked is not None and asked != kept:
            raise InvalidTarget("the resource differs from the grant's")
        self.request.resource = kept


class Registration(ClientRegistrationEndpoint):
    def authenticate_token(self, request):
        return True  # open registration, as MCP servers offer it

    def get_server_metadata(self):
        return self.server.state.metadata()

    def extract_client_metadata(self, request):
        state = self.server.state
        if state.registration_refused:
            raise InvalidClientMetadataError(state.registration_refusal)
        return super().extract_client_metadata(request)

    def generate_client_secret(self, request):
        if request.payload.data.get("token_endpoint_auth_method") == "none":
            return None
        return generate_token(40)

    def generate_client_info(self, request):
        info = super().generate_client_info(request)
        if info["client_secret"] is None:
            info.pop("client_secret")
            info.pop("client_secret_expires_at")
        return info

    def save_client(self, client_info, client_metadata, request):
        state = self.server.state
        method = client_metadata.get("token_endpoint_auth_method", "client_secret_basic")
        client = state.add_client(
            client_info["client_id"],
            client_info.get("client_secret"),
            auth_method=method,
            redirect_uris=tuple(client_metadata["redirect_uris"]),
            grant_types=tuple(client_metadata.get("grant_types") or ("authorization_code",)),
        )
        state.registrations.append(dict(request.payload.data))
        if client.client_secret:
            state.issued_secrets.append(client.client_secret)
        return client

    def generate_client_registration_info(self, client, request):
        state = self.server.state
        token = generate_token(40)
        state.registration_tokens[client.client_id] = token
        state.issued_secrets.append(token)
        return {
            "registration_client_uri": state.endpoint(f"/register/{client.client_id}"),
            "registration_access_token": token,
        }


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ("client_secret_basic",)

    def query_token(self, token_string, token_type_hint):
        return self.server.state.find_token(token_string, "access_token")

    def check_permission(self, token, client, request):
        return client.client_id == RS_CLIENT[0]

    def introspect_token(self, token):
        return {
            "active": True,
            "client_id": token.client.client_id,
            "token_type": "Bearer",
            "scope": token.scope,
            "sub": (token.user or {}).get("id"),
            "aud": getattr(token, "resource", None),
            "iss": self.server.state.issuer,
            "exp": int(token.issued_at + token.expires_in),
            "iat": int(token.issued_at),
        }


class McpAuthServer(AuthServer):
    def __init__(self, **kwargs: Any) -> None:
        self.resources: set[str] = set()
        self.require_resource = True
        self.registration_refused = False
        self.registration_refusal = "loopback redirect URIs are not allowed here"
        self.public_registration = False
        self.registrations: list[dict[str, Any]] = []
        #: Every client secret and registration access token handed out.
        self.issued_secrets: list[str] = []
        self.registration_tokens: dict[str, str] = {}
        self.code_resources: dict[str, str | None] = {}
        super().__init__(**kwargs)
        self.add_client(*RS_CLIENT, grant_types=())

    def _build(self):
        server = super()._build()
        # The code and refresh grants with RFC 8707 instead of the plain ones.
        server._token_grants = [
            (grant, extensions)
            for grant, extensions in server._token_grants
            if grant not in (AuthCodeGrant, RotatingRefreshTokenGrant)
        ]
        server._authorization_grants = [
            (grant, extensions)
            for grant, extensions in server._authorization_grants
            if grant is not AuthCodeGrant
        ]
        server.register_grant(ResourceCodeGrant, [S256Required(required=True)])
        server.register_grant(ResourceRefreshGrant)
        server.register_endpoint(Registration)
        server.register_endpoint(Introspection)
        server.create_json_request = _json_request
        return server

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    def metadata(self) -> dict[str, Any]:
        data = super().metadata()
        methods = ["client_secret_basic", "client_secret_post"]
        if self.public_registration:
            methods.append("none")
        data.update(
            registration_endpoint=self.endpoint("/register"),
            introspection_endpoint=self.endpoint("/introspect"),
            token_endpoint_auth_methods_supported=methods,
            grant_types_supported=["authorization_code", "refresh_token"],
        )
        data.update(self.metadata_overrides)
        return data

    def _save_token(self, token: dict, request) -> None:
        super()._save_token(token, request)
        with self.lock:
            self.tokens[-1].resource = getattr(request, "resource", None)

    def forget_client(self, client_id: str) -> None:
        """The server loses a registration (a restart without persistence, a clean-up)."""
        with self.lock:
            self.clients.pop(client_id, None)
            self.registration_tokens.pop(client_id, None)


class _JsonPayload(JsonPayload):
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @property
    def data(self):
        return self._data


def _json_request(request: HTTPRequest) -> JsonRequest:
    json_request = JsonRequest(request.method, request.url, headers=request.headers)
    json_request.payload = _JsonPayload(getattr(request, "json", None) or {})
    return json_request


class _Handler(authserver._Handler):
    def _route(self, route: tuple[str, str], request: HTTPRequest) -> Response:
        server = self.auth.server
        if route == ("POST", "/register"):
            if not isinstance(getattr(request, "json", None), dict):
                error = InvalidRequestError("a JSON object is expected")
                return Response(400, dict(error.get_body()))
            return server.create_endpoint_response("client_registration", request)
        if route == ("POST", "/introspect"):
            return server.create_endpoint_response("introspection", request)
        if request.method == "GET" and request.path.startswith("/register/"):
            return self._read_registration(request.path.rsplit("/", 1)[-1], request)
        return super()._route(route, request)

    def _read_registration(self, client_id: str, request: HTTPRequest) -> Response:
        """RFC 7592 §2.1: the client's registration, for its registration access token."""
        auth = self.auth
        expected = auth.registration_tokens.get(client_id)
        given = (request.headers.get("Authorization") or "")[7:].strip()
        if expected is None or given != expected:
            return Response(401, {"error": "invalid_token"}, [("WWW-Authenticate", "Bearer")])
        client = auth.clients[client_id]
        return Response(
            200,
            {
                "client_id": client.client_id,
                "redirect_uris": list(client.redirect_uris),
                "token_endpoint_auth_method": client.auth_method,
            },
        )
