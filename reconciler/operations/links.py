"""Link flows and revocation: `reconcile link` and `revoke` in one call, and the steps a
long-running face (`reconcile serve`) drives one request at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..apply import lifecycle
from ..custody import open_custody
from ..errors import ReconcilerError, UserError
from ..model import Desired, Grant, Provider, Secret
from ..oauth import authorize, device
from ..oauth.authorize import PendingLink
from ..oauth.device import DeviceAuthorization
from ..oauth.errors import TransientError
from ..oauth.loopback import system_browser
from ..oauth.tokens import TokenResult
from ..vault.errors import VaultError
from ..vault.store import grant_path
from .basics import _not_a_provider, declared_provider, load_desired, utcnow
from .state import load_state


def link(
    config_path: Path,
    name: str,
    browser,
    *,
    device: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Grant:
    """Run one link flow now, whatever the plan says (`reconcile link NAME`)."""
    state = load_state(config_path, environ=environ)
    if name not in state.desired.providers:
        raise UserError(_not_a_provider(state.desired, name))
    known = (state.known or {}).get(name)
    previous = known.grant if known is not None and state.identities is not None else None
    return lifecycle.link(
        state.desired, name, utcnow(), browser, device=device, previous=previous, environ=environ
    )


def open_browser(url: str) -> None:
    """Open ``url`` in the system browser (``$BROWSER`` honoured); raise if there is none."""
    system_browser(url)


@dataclass(frozen=True)
class LinkRequest:
    """What a link flow for one declared grant starts from."""

    provider: Provider  # with discovered endpoints
    client_secret: Secret | None
    scopes: tuple[str, ...]


def prepare_link(
    config_path: Path,
    name: str,
    extra_scopes: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> LinkRequest:
    """The provider, client secret and scopes of a link for ``name``: the declared scopes,
    those already granted (a relink never loses scopes) and ``extra_scopes``."""
    desired = load_desired(config_path, environ)
    provider = declared_provider(desired, name)
    previous = _stored_metadata(desired, name)
    provider = lifecycle.endpoints(provider, previous, linking=True)
    scopes = lifecycle.link_scopes(provider, previous)
    scopes += tuple(s for s in dict.fromkeys(extra_scopes) if s not in scopes)
    secret = lifecycle.client_secret(desired, provider, environ) or lifecycle.bound_secret(provider)
    return LinkRequest(provider, secret, scopes)


def begin_browser_link(
    request: LinkRequest, redirect_uri: str, now: Callable[[], datetime]
) -> PendingLink:
    """An authorization request (state, PKCE, URL) to send a browser to."""
    return authorize.start_link(
        request.provider,
        request.scopes,
        redirect_uri,
        client_secret=request.client_secret,
        now=now,
    )


def complete_browser_link(
    config_path: Path,
    name: str,
    pending: PendingLink,
    params: Mapping[str, Any],
    now: Callable[[], datetime],
    *,
    environ: Mapping[str, str] | None = None,
    lock_timeout: float | None = None,
) -> Grant:
    """Check the provider's answer to ``pending`` (state, ``iss``, code exchange) and store
    the grant, if ``name`` is still declared."""
    declared_provider(load_desired(config_path, environ), name)
    result = authorize.finish_link(pending, params, now=now)
    request = LinkRequest(pending.provider, pending.client_secret, pending.scopes)
    return _store_link(config_path, name, request, result, now(), environ, lock_timeout)


def begin_device_link(request: LinkRequest) -> DeviceAuthorization:
    """A device authorization (RFC 8628): the code a person enters elsewhere."""
    return device.start_device_flow(request.provider, request.client_secret, request.scopes)


@dataclass(frozen=True)
class DevicePoll:
    """One poll of a device flow. ``status``: ``completed`` (``grant`` is stored),
    ``authorization_pending``, ``slow_down`` (also after a transient failure) or ``error``;
    ``interval``: the seconds to wait before the next poll."""

    status: str
    interval: int
    grant: Grant | None = None
    error: ReconcilerError | None = None


def poll_device_link(
    config_path: Path,
    name: str,
    request: LinkRequest,
    device_code: Secret,
    interval: int,
    now: Callable[[], datetime],
    *,
    environ: Mapping[str, str] | None = None,
    lock_timeout: float | None = None,
) -> DevicePoll:
    """Poll a device flow once (RFC 8628 §3.4, §3.5: ``slow_down`` adds 5 s to the interval)
    and store the grant when the person has approved."""
    poll = device.poll_once(request.provider, request.client_secret, device_code, now=now)
    if poll.status == "slow_down" or isinstance(poll.error, TransientError):
        return DevicePoll("slow_down", interval + device.SLOW_DOWN_STEP)
    if poll.status == "authorization_pending":
        return DevicePoll("authorization_pending", interval)
    if poll.status == "error" or poll.token is None:
        return DevicePoll("error", interval, error=poll.error)
    grant = _store_link(config_path, name, request, poll.token, now(), environ, lock_timeout)
    return DevicePoll("completed", interval, grant=grant)


def _store_link(
    config_path: Path,
    name: str,
    request: LinkRequest,
    result: TokenResult,
    now: datetime,
    environ: Mapping[str, str] | None,
    lock_timeout: float | None,
) -> Grant:

    desired = load_desired(config_path, environ)
    declared_provider(desired, name)
    return lifecycle.store_link(
        desired,
        request.provider,
        result,
        now,
        request.scopes,
        client_secret=request.client_secret,
        environ=environ,
        lock_timeout=lock_timeout,
    )


def _stored_metadata(desired: Desired, name: str) -> Grant | None:
    """The grant file's plaintext metadata (its granted scopes), None if there is none."""
    try:
        return open_custody(desired, None).read(name).grant
    except VaultError:
        return None


def revoke(
    config_path: Path, name: str, *, force: bool = False, environ: Mapping[str, str] | None = None
) -> str:
    """Revoke ``name`` at the provider and delete its file (`reconcile revoke NAME`)."""
    state = load_state(config_path, environ=environ)
    path = grant_path(state.desired.store_dir, name)
    if not path.exists():
        raise UserError(f"{name}: there is no grant file at {path}; nothing to revoke")
    if state.identities is None:
        raise UserError(f"{name}: revoking needs an age identity that can decrypt {path}")
    custody = open_custody(state.desired, state.identities, environ)
    grant = custody.read(name).grant
    if grant is None:
        raise UserError(f"{name}: there is no grant file at {path}; nothing to revoke")
    if grant.kind == "secret":
        custody.delete(name)
        return "deleted (a static secret has nothing to revoke)"
    return lifecycle.revoke(
        state.desired, name, grant, force=force, environ=environ, identities=state.identities
    )
