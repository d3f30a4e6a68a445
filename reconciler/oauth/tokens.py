"""Token endpoint operations: code exchange (RFC 6749 §4.1.3 with the RFC 7636 §4.5 verifier),
client credentials (§4.4), refresh (§6); the strict validation of token responses (§5.1, §5.2);
and ``grant_from_result``, the ``model.Grant`` to store from a response.

Requests are built with Authlib (``prepare_token_request``, ``ClientAuth`` for
``client_secret_basic`` / ``client_secret_post`` / ``none``) and sent through ``transport``
(httpx2, no redirects followed, short timeouts). Responses are checked here: an ``error`` member
is an error whatever the HTTP status, an access token must be present and non-blank, an
``id_token``-only answer is refused, and form-encoded bodies are accepted.

Importing this module is cheap: Authlib and httpx2 are imported inside the functions.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..model import Grant, Provider, Secret
from . import quirks
from .endpoints import endpoint
from .errors import (
    AccessDenied,
    InvalidGrant,
    InvalidTokenResponse,
    LinkTimeout,
    OAuthError,
    TransientError,
    client_secrets,
    describe,
    printable,
    scrub,
)
from .transport import parse_body, retry_after, send, unavailable

if TYPE_CHECKING:
    import httpx2

log = logging.getLogger(__name__)

DEVICE_CODE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")

#: The longest lifetime an ``expires_in`` is believed for: larger values (1e15 s has been seen)
#: are clamped, so that the expiry stays a date that every stage can compute with.
MAX_LIFETIME = timedelta(days=3650)

#: ``now`` may be a datetime, a clock function (for flows that take a while), or None (wall clock).
Now = datetime | Callable[[], datetime] | None


@dataclass(frozen=True)
class TokenResult:
    """A validated token response. Secret values are ``Secret``; ``repr`` never shows them.

    ``granted_scopes`` is None when the response had no ``scope`` member (RFC 6749 §5.1: the
    granted scope is then the requested one); ``grant_from_result`` resolves that.
    ``extra`` holds plaintext, provider-specific values picked by a quirk (never a token);
    ``secondary_token`` a second access token a quirk found in the response.
    """

    access_token: Secret
    refresh_token: Secret | None = None
    id_token: Secret | None = None
    token_type: str = "Bearer"
    expires_at: datetime | None = None
    granted_scopes: tuple[str, ...] | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    secondary_token: Secret | None = None


# --- small shared helpers (used by authorize, device, revocation) ---------------------------


def resolve_now(now: Now) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if callable(now):
        now = now()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return now.astimezone(UTC)


def split_scopes(provider: Provider, value: object) -> tuple[str, ...]:
    """A ``scope`` value (string in the provider's separator, or a JSON list) as a tuple, with
    control characters escaped."""
    if isinstance(value, list | tuple):
        items = [str(v).strip() for v in value]
    else:
        text = str(value)
        sep = provider.scope_separator or " "
        items = text.split() if not sep.strip() else [s.strip() for s in text.split(sep)]
    return tuple(dict.fromkeys(printable(s) for s in items if s))


def join_scopes(provider: Provider, scopes: Sequence[str]) -> str:
    return (provider.scope_separator or " ").join(scopes)


def error_from_payload(
    provider: Provider,
    payload: Mapping[str, Any],
    *,
    what: str,
    status: int | None,
    secrets: Sequence[str | None] = (),
    response: httpx2.Response | None = None,
) -> OAuthError:
    """The exception for an OAuth error response (RFC 6749 §5.2, RFC 8628 §3.5, RFC 7009 §2.2.1)."""
    name = provider.name
    code = scrub(str(payload.get("error") or "server_error"), secrets) or "server_error"
    raw = payload.get("error_description")
    description = scrub(raw if raw is None else str(raw), secrets)
    detail = describe(code, description)
    kwargs: dict[str, Any] = {
        "error": code,
        "description": description,
        "provider": name,
        "status_code": status,
    }
    if code == "invalid_grant":
        return InvalidGrant(
            f"{name}: the provider rejected the grant during the {what} ({detail}). The refresh "
            "token or code is revoked, expired or already used; the grant must be linked again "
            f"(`reconcile link {name}`).",
            **kwargs,
        )
    if code == "access_denied":
        return AccessDenied(
            f"{name}: access was denied ({detail}). Nothing was stored; run the link again and "
            "approve the request, or check the scopes you ask for.",
            **kwargs,
        )
    if code == "expired_token":
        return LinkTimeout(
            f"{name}: the device code expired before the request was approved ({detail}). Run "
            "the link again and enter the new code sooner.",
            **kwargs,
        )
    if code in ("temporarily_unavailable", "server_error"):
        return TransientError(
            f"{name}: the provider is temporarily unable to handle the {what} ({detail}); the "
            "current grant is kept, try again later.",
            retry_after=retry_after(response) if response is not None else None,
            **kwargs,
        )
    if code in ("invalid_client", "unauthorized_client"):
        return OAuthError(
            f"{name}: the provider rejected the client during the {what} ({detail}). Check "
            f"`client_id`, `client_secret` and `token_endpoint_auth_method` of {name}, and that "
            "the app registration allows this flow.",
            **kwargs,
        )
    if code == "invalid_scope":
        return OAuthError(
            f"{name}: the provider refused the requested scopes ({detail}). Check `scopes` of "
            f"{name} against the provider's documentation.",
            **kwargs,
        )
    return OAuthError(f"{name}: the {what} failed ({detail}).", **kwargs)


def _lifetime(provider: Provider, payload: Mapping[str, Any], key: str) -> timedelta | None:
    """``payload[key]`` (``expires_in`` and the like: seconds, as a number or a numeric string)
    as a duration, at most ``MAX_LIFETIME``; None when absent."""
    value = payload.get(key)
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        raise InvalidTokenResponse(
            f"{provider.name}: the token response has an invalid `{key}` "
            f"({scrub(str(value)[:40])}; a number of seconds is expected); nothing was stored "
            "and the current grant is kept. Try again; report it to the provider if it persists.",
            error="invalid_token_response",
            provider=provider.name,
        )
    if seconds > MAX_LIFETIME.total_seconds():
        log.warning(
            "%s: `%s` of %g s in the token response; counting %d days instead",
            provider.name,
            key,
            seconds,
            MAX_LIFETIME.days,
        )
        return MAX_LIFETIME
    return timedelta(seconds=seconds)


def _optional_secret(provider: Provider, payload: Mapping[str, Any], key: str) -> Secret | None:
    value = payload.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidTokenResponse(
            f"{provider.name}: the token response has an invalid `{key}`; nothing was stored.",
            error="invalid_token_response",
            provider=provider.name,
        )
    return _token(provider, key, value)


def _token(provider: Provider, key: str, value: str) -> Secret:
    """``value`` as a Secret, refused when it holds a control (non-printable) character: a
    token goes into HTTP headers and, from `reconcile token`, to a terminal."""
    if not value.isprintable():
        raise InvalidTokenResponse(
            f"{provider.name}: the token response's `{key}` contains control characters, so it "
            "was refused and nothing was stored. Report it to the provider.",
            error="invalid_token_response",
            provider=provider.name,
        )
    return Secret(value)


def token_result(
    provider: Provider, payload: Mapping[str, Any], extra: Mapping[str, str], now: datetime
) -> TokenResult:
    """Validate a successful token response body (RFC 6749 §5.1) into a ``TokenResult``."""
    name = provider.name
    access = payload.get("access_token")
    if not isinstance(access, str) or not access.strip():
        if payload.get("id_token"):
            raise InvalidTokenResponse(
                f"{name}: the provider returned only an id_token (an OpenID sign-in answer) and "
                "no access token, so there is nothing to call the API with. Check the preset or "
                "endpoints of this provider (response_type, token endpoint).",
                error="invalid_token_response",
                provider=name,
            )
        raise InvalidTokenResponse(
            f"{name}: the token response has no access token; nothing was stored. Check the "
            "token endpoint URL; try again, and report it to the provider if it persists.",
            error="invalid_token_response",
            provider=name,
        )
    token_type = payload.get("token_type")
    if token_type is None or token_type == "":
        token_type = "Bearer"
    elif not isinstance(token_type, str):
        raise InvalidTokenResponse(
            f"{name}: the token response has an invalid token_type; nothing was stored.",
            error="invalid_token_response",
            provider=name,
        )
    elif token_type.lower() == "bearer":
        token_type = "Bearer"
    else:
        token_type = printable(token_type)
    lifetime = _lifetime(provider, payload, "expires_in")
    expires_at = now + lifetime if lifetime is not None else None
    extra = {key: printable(value) for key, value in extra.items()}
    refresh_lifetime = _lifetime(provider, payload, "refresh_token_expires_in")
    if refresh_lifetime is not None:
        extra["refresh_token_expires_at"] = (
            (now + refresh_lifetime).replace(microsecond=0).isoformat()
        )
    scope = payload.get("scope")
    granted = None if scope is None else split_scopes(provider, scope)
    return TokenResult(
        access_token=_token(provider, "access_token", access),
        refresh_token=_optional_secret(provider, payload, "refresh_token"),
        id_token=_optional_secret(provider, payload, "id_token"),
        token_type=token_type,
        expires_at=expires_at,
        granted_scopes=granted,
        extra=extra,
        secondary_token=_optional_secret(provider, payload, quirks.SECONDARY_TOKEN),
    )


def token_response(
    provider: Provider,
    response: httpx2.Response,
    *,
    what: str,
    now: datetime,
    secrets: Sequence[str | None] = (),
) -> TokenResult:
    """Classify and validate a token endpoint response."""
    name = provider.name
    status = response.status_code
    busy = unavailable(
        provider,
        response,
        endpoint=f"token endpoint answered HTTP {status} to the {what}",
        outcome="the current grant is kept",
        secrets=secrets,
    )
    if busy is not None:
        raise busy
    payload = parse_body(response, form_ok=quirks.form_encoded_response(provider))
    if payload is None:
        raise InvalidTokenResponse(
            f"{name}: the token endpoint answered HTTP {status} with a body that is neither JSON "
            "nor form-encoded; nothing was stored. Check the token endpoint URL.",
            error="invalid_token_response",
            provider=name,
            status_code=status,
        )
    extra: dict[str, str] = {}
    payload = quirks.normalize_token_response(provider, payload, extra)
    if payload.get("error"):
        raise error_from_payload(
            provider, payload, what=what, status=status, secrets=secrets, response=response
        )
    if not 200 <= status < 300:
        raise InvalidTokenResponse(
            f"{name}: the token endpoint answered HTTP {status} to the {what} without an OAuth "
            "error code; nothing was stored. Check the token endpoint URL and client settings.",
            error="invalid_token_response",
            provider=name,
            status_code=status,
        )
    return token_result(provider, payload, extra, now)


def client_auth(provider: Provider, client_secret: Secret | None, *, json_body: bool = False):
    """Authlib's client authentication for the provider's configured method, as an httpx2
    ``Auth``."""
    # Authlib is heavy; only a request to an endpoint needs it.
    from authlib.oauth2.auth import ClientAuth

    name = provider.name
    method = provider.token_endpoint_auth_method or (
        "client_secret_basic" if client_secret else "none"
    )
    if method not in AUTH_METHODS:
        raise OAuthError(
            f"{name}: token_endpoint_auth_method {method!r} is not supported; use one of "
            f"{', '.join(AUTH_METHODS)}.",
            error="unsupported_auth_method",
            provider=name,
        )
    if method != "none" and not client_secret:
        raise OAuthError(
            f"{name}: client authentication {method} needs a client secret, and none is "
            f"configured. Set `client_secret` for {name} (env:, file:, sops: or prompt), or "
            "`token_endpoint_auth_method: none` for a public client.",
            error="invalid_client",
            provider=name,
        )
    if json_body and method == "client_secret_post":
        method = "client_secret_basic"  # a JSON body carries no form credentials
    secret = client_secret.reveal() if client_secret else None
    return _httpx_auth()(ClientAuth(provider.client_id, secret, method))


@functools.cache
def _httpx_auth() -> type:
    """An httpx2 ``Auth`` that applies an Authlib ``ClientAuth`` to the request: what
    ``authlib.integrations.httpx_client.OAuth2ClientAuth`` does, without importing that
    package's OpenID Connect and JOSE clients (~80 ms a process) that nothing here uses."""
    import httpx2

    class AuthlibClientAuth(httpx2.Auth):
        requires_request_body = True

        def __init__(self, auth: Any) -> None:
            self.auth = auth

        def auth_flow(
            self, request: httpx2.Request
        ) -> Generator[httpx2.Request, httpx2.Response, None]:
            url, headers, body = self.auth.prepare(
                request.method, str(request.url), request.headers, request.content
            )
            headers["Content-Length"] = str(len(body))
            signed = httpx2.Request(request.method, url, headers=headers, content=body)
            signed.extensions = request.extensions
            yield signed

    return AuthlibClientAuth


def request_token(
    provider: Provider,
    client_secret: Secret | None,
    grant_type: str,
    params: Mapping[str, str | None],
    *,
    what: str,
    now: Now,
    secrets: Sequence[str | None] = (),
) -> TokenResult:
    """POST one token request (any grant type) and return the validated result."""
    # Authlib is heavy; only a token request needs its body builder.
    from authlib.oauth2.rfc6749.parameters import prepare_token_request

    url = endpoint(provider, "token_endpoint", "token endpoint")
    fields: dict[str, str] = {
        k: str(v) for k, v in provider.token_params.items() if k not in params and v is not None
    }
    fields.update({k: v for k, v in params.items() if v})
    secrets = [*secrets, *client_secrets(provider.client_id, _reveal(client_secret))]
    headers = {"Accept": "application/json"}
    if quirks.json_token_request(provider):
        kwargs: dict[str, Any] = {"json": {"grant_type": grant_type, **fields}}
        auth = client_auth(provider, client_secret, json_body=True)
    else:
        body = prepare_token_request(grant_type, **fields)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        kwargs = {"content": body.encode()}
        auth = client_auth(provider, client_secret)
    log.debug("%s: %s at %s", provider.name, what, url)
    response = send(provider, "POST", url, what=what, headers=headers, auth=auth, **kwargs)
    return token_response(provider, response, what=what, now=resolve_now(now), secrets=secrets)


def _reveal(value: Secret | str | None) -> str | None:
    if value is None:
        return None
    return value.reveal() if isinstance(value, Secret) else value


# --- public operations -----------------------------------------------------------------------


def exchange_code(
    provider: Provider,
    client_secret: Secret | None,
    code: Secret | str,
    redirect_uri: str,
    code_verifier: Secret | str | None,
    *,
    now: Now,
) -> TokenResult:
    """Authorization code → tokens (RFC 6749 §4.1.3, with the PKCE verifier of RFC 7636 §4.5)."""
    code_value, verifier = _reveal(code), _reveal(code_verifier)
    return request_token(
        provider,
        client_secret,
        "authorization_code",
        {"code": code_value, "redirect_uri": redirect_uri, "code_verifier": verifier},
        what="code exchange",
        now=now,
        secrets=[code_value, verifier],
    )


def refresh(
    provider: Provider,
    client_secret: Secret | None,
    refresh_token: Secret,
    *,
    now: Now,
    scopes: Sequence[str] | None = None,
) -> TokenResult:
    """Refresh an access token (RFC 6749 §6). ``scopes`` narrows the request; by default the
    originally granted scope is kept. ``InvalidGrant`` means the grant needs a relink."""
    value = refresh_token.reveal()
    return request_token(
        provider,
        client_secret,
        "refresh_token",
        {"refresh_token": value, "scope": join_scopes(provider, scopes) if scopes else None},
        what="token refresh",
        now=now,
        secrets=[value],
    )


def client_credentials(
    provider: Provider,
    client_secret: Secret | None,
    *,
    now: Now,
    scopes: Sequence[str] | None = None,
) -> TokenResult:
    """Client credentials grant (RFC 6749 §4.4) for the provider's scopes."""
    scopes = provider.scopes if scopes is None else scopes
    return request_token(
        provider,
        client_secret,
        "client_credentials",
        {"scope": join_scopes(provider, scopes) if scopes else None},
        what="client-credentials request",
        now=now,
    )


def grant_from_result(
    provider: Provider,
    result: TokenResult,
    *,
    now: datetime,
    previous: Grant | None = None,
    requested_scopes: Sequence[str] | None = None,
) -> Grant:
    """The ``model.Grant`` to store after a link (``previous=None``) or a refresh (``previous``
    = the grant that was refreshed).

    - ``scopes``: the requested scopes (``requested_scopes``, else the previous grant's for a
      refresh, else the provider's);
    - ``granted_scopes``: the response's ``scope``; when absent, the requested scopes (RFC 6749
      §5.1), or for a refresh the previously granted ones (§6);
    - a refresh response without a refresh token keeps the old one (§6), and the previous
      id_token, secondary token, client secret, recipients and extras carry over.
    """
    now = resolve_now(now)
    if requested_scopes is not None:
        requested = tuple(requested_scopes)
    elif previous is not None and previous.scopes:
        requested = previous.scopes
    else:
        requested = tuple(provider.scopes)
    if result.granted_scopes is not None:
        granted = result.granted_scopes
    elif previous is not None and previous.granted_scopes and requested_scopes is None:
        granted = previous.granted_scopes
    else:
        granted = requested
    extra = {**(previous.extra if previous else {}), **result.extra}
    return Grant(
        name=provider.name,
        kind="oauth2",
        status="ok",
        status_reason=None,
        flow=provider.flow,
        client_id=provider.client_id,
        token_endpoint=provider.token_endpoint,
        scopes=requested,
        granted_scopes=tuple(granted),
        token_type=result.token_type,
        expires_at=result.expires_at,
        obtained_at=now,
        access_token=result.access_token,
        refresh_token=result.refresh_token
        or (previous.refresh_token if previous is not None else None),
        id_token=result.id_token or (previous.id_token if previous is not None else None),
        value=None,
        client_secret=previous.client_secret if previous is not None else None,
        secondary_token=result.secondary_token
        or (previous.secondary_token if previous is not None else None),
        registration_access_token=previous.registration_access_token if previous else None,
        resource=previous.resource if previous is not None else None,
        authorization_server=previous.authorization_server if previous is not None else None,
        recipients=previous.recipients if previous is not None else (),
        decrypted=True,
        extra=extra,
    )
