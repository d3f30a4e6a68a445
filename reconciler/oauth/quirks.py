"""Named provider quirks, selected by ``Provider.quirks`` (the catalog's vocabulary): where a
provider departs from RFC 6749 §4.1.1 (authorization request), §5.1-§5.2 (token responses) or
RFC 7009 (revocation), this module says how.

Each quirk is a small set of hooks; the protocol code asks this module at fixed points and never
tests which provider it is talking to. The hook points are:

- ``authorization_params``: adjust the authorization request parameters;
- ``json_token_request``: send token requests as a JSON body with HTTP Basic client auth;
- ``form_encoded_response``: accept a form-encoded token response whatever its Content-Type;
- ``normalize_token_response``: rewrite a parsed token response into the RFC 6749 §5.1 shape and
  pick plaintext extras (never tokens) to keep in the grant file;
- ``revoker``: replace RFC 7009 revocation by a provider-specific call.

Vocabulary (keep in sync with ``reconciler/catalog/*.yaml``):

``form_encoded_token_response``
    GitHub: form-encoded token responses, comma-separated ``scope``, GitHub error codes
    (``bad_verification_code``, ``bad_refresh_token``) mapped to ``invalid_grant``.
``slack_authed_user``
    Slack OAuth v2: the declared scopes are requested as ``user_scope`` and the grant is the user
    token (under ``authed_user``), unless ``authorization_params`` sets ``user_scope`` itself:
    the declared scopes are then bot scopes and the grant is the bot token (top level). The
    other token, when there is one, is kept as the grant's ``secondary_token``, with
    ``secondary_token_kind`` (``user`` / ``bot``) and ``secondary_granted_scopes`` in ``extra``.
    ``ok: false`` answers and Slack error codes are mapped (also for ``auth.revoke``).
``json_token_request``
    Notion: token and revocation requests are a JSON body with HTTP Basic client
    authentication.
``salesforce_instance_url``
    Salesforce: keep ``instance_url`` (and the identity URL) in ``extra``; no ``expires_in``.
``github_grant_deletion``
    GitHub: revoke with ``DELETE {api_base}/applications/{client_id}/grant`` (Basic auth, JSON
    ``{"access_token": ...}``); ``api_base`` from ``provider.extras`` (default api.github.com).
``incremental_consent``
    Google: ``include_granted_scopes=true`` on the authorization request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from . import transport
from .endpoints import check_endpoint, is_secure_url
from .errors import InvalidTokenResponse, OAuthError, client_secrets, scrub

if TYPE_CHECKING:
    from ..model import Provider, Secret

log = logging.getLogger(__name__)

Payload = dict[str, Any]
Extra = dict[str, str]
Revoker = Callable[["Provider", "Secret | None", "Secret", "str | None"], None]

#: The member of a normalized token response that carries a second access token (a ``Secret``
#: once validated): ``tokens.TokenResult.secondary_token``. This module imports neither
#: ``tokens`` nor ``revocation``: they call its hooks.
SECONDARY_TOKEN = "secondary_token"


@dataclass(frozen=True)
class Quirk:
    name: str
    authorization_params: Callable[[Provider, tuple[str, ...], dict[str, str]], None] | None = None
    json_token_request: bool = False
    form_encoded_response: bool = False
    token_response: Callable[[Provider, Payload, Extra], Payload] | None = None
    revoke: Revoker | None = None


# --- helpers -------------------------------------------------------------------------------


def _split_commas(payload: Payload, *keys: str) -> None:
    """Scopes that a provider returns comma-separated become a list of scope tokens."""
    for key in keys:
        value = payload.get(key)
        if isinstance(value, str):
            payload[key] = [part for part in value.replace(",", " ").split() if part]


def _map_errors(payload: Payload, mapping: dict[str, str]) -> None:
    code = payload.get("error")
    if isinstance(code, str) and code in mapping:
        original = payload.get("error_description")
        payload["error"] = mapping[code]
        payload["error_description"] = f"{code}: {original}" if original else code


def _keep(extra: Extra, key: str, value: object) -> None:
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
        extra[key] = str(value)


# --- GitHub ----------------------------------------------------------------------------------

_GITHUB_ERRORS = {
    "bad_verification_code": "invalid_grant",
    "bad_refresh_token": "invalid_grant",
    "incorrect_client_credentials": "invalid_client",
}


def _github_token_response(provider: Provider, payload: Payload, extra: Extra) -> Payload:
    _map_errors(payload, _GITHUB_ERRORS)
    _split_commas(payload, "scope")
    return payload


def _github_delete_grant(
    provider: Provider, client_secret: Secret | None, token: Secret, token_type_hint: str | None
) -> None:
    """``DELETE /applications/{client_id}/grant``: revokes the grant and all its tokens."""
    # httpx2 is heavy; only this revocation call needs its Basic auth.
    import httpx2

    name = provider.name
    if not client_secret:
        raise OAuthError(
            f"{name}: revoking a GitHub grant needs the OAuth app's client secret, and none is "
            f"configured. Set `client_secret` for {name}, or revoke the app under GitHub "
            "Settings → Applications → Authorized OAuth Apps.",
            error="invalid_client",
            provider=name,
        )
    api_base = str(provider.extras.get("api_base", "https://api.github.com")).rstrip("/")
    url = f"{api_base}/applications/{quote(provider.client_id, safe='')}/grant"
    check_endpoint(provider, url, "GitHub API")
    response = transport.send(
        provider,
        "DELETE",
        url,
        what="grant deletion",
        json={"access_token": token.reveal()},
        auth=httpx2.BasicAuth(provider.client_id, client_secret.reveal()),
        headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
    )
    status = response.status_code
    secrets = [token.reveal(), *client_secrets(provider.client_id, client_secret.reveal())]
    if 200 <= status < 300:
        return
    if status in (404, 422):
        # The grant (or the token) no longer exists: nothing left to revoke (RFC 7009 §2.2).
        log.info("%s: GitHub reports the grant as already gone (HTTP %s)", name, status)
        return
    busy = transport.unavailable(
        provider,
        response,
        endpoint=f"GitHub API answered HTTP {status} to the grant deletion",
        outcome="the grant is not deleted yet",
        secrets=secrets,
    )
    if busy is not None:
        raise busy
    try:
        body = response.json()
        detail = body.get("message") if isinstance(body, dict) else None
    except ValueError:
        detail = None
    detail = scrub(detail, secrets)
    raise OAuthError(
        f"{name}: GitHub refused to delete the grant (HTTP {status}"
        f"{': ' + detail if detail else ''}). Check the client ID and secret of {name}, or "
        "revoke the app under GitHub Settings → Applications → Authorized OAuth Apps.",
        error="invalid_client" if status in (401, 403) else "revocation_failed",
        description=detail,
        provider=name,
        status_code=status,
    )


# --- Slack -----------------------------------------------------------------------------------

_SLACK_ERRORS = {
    "invalid_code": "invalid_grant",
    "code_already_used": "invalid_grant",
    "code_expired": "invalid_grant",
    "invalid_refresh_token": "invalid_grant",
    "token_revoked": "invalid_grant",
    "token_expired": "invalid_grant",
    "invalid_auth": "invalid_grant",
    "account_inactive": "invalid_grant",
    "not_authed": "invalid_request",
    "invalid_client_id": "invalid_client",
    "bad_client_secret": "invalid_client",
    "ratelimited": "temporarily_unavailable",
}
_TOKEN_KEYS = ("access_token", "refresh_token", "expires_in", "scope", "token_type", "id_token")


def _slack_authorization_params(
    provider: Provider, scopes: tuple[str, ...], params: dict[str, str]
) -> None:
    # The grant is the user token, so the declared scopes are user scopes (and the granted
    # scopes compared with them come from ``authed_user.scope``). An explicit ``user_scope`` in
    # authorization_params wins; the declared scopes then stay bot scopes in ``scope``.
    if "user_scope" in params:
        return
    params.pop("scope", None)
    if scopes:
        params["user_scope"] = ",".join(scopes)


def _slack_token_response(provider: Provider, payload: Payload, extra: Extra) -> Payload:
    if payload.get("ok") is False and not payload.get("error"):
        payload["error"] = "slack_error"
    _map_errors(payload, _SLACK_ERRORS)
    user = payload.get("authed_user")
    if isinstance(user, dict):
        _keep(extra, "slack_user_id", user.get("id"))
        if user.get("access_token"):
            payload = _slack_pick_token(provider, payload, user, extra)
    team = payload.get("team")
    if isinstance(team, dict):
        _keep(extra, "slack_team_id", team.get("id"))
    enterprise = payload.get("enterprise")
    if isinstance(enterprise, dict):
        _keep(extra, "slack_enterprise_id", enterprise.get("id"))
    _keep(extra, "slack_app_id", payload.get("app_id"))
    if str(payload.get("token_type", "")).lower() in ("user", "bot"):
        payload["token_type"] = "Bearer"
    _split_commas(payload, "scope")
    return payload


def _slack_pick_token(provider: Provider, payload: Payload, user: dict, extra: Extra) -> Payload:
    """The grant is the token the declared scopes were asked for (see
    ``_slack_authorization_params``): the bot token when ``user_scope`` is set explicitly,
    else the user token. The other one becomes the secondary token."""
    bot = {k: payload[k] for k in _TOKEN_KEYS if k in payload}
    person = {k: user[k] for k in _TOKEN_KEYS if k in user}
    if "user_scope" in provider.authorization_params and bot.get("access_token"):
        grant, other, kind = bot, person, "user"
    else:
        grant, other, kind = person, bot, "bot"
    payload = {k: v for k, v in payload.items() if k not in _TOKEN_KEYS} | grant
    if other.get("access_token"):
        payload[SECONDARY_TOKEN] = other["access_token"]
        extra["secondary_token_kind"] = kind
        scopes = other.get("scope")
        if isinstance(scopes, str):
            extra["secondary_granted_scopes"] = ",".join(scopes.replace(",", " ").split())
    return payload


# --- Salesforce ------------------------------------------------------------------------------


def _salesforce_token_response(provider: Provider, payload: Payload, extra: Extra) -> Payload:
    if payload.get("error"):
        return payload
    instance_url = payload.get("instance_url")
    if instance_url is not None:
        if not isinstance(instance_url, str) or not is_secure_url(instance_url):
            raise InvalidTokenResponse(
                f"{provider.name}: Salesforce returned an instance_url that is not an https URL; "
                "refusing to store it. Link the grant again, and report it if it persists.",
                error="invalid_token_response",
                provider=provider.name,
            )
        extra["instance_url"] = instance_url
    identity = payload.get("id")
    if isinstance(identity, str) and is_secure_url(identity):
        extra["identity_url"] = identity
    return payload


# --- Google ----------------------------------------------------------------------------------


def _incremental_consent(
    provider: Provider, scopes: tuple[str, ...], params: dict[str, str]
) -> None:
    params["include_granted_scopes"] = "true"


# --- registry --------------------------------------------------------------------------------

QUIRKS: dict[str, Quirk] = {
    q.name: q
    for q in (
        Quirk(
            "form_encoded_token_response",
            form_encoded_response=True,
            token_response=_github_token_response,
        ),
        Quirk(
            "slack_authed_user",
            authorization_params=_slack_authorization_params,
            token_response=_slack_token_response,
        ),
        Quirk("json_token_request", json_token_request=True),
        Quirk("salesforce_instance_url", token_response=_salesforce_token_response),
        Quirk("github_grant_deletion", revoke=_github_delete_grant),
        Quirk("incremental_consent", authorization_params=_incremental_consent),
    )
}

KNOWN_QUIRKS = frozenset(QUIRKS)


def check(names: Iterable[str]) -> None:
    """Raise ``ValueError`` naming any quirk this module does not implement."""
    unknown = sorted(set(names) - KNOWN_QUIRKS)
    if unknown:
        raise ValueError(
            f"unknown quirk(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_QUIRKS))}"
        )


def _active(provider: Provider) -> list[Quirk]:
    check(provider.quirks)
    return [QUIRKS[name] for name in provider.quirks]


def authorization_params(
    provider: Provider, scopes: Sequence[str], params: dict[str, str]
) -> dict[str, str]:
    for quirk in _active(provider):
        if quirk.authorization_params:
            quirk.authorization_params(provider, tuple(scopes), params)
    return params


def json_token_request(provider: Provider) -> bool:
    return any(q.json_token_request for q in _active(provider))


def form_encoded_response(provider: Provider) -> bool:
    return any(q.form_encoded_response for q in _active(provider))


def normalize_token_response(provider: Provider, payload: Payload, extra: Extra) -> Payload:
    for quirk in _active(provider):
        if quirk.token_response:
            payload = quirk.token_response(provider, payload, extra)
    return payload


def revoker(provider: Provider) -> Revoker | None:
    for quirk in _active(provider):
        if quirk.revoke:
            return quirk.revoke
    return None
