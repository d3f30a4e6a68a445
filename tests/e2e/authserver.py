"""A real OAuth 2.0 authorization server for end-to-end tests.

Built from Authlib's server components: ``authlib.oauth2.AuthorizationServer`` with
``AuthorizationCodeGrant`` + ``CodeChallenge`` (PKCE, S256 only, required for public clients),
``RefreshTokenGrant`` with rotation (a new refresh token on every use, the old one revoked),
``ClientCredentialsGrant``, RFC 8628 ``DeviceCodeGrant`` + ``DeviceAuthorizationEndpoint``,
RFC 7009 ``RevocationEndpoint``, RFC 8414 metadata (validated with
``AuthorizationServerMetadata``) and the RFC 9207 ``IssuerParameter`` extension. The framework
glue (request/response wrappers) is written here for stdlib ``http.server``; storage is in
memory. It listens on 127.0.0.1 with an ephemeral port.

Test knobs (plain attributes, change them at any time): ``consent`` and ``device_consent``
(``"approve"`` / ``"deny"`` / ``None`` = no decision yet), ``token_lifetime``,
``device_interval``, ``device_expires_in``, ``force_slow_down`` (answer ``slow_down`` to that
many polls), ``omit_scope`` (no ``scope`` in token responses), ``iss_in_response``,
``metadata_mode`` (``"both"`` / ``"rfc8414"`` / ``"openid"`` / ``"none"``),
``metadata_overrides``, ``clock`` (seconds; a fake clock makes device polling deterministic),
``revoke_on_reuse`` (RFC 9700 §4.14.2: presenting a refresh token already rotated revokes every
token of its grant), ``keep_refresh_tokens`` (client ids whose refresh tokens do not rotate).
Observations: ``token_calls`` (Counter by grant type), ``requests`` (every request received),
``device_polls``, ``tokens``, ``reuse_detected``.
"""

from __future__ import annotations

import hmac
import html
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    InvalidGrantError,
    InvalidRequestError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oauth2.rfc8628 import (
    DEVICE_CODE_GRANT_TYPE,
    DeviceAuthorizationEndpoint,
    DeviceCodeGrant,
    DeviceCredentialDict,
)
from authlib.oauth2.rfc9207 import AuthorizationServerMetadata as IssMetadata
from authlib.oauth2.rfc9207 import IssuerParameter

from reconciler.model import Provider
from tests.support import serve

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
ALL_GRANTS = (
    "authorization_code",
    "refresh_token",
    "client_credentials",
    DEVICE_CODE_GRANT_TYPE,
)
USER = {"id": "alice"}


# --- models -----------------------------------------------------------------------------------


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str | None = None  # None: a public client
    auth_method: str = "client_secret_basic"
    redirect_uris: tuple[str, ...] = ("http://127.0.0.1/oauth/link/callback",)
    grant_types: tuple[str, ...] = ALL_GRANTS
    scope: str = "read write admin offline"

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope):
        if not scope:
            return self.scope
        allowed = set(self.scope.split())
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        # Exact match, except that a loopback http redirect may use any port (RFC 8252 §7.3).
        for registered in self.redirect_uris:
            if redirect_uri == registered:
                return True
            r, c = urlsplit(registered), urlsplit(redirect_uri)
            if (
                r.scheme == c.scheme == "http"
                and r.hostname in LOOPBACK
                and r.hostname == c.hostname
                and r.port is None
                and r.path == c.path
                and not c.query
                and not c.fragment
            ):
                return True
        return False

    def check_client_secret(self, client_secret):
        return self.client_secret is not None and hmac.compare_digest(
            client_secret.encode(), self.client_secret.encode()
        )

    def check_endpoint_auth_method(self, method, endpoint):
        return method == self.auth_method

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str | None
    scope: str
    user: dict
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope


@dataclass
class Token(TokenMixin):
    client: Client
    user: dict | None
    scope: str | None
    access_token: str
    refresh_token: str | None
    issued_at: float
    expires_in: int
    clock: Callable[[], float] = field(repr=False, default=time.time)
    access_revoked: bool = False
    refresh_revoked: bool = False
    #: The grant this token belongs to: kept across refreshes (for ``revoke_on_reuse``).
    family: int = 0

    def check_client(self, client):
        return client.get_client_id() == self.client.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def is_expired(self):
        return self.issued_at + self.expires_in <= self.clock()

    def is_revoked(self):
        return self.access_revoked

    def get_user(self):
        return self.user

    def get_client(self):
        return self.client


class DeviceCredential(DeviceCredentialDict):
    clock: Callable[[], float] = time.time

    def is_expired(self):
        return self["expires_at"] <= self.clock()


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]
    query: dict[str, list[str]]


# --- framework glue ---------------------------------------------------------------------------


@dataclass
class HTTPRequest:
    method: str
    url: str
    path: str
    headers: Any  # email.message.Message: case-insensitive .get()
    query: dict[str, list[str]]
    form: dict[str, list[str]]


class _Payload(OAuth2Payload):
    def __init__(self, http: HTTPRequest):
        merged: dict[str, list[str]] = defaultdict(list)
        for source in (http.query, http.form):
            for key, values in source.items():
                merged[key].extend(values)
        self._datalist = merged
        self._data = {k: v[0] for k, v in merged.items()}

    @property
    def data(self):
        return self._data

    @property
    def datalist(self):
        return self._datalist


class _OAuth2Request(OAuth2Request):
    def __init__(self, http: HTTPRequest):
        super().__init__(http.method, http.url, headers=http.headers)
        self.http = http
        self.payload = _Payload(http)

    @property
    def args(self):
        return {k: v[0] for k, v in self.http.query.items()}

    @property
    def form(self):
        return {k: v[0] for k, v in self.http.form.items()}


class Response:
    def __init__(self, status: int, body: Any = "", headers: Any = ()):
        self.status = status
        self.body = body
        self.headers = list(headers or [])
        self.location = dict(self.headers).get("Location")


class _Server(AuthorizationServer):
    def __init__(self, state: AuthServer):
        super().__init__()
        self.state = state

    def query_client(self, client_id):
        return self.state.clients.get(client_id)

    def save_token(self, token, request):
        self.state._save_token(token, request)

    def create_oauth2_request(self, request):
        if isinstance(request, OAuth2Request):
            return request
        return _OAuth2Request(request)

    def create_json_request(self, request):
        raise NotImplementedError

    def handle_response(self, status, body, headers):
        return Response(status, body, headers)

    def send_signal(self, name, *args, **kwargs):
        pass


# --- grants and endpoints ---------------------------------------------------------------------


class S256Required(CodeChallenge):
    """PKCE with S256 only; public clients must use it (RFC 9700 §2.1.1)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ("S256",)

    def validate_code_challenge(self, grant, redirect_uri):
        super().validate_code_challenge(grant, redirect_uri)
        data = grant.request.payload.data
        challenge, method = data.get("code_challenge"), data.get("code_challenge_method")
        if grant.request.client.client_secret is None and not challenge:
            raise InvalidRequestError("PKCE with S256 is required for public clients")
        if challenge and method != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")


class AuthCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")

    def save_authorization_code(self, code, request):
        state = self.server.state
        data = request.payload.data
        state.codes[code] = AuthorizationCode(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope,
            user=request.user,
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            expires_at=state.clock() + 600,
        )

    def query_authorization_code(self, code, client):
        state = self.server.state
        item = state.codes.get(code)
        if item and item.client_id == client.client_id and item.expires_at > state.clock():
            return item
        return None

    def delete_authorization_code(self, authorization_code):
        self.server.state.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code):
        return authorization_code.user


class RotatingRefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        token = self.server.state.find_token(refresh_token, "refresh_token")
        if token is None:
            raise InvalidGrantError("Unknown refresh token.")
        if token.refresh_revoked:
            self.server.state.reused(token)
            raise InvalidGrantError("The refresh token has been revoked.")
        return token

    def authenticate_user(self, refresh_token):
        return refresh_token.user

    def _keeps(self, refresh_token) -> bool:
        return refresh_token.client.client_id in self.server.state.keep_refresh_tokens

    def issue_token(self, user, refresh_token):
        if self._keeps(refresh_token):
            self.INCLUDE_NEW_REFRESH_TOKEN = False  # this request's grant object only
        return super().issue_token(user, refresh_token)

    def revoke_old_credential(self, refresh_token):
        if not self._keeps(refresh_token):
            refresh_token.refresh_revoked = True


class CredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")


class DeviceGrant(DeviceCodeGrant):
    def query_device_credential(self, device_code):
        return self.server.state.device_credentials.get(device_code)

    def query_user_grant(self, user_code):
        return self.server.state.device_grants.get(user_code)

    def should_slow_down(self, credential):
        return self.server.state._should_slow_down(credential)

    def create_token_response(self):
        result = super().create_token_response()
        # A device code is single use.
        self.server.state.device_credentials.pop(self.request.payload.data["device_code"], None)
        return result


class DeviceEndpoint(DeviceAuthorizationEndpoint):
    CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")

    @property
    def EXPIRES_IN(self):
        return self.server.state.device_expires_in

    @property
    def INTERVAL(self):
        return self.server.state.device_interval

    def get_verification_uri(self):
        return self.server.state.base_url + "/device"

    def save_device_credential(self, client_id, scope, data):
        state = self.server.state
        credential = DeviceCredential(
            client_id=client_id,
            scope=scope,
            expires_at=state.clock() + data["expires_in"],
            user_code=data["user_code"],
            interval=data["interval"],
            last_poll=None,
            forced=0,
        )
        credential.clock = state.clock
        state.device_credentials[data["device_code"]] = credential


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")

    def query_token(self, token_string, token_type_hint):
        state = self.server.state
        return state.find_token(token_string, token_type_hint) or state.find_token(token_string)

    def revoke_token(self, token, request):
        # Revoking the refresh token ends the grant; an access token alone is just that token.
        token.access_revoked = True
        if request.form.get("token") == token.refresh_token:
            token.refresh_revoked = True


class Issuer(IssuerParameter):
    def __init__(self, state: AuthServer):
        self.state = state

    def get_issuer(self):
        return self.state.issuer if self.state.iss_in_response else None


# --- the server -------------------------------------------------------------------------------


class AuthServer:
    def __init__(self, *, issuer_path: str = "") -> None:
        self.issuer_path = issuer_path.rstrip("/")
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.tokens: list[Token] = []
        self.device_credentials: dict[str, DeviceCredential] = {}
        self.device_grants: dict[str, tuple[dict, bool]] = {}
        self.consent: str | None = "approve"
        self.device_consent: str | None = "approve"
        self.token_lifetime = 3600
        self.device_interval = 1
        self.device_expires_in = 600
        self.force_slow_down = 0
        self.omit_scope = False
        self.iss_in_response = True
        self.metadata_mode = "both"
        self.metadata_overrides: dict[str, Any] = {}
        self.clock: Callable[[], float] = time.time
        self.revoke_on_reuse = False
        self.keep_refresh_tokens: set[str] = set()
        self.reuse_detected = 0
        self.token_calls: Counter[str] = Counter()
        self.device_polls = 0
        self.requests: list[RecordedRequest] = []
        self.lock = threading.RLock()
        self.base_url = ""
        self._httpd: ThreadingHTTPServer | None = None
        self.server = self._build()

    def _build(self) -> _Server:
        server = _Server(self)
        server.register_token_generator(
            "default",
            BearerTokenGenerator(
                lambda **kw: generate_token(42),
                lambda **kw: generate_token(48),
                lambda client, grant_type: self.token_lifetime,
            ),
        )
        server.register_grant(AuthCodeGrant, [S256Required(required=True)])
        server.register_grant(RotatingRefreshTokenGrant)
        server.register_grant(CredentialsGrant)
        server.register_grant(DeviceGrant)
        server.register_endpoint(DeviceEndpoint)
        server.register_endpoint(Revocation)
        self.issuer_extension = Issuer(self)
        server.register_extension(self.issuer_extension)
        return server

    # lifecycle

    def start(self) -> AuthServer:
        handler = type("Handler", (self.handler_class(),), {"auth": self})
        self._httpd, self.base_url = serve(handler)
        return self

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        """The request handler, which a server with more endpoints extends."""
        return _Handler

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # configuration helpers

    @property
    def issuer(self) -> str:
        return self.base_url + self.issuer_path

    def endpoint(self, path: str) -> str:
        return self.base_url + path

    def add_client(
        self,
        client_id: str,
        client_secret: str | None = None,
        *,
        auth_method: str | None = None,
        **kwargs: Any,
    ) -> Client:
        method = auth_method or ("client_secret_basic" if client_secret else "none")
        client = Client(client_id, client_secret, method, **kwargs)
        self.clients[client_id] = client
        return client

    def provider(self, client: Client, *, name: str = "test", **overrides: Any) -> Provider:
        """A ``model.Provider`` pointing at this server for ``client`` (explicit endpoints)."""
        values: dict[str, Any] = {
            "name": name,
            "client_id": client.client_id,
            "issuer": self.issuer,
            "authorization_endpoint": self.endpoint("/authorize"),
            "token_endpoint": self.endpoint("/token"),
            "device_authorization_endpoint": self.endpoint("/device_authorization"),
            "revocation_endpoint": self.endpoint("/revoke"),
            "token_endpoint_auth_method": client.auth_method,
            "scopes": ("read", "write"),
        }
        values.update(overrides)
        return Provider(**values)

    def approve_device(self, user_code: str, approved: bool = True) -> None:
        with self.lock:
            self.device_grants[user_code] = (USER, approved)

    def metadata(self) -> dict[str, Any]:
        data = {
            "issuer": self.issuer,
            "authorization_endpoint": self.endpoint("/authorize"),
            "token_endpoint": self.endpoint("/token"),
            "revocation_endpoint": self.endpoint("/revoke"),
            "device_authorization_endpoint": self.endpoint("/device_authorization"),
            "response_types_supported": ["code"],
            "grant_types_supported": list(ALL_GRANTS),
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["read", "write", "admin", "offline"],
            "authorization_response_iss_parameter_supported": self.iss_in_response,
        }
        AuthorizationServerMetadata(data).validate(metadata_classes=[IssMetadata])
        data.update(self.metadata_overrides)
        return data

    # storage callbacks

    def reused(self, token: Token) -> None:
        """A rotated refresh token was presented again: with ``revoke_on_reuse``, the grant
        ends (every token of its family is revoked)."""
        with self.lock:
            self.reuse_detected += 1
            if self.revoke_on_reuse:
                for one in self.tokens:
                    if one.family == token.family:
                        one.access_revoked = one.refresh_revoked = True

    def _save_token(self, token: dict, request: OAuth2Request) -> None:
        previous = getattr(request, "refresh_token", None)
        with self.lock:
            family = previous.family if isinstance(previous, Token) else len(self.tokens) + 1
            self.tokens.append(
                Token(
                    client=request.client,
                    user=request.user,
                    scope=token.get("scope"),
                    access_token=token["access_token"],
                    refresh_token=token.get("refresh_token"),
                    issued_at=self.clock(),
                    expires_in=int(token.get("expires_in") or 0),
                    clock=self.clock,
                    family=family,
                )
            )
        if self.omit_scope:
            token.pop("scope", None)

    def find_token(self, value: str, hint: str | None = None) -> Token | None:
        with self.lock:
            for token in self.tokens:
                if hint in (None, "access_token") and token.access_token == value:
                    return token
                if hint in (None, "refresh_token") and token.refresh_token == value:
                    return token
        return None

    def _should_slow_down(self, credential: DeviceCredential) -> bool:
        """RFC 8628 §3.5, honestly: polling faster than the current interval is answered with
        ``slow_down``, and the interval grows by 5 s for good. ``force_slow_down`` answers
        ``slow_down`` to that many polls regardless (to exercise the client's back-off)."""
        now = self.clock()
        last = credential["last_poll"]
        credential["last_poll"] = now
        if credential["forced"] < self.force_slow_down:
            credential["forced"] += 1
            credential["interval"] += 5
            return True
        if last is not None and now - last < credential["interval"]:
            credential["interval"] += 5
            return True
        return False

    def bearer_user(self, authorization: str | None) -> dict | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        token = self.find_token(authorization[7:].strip(), "access_token")
        if token is None or token.is_revoked() or token.is_expired():
            return None
        return token.user or {"client": token.client.client_id}


class _Handler(BaseHTTPRequestHandler):
    auth: AuthServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _request(self) -> HTTPRequest:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        form = (
            parse_qs(body, keep_blank_values=True)
            if ctype.endswith("x-www-form-urlencoded")
            else {}
        )
        query = parse_qs(parts.query, keep_blank_values=True)
        request = HTTPRequest(
            self.command, self.auth.base_url + self.path, parts.path, self.headers, query, form
        )
        if ctype == "application/json":  # (RFC 7591 registration)
            try:
                request.json = json.loads(body)  # type: ignore[attr-defined]
            except ValueError:
                request.json = None  # type: ignore[attr-defined]
        with self.auth.lock:
            self.auth.requests.append(
                RecordedRequest(
                    self.command,
                    parts.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    form,
                    query,
                )
            )
        return request

    def _send(self, response: Response) -> None:
        body = response.body
        headers = [(k, v) for k, v in response.headers if k.lower() != "location"]
        if response.location:
            headers.append(("Location", response.location))
        if isinstance(body, dict | list):
            body = json.dumps(body)
            if not any(k.lower() == "content-type" for k, _ in headers):
                headers.append(("Content-Type", "application/json"))
        data = (body or "").encode()
        self.send_response(response.status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        request = self._request()
        auth = self.auth
        route = (request.method, request.path)
        try:
            with auth.lock:
                response = self._route(route, request)
        except Exception as exc:  # a server bug: make it visible to the test
            response = Response(500, {"error": "server_error", "error_description": repr(exc)})
        self._send(response)

    def _route(self, route: tuple[str, str], request: HTTPRequest) -> Response:
        auth, server = self.auth, self.auth.server
        rfc8414 = "/.well-known/oauth-authorization-server" + auth.issuer_path
        openid = auth.issuer_path + "/.well-known/openid-configuration"
        if route == ("GET", rfc8414) and auth.metadata_mode in ("both", "rfc8414"):
            return Response(200, auth.metadata())
        if route == ("GET", openid) and auth.metadata_mode in ("both", "openid"):
            return Response(200, auth.metadata())
        if route == ("GET", "/authorize"):
            return self._authorize(request)
        if route == ("POST", "/token"):
            grant_type = request.form.get("grant_type", [""])[0]
            auth.token_calls[grant_type] += 1
            if grant_type == DEVICE_CODE_GRANT_TYPE:
                auth.device_polls += 1
            return server.create_token_response(request)
        if route == ("POST", "/revoke"):
            return server.create_endpoint_response("revocation", request)
        if route == ("POST", "/device_authorization"):
            return server.create_endpoint_response("device_authorization", request)
        if route == ("GET", "/device"):
            return self._device_page(request)
        if route == ("POST", "/device/approve"):
            user_code = request.form.get("user_code", [""])[0]
            decision = request.form.get("decision", ["approve"])[0]
            auth.approve_device(user_code, decision == "approve")
            return Response(200, {"ok": True})
        if route == ("GET", "/api/me"):
            user = auth.bearer_user(request.headers.get("Authorization"))
            if user is None:
                return Response(401, {"error": "invalid_token"}, [("WWW-Authenticate", "Bearer")])
            return Response(200, user)
        return Response(404, {"error": "not_found"})

    def _authorize(self, request: HTTPRequest) -> Response:
        auth, server = self.auth, self.auth.server
        oauth_request = server.create_oauth2_request(request)
        try:
            grant = server.get_consent_grant(oauth_request, end_user=None)
        except OAuth2Error as error:
            if not error.redirect_uri:
                # Unknown client or unregistered redirect URI: never redirect (RFC 6749 §4.1.2.1).
                return Response(400, dict(error.get_body()))
            response = server.handle_error_response(oauth_request, error)
            auth.issuer_extension.add_issuer_parameter(server, response)
            return response
        user = USER if auth.consent == "approve" else None
        return server.create_authorization_response(oauth_request, grant_user=user, grant=grant)

    def _device_page(self, request: HTTPRequest) -> Response:
        auth = self.auth
        user_code = request.query.get("user_code", [""])[0]
        known = any(c["user_code"] == user_code for c in auth.device_credentials.values())
        if not known:
            return Response(404, "unknown code", [("Content-Type", "text/plain")])
        if auth.device_consent in ("approve", "deny"):
            auth.approve_device(user_code, auth.device_consent == "approve")
            text = f"Device {html.escape(user_code)}: {auth.device_consent}"
        else:
            text = f"Device {html.escape(user_code)}: waiting"
        return Response(200, text, [("Content-Type", "text/html")])


def replace_param(url: str, name: str, value: str | None) -> str:
    """``url`` with query parameter ``name`` replaced (or removed when ``value`` is None)."""
    parts = urlsplit(url)
    query = [(k, v) for k, vs in parse_qs(parts.query, keep_blank_values=True).items() for v in vs]
    query = [(k, v) for k, v in query if k != name]
    base = parts._replace(query="").geturl()
    if value is not None:
        query.append((name, value))
    return add_params_to_uri(base, query) if query else base
