"""Device authorization grant (RFC 8628).

``start_device_flow`` asks for a device code, ``poll_once`` makes one token request and reports
its status (for an HTTP surface that polls on behalf of a browser), and ``run_device_flow``
announces the user code and polls at the server's interval, adding 5 seconds on every
``slow_down`` (§3.5) until the user approves, refuses, or the code expires.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..model import Provider, Secret
from . import quirks
from .endpoints import endpoint, is_secure_url
from .errors import (
    AccessDenied,
    LinkTimeout,
    OAuthError,
    TransientError,
    client_secrets,
    printable,
)
from .tokens import (
    DEVICE_CODE_GRANT_TYPE,
    Now,
    TokenResult,
    client_auth,
    error_from_payload,
    join_scopes,
    request_token,
)
from .transport import parse_body, send, unavailable

log = logging.getLogger(__name__)

#: RFC 8628 §3.2: the interval to use when the server does not send one.
DEFAULT_INTERVAL = 5
#: RFC 8628 §3.5: how much a ``slow_down`` adds to the polling interval, for good.
SLOW_DOWN_STEP = 5
#: Ceiling for the back-off after transient errors.
MAX_BACKOFF = 60
#: The longest ``expires_in`` or ``interval`` believed (larger ones overflow ``time.sleep``).
MAX_SECONDS = 86400

PollStatus = Literal["completed", "authorization_pending", "slow_down", "error"]


@dataclass(frozen=True)
class DeviceAuthorization:
    """A device authorization response (RFC 8628 §3.2). ``device_code`` is a secret."""

    device_code: Secret
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int = DEFAULT_INTERVAL
    scopes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class DevicePoll:
    """The outcome of one poll: ``completed`` carries ``token``, ``error`` carries ``error``."""

    status: PollStatus
    token: TokenResult | None = None
    error: OAuthError | None = None


def _int_field(provider: Provider, payload: dict[str, Any], key: str, default: int | None) -> int:
    value = payload.get(key, default)
    try:
        # Any JSON value may come: int() refusing it is the check (caught below).
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = -1
    if (
        isinstance(value, bool)
        or not 0 <= number <= MAX_SECONDS
        or (key == "expires_in" and number == 0)
    ):
        raise OAuthError(
            f"{provider.name}: the device authorization response has an invalid `{key}`. "
            "Check `device_authorization_endpoint`; try again.",
            error="invalid_device_response",
            provider=provider.name,
        )
    return number


def start_device_flow(
    provider: Provider, client_secret: Secret | None, scopes: Sequence[str] | None = None
) -> DeviceAuthorization:
    """Request a device code and user code (RFC 8628 §3.1)."""
    # Authlib is heavy; only a device authorization request needs its form encoder.
    from authlib.common.urls import url_encode

    name = provider.name
    url = endpoint(provider, "device_authorization_endpoint", "device authorization endpoint")
    scopes = tuple(provider.scopes if scopes is None else scopes)
    fields = {"scope": join_scopes(provider, scopes)} if scopes else {}
    response = send(
        provider,
        "POST",
        url,
        what="device authorization request",
        content=url_encode(list(fields.items())).encode(),
        headers={
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        auth=client_auth(provider, client_secret),
    )
    status = response.status_code
    secrets = client_secrets(provider.client_id, client_secret.reveal() if client_secret else None)
    busy = unavailable(
        provider,
        response,
        endpoint=f"device authorization endpoint answered HTTP {status}",
        outcome="no code was issued",
        secrets=secrets,
    )
    if busy is not None:
        raise busy
    payload = parse_body(response, form_ok=quirks.form_encoded_response(provider))
    if payload is None:
        raise OAuthError(
            f"{name}: the device authorization endpoint answered HTTP {status} with a body that "
            "is neither JSON nor form-encoded. Check `device_authorization_endpoint`.",
            error="invalid_device_response",
            provider=name,
            status_code=status,
        )
    if payload.get("error"):
        raise error_from_payload(
            provider,
            payload,
            what="device authorization request",
            status=status,
            secrets=secrets,
            response=response,
        )
    if not 200 <= status < 300:
        raise OAuthError(
            f"{name}: the device authorization endpoint answered HTTP {status}. Check "
            "`device_authorization_endpoint` and the client settings.",
            error="invalid_device_response",
            provider=name,
            status_code=status,
        )
    device_code = payload.get("device_code")
    user_code = payload.get("user_code")
    # ``verification_url`` is the pre-RFC spelling some servers still send.
    verification_uri = payload.get("verification_uri") or payload.get("verification_url")
    complete = payload.get("verification_uri_complete") or None
    for key, value in (
        ("device_code", device_code),
        ("user_code", user_code),
        ("verification_uri", verification_uri),
    ):
        if not isinstance(value, str) or not value.strip():
            raise OAuthError(
                f"{name}: the device authorization response has no `{key}`. Check "
                "`device_authorization_endpoint`.",
                error="invalid_device_response",
                provider=name,
            )
    for uri in (verification_uri, complete):
        if uri is not None and (not isinstance(uri, str) or not is_secure_url(uri)):
            raise OAuthError(
                f"{name}: the device authorization response points to a verification page that "
                "is not an https URL; refusing to show it. Check `device_authorization_endpoint`.",
                error="invalid_device_response",
                provider=name,
            )
    # The loop above checked these three are non-empty strings; mypy cannot follow a loop.
    return DeviceAuthorization(
        device_code=Secret(device_code),  # type: ignore[arg-type]
        # Shown to the user: no control character of the provider's reaches a terminal (the
        # URIs, checked above, have none).
        user_code=printable(user_code),  # type: ignore[arg-type]
        verification_uri=verification_uri,  # type: ignore[arg-type]
        verification_uri_complete=complete,
        expires_in=_int_field(provider, payload, "expires_in", None),
        interval=_int_field(provider, payload, "interval", DEFAULT_INTERVAL),
        scopes=scopes,
    )


def poll_once(
    provider: Provider,
    client_secret: Secret | None,
    device_code: Secret | str | DeviceAuthorization,
    *,
    now: Now = None,
) -> DevicePoll:
    """One device access token request (RFC 8628 §3.4) and its status (§3.5)."""
    if isinstance(device_code, DeviceAuthorization):
        device_code = device_code.device_code
    value = device_code.reveal() if isinstance(device_code, Secret) else device_code
    try:
        token = request_token(
            provider,
            client_secret,
            DEVICE_CODE_GRANT_TYPE,
            {"device_code": value},
            what="device-code poll",
            now=now,
            secrets=[value],
        )
    except OAuthError as exc:
        if exc.error == "authorization_pending":
            return DevicePoll("authorization_pending")
        if exc.error == "slow_down":
            return DevicePoll("slow_down")
        return DevicePoll("error", error=exc)
    return DevicePoll("completed", token=token)


def run_device_flow(
    provider: Provider,
    client_secret: Secret | None,
    scopes: Sequence[str] | None = None,
    *,
    announce: Callable[[DeviceAuthorization], None],
    waiting: Callable[[float], None] | None = None,
    now: Now = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> TokenResult:
    """Run the device flow to completion and return the tokens.

    ``announce`` shows the user code and verification URI; ``waiting`` (optional) is told the
    seconds left before the code expires ahead of every wait, for a countdown. Polls every
    ``interval`` seconds, adding 5 s for good on each ``slow_down``; transient errors back off
    (doubling, at most 60 s, at least the provider's ``Retry-After``) until the code expires.
    Raises ``AccessDenied`` on refusal and ``LinkTimeout`` when the code expires.
    """
    name = provider.name
    authorization = start_device_flow(provider, client_secret, scopes)
    announce(authorization)
    interval = float(authorization.interval)
    deadline = clock() + authorization.expires_in
    wait = interval
    while True:
        if clock() + wait > deadline:
            raise LinkTimeout(
                f"{name}: the device code expired after {authorization.expires_in} s without "
                "approval, so nothing was stored. Run the link again and enter the code at "
                f"{authorization.verification_uri} sooner.",
                error="expired_token",
                provider=name,
            )
        if waiting is not None:
            waiting(deadline - clock())
        sleep(wait)
        poll = poll_once(provider, client_secret, authorization.device_code, now=now)
        if poll.status == "completed" and poll.token is not None:
            return poll.token
        if poll.status == "authorization_pending":
            wait = interval
            continue
        if poll.status == "slow_down":
            interval += SLOW_DOWN_STEP
            wait = interval
            log.debug("%s: slow_down, polling every %g s", name, interval)
            continue
        error = poll.error
        if isinstance(error, TransientError):
            wait = max(min(wait * 2, MAX_BACKOFF), interval, error.retry_after or 0)
            log.info("%s: transient error while polling, retrying in %g s", name, wait)
            continue
        if isinstance(error, AccessDenied | LinkTimeout):
            raise error
        raise error or OAuthError(f"{name}: the device flow failed.", provider=name)
