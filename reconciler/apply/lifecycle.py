"""The lifecycle of one OAuth grant: link, refresh, revoke. Speaks through `oauth`, keeps
state through `custody`. Every face (apply, `reconcile token`, the runtime, the server) calls
these, through `operations`.

Refresh is single-flight across threads and processes (``custody.single_flight``: the grant's
lock, then its state re-read), then at most one call to the token endpoint. A rotated refresh
token is committed durably before the new access token is handed out; a refresh that keeps
the refresh token records only the new access token (the churn rule).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..config import resolve_reference
from ..custody import Custody, EngineUnavailable, Held, open_custody, usable_as_is
from ..errors import NeedsRelink, ReconcilerError
from ..model import Browser, Desired, Grant, Provider, Secret
from ..oauth import mcp, revocation, tokens
from ..oauth.device import run_device_flow
from ..oauth.discovery import resolve_endpoints
from ..oauth.errors import InvalidGrant, OAuthError, TransientError
from ..oauth.loopback import run_loopback_flow
from ..oauth.registration import REJECTED, SOURCE_KEY
from ..oauth.tokens import client_credentials, grant_from_result
from ..plan.schedule import is_due
from .notify import emit
from .prompt import DevicePrompt

if TYPE_CHECKING:
    from ..vault.sops.keys import Identities

#: ``Grant.extra`` key of the scopes a resource server asked for in a 403 ``insufficient_scope``
#: challenge; the next link asks for them too.
ASKED_SCOPES_KEY = "scopes_asked"
#: How long to leave a provider alone after a transient failure without ``Retry-After``.
TRANSIENT_BACKOFF = timedelta(minutes=1)


class GrantError(ReconcilerError):
    """An operation on a grant failed; the message names the grant and what to do."""


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def client_secret(
    desired: Desired, provider: Provider, environ: Mapping[str, str] | None = None
) -> Secret | None:

    if not provider.client_secret_ref:
        return None
    return resolve_reference(
        provider.client_secret_ref,
        base_dir=desired.path.parent,
        owner=f"provider {provider.name!r} client_secret",
        environ=_environ(environ),
    )


def endpoints(provider: Provider, grant: Grant | None = None, *, linking: bool = False) -> Provider:
    """The provider with discovered endpoints filled in (cached, so offline after once). An
    MCP server's (SPEC §8): for a link, discovered from the server, with its client chosen or
    registered (``grant``: the one in place, whose registered client may be reused); else from
    what ``grant`` recorded."""

    if provider.mcp:
        if linking or grant is None:
            return mcp.for_link(provider, grant)
        return mcp.for_grant(provider, grant)
    return resolve_endpoints(provider)


def bound_secret(provider: Provider) -> Secret | None:
    """The secret of the client an MCP provider was bound to (a registered one's), if any."""
    return mcp.client_secret(provider)


def link(
    desired: Desired,
    name: str,
    now: datetime,
    browser: Browser,
    *,
    device: bool = False,
    previous: Grant | None = None,
    environ: Mapping[str, str] | None = None,
) -> Grant:
    """Run the link flow for ``name`` and write the new grant file."""
    if device and desired.providers[name].mcp:
        raise GrantError(
            f"{name}: an MCP server is linked in a browser (authorization code with PKCE, SPEC "
            "§8), not with a device code; use `--no-browser` to print the address and paste "
            "back the one the browser ends on."
        )
    provider = endpoints(desired.providers[name], previous, linking=True)
    secret = client_secret(desired, provider, environ) or mcp.client_secret(provider)
    scopes = link_scopes(provider, previous)
    # `--device` is how a person is reached on a headless machine, not a change of the declared
    # flow: the grant records the declared flow (else the next plan asks for a relink), and a
    # client-credentials grant needs no person at all.
    flow = provider.flow
    if device and flow != "client_credentials":
        flow = "device_code"
    if flow == "client_credentials":
        result = client_credentials(provider, secret, now=now, scopes=scopes)
    elif flow == "device_code":
        prompt = DevicePrompt(name, browser.show, browser.open)
        result = run_device_flow(
            provider, secret, scopes, announce=prompt.announce, waiting=prompt.waiting, now=now
        )
    else:
        paste = "; or paste here the address it ends on" if browser.read_pasted else ""
        browser.show(f"{name}: waiting up to {browser.timeout:g} s for the browser{paste}")
        result = run_loopback_flow(
            provider,
            secret,
            scopes,
            open_browser=browser.open,
            timeout=browser.timeout,
            now=now,
            show_url=browser.show,
            read_pasted=browser.read_pasted,
        )
    return store_link(desired, provider, result, now, scopes, client_secret=secret, environ=environ)


def store_link(
    desired: Desired,
    provider: Provider,
    result,
    now: datetime,
    scopes: tuple[str, ...],
    *,
    client_secret: Secret | None = None,
    environ: Mapping[str, str] | None = None,
    lock_timeout: float | None = None,
    identities: Identities | None = None,
) -> Grant:
    """Write the grant a finished link flow produced (``result``: an ``oauth.TokenResult``),
    under the grant's lock so that it cannot interleave with a refresh. The CLI flows and the
    HTTP callback both end here. With ``identities``, the new access token is also recorded
    for fast reads."""

    grant = grant_from_result(provider, result, now=now, requested_scopes=scopes)
    grant = replace(grant, client_secret=client_secret, extra=_durable_extra(provider, grant))
    grant = mcp.record(provider, grant)
    custody = open_custody(desired, identities, environ)
    with custody.single_flight(provider.name, timeout=lock_timeout, replacing=True) as held:
        was = held.grant.status if held.grant is not None else None
        custody.commit(held, grant, durable=True, recipients=desired.recipients[provider.name])
    event = "recovered" if was == "needs-relink" else "linked"
    _notify(desired, event, provider.name, environ=environ)
    return grant


def link_scopes(provider: Provider, previous: Grant | None) -> tuple[str, ...]:
    """Ask for the declared scopes plus those already granted (a relink never loses scopes)."""
    scopes = list(provider.scopes)
    if previous is not None and previous.kind == "oauth2":
        if previous.status == "ok":
            scopes += [s for s in previous.granted_scopes if s not in scopes]
        # Scopes a resource server asked for (a 403 insufficient_scope): the relink gets them.
        asked = previous.extra.get(ASKED_SCOPES_KEY, "").split()
        scopes += [s for s in asked if s not in scopes]
    return tuple(scopes)


def _durable_extra(provider: Provider, grant: Grant) -> dict[str, str]:
    """Plaintext extras kept in the file so that revocation works after the config changed."""
    extra = dict(grant.extra)
    if provider.revocation_endpoint:
        extra["revocation_endpoint"] = provider.revocation_endpoint
    if provider.token_endpoint_auth_method:
        # The provider only accepts the client's registered method at its revocation endpoint.
        extra["token_endpoint_auth_method"] = provider.token_endpoint_auth_method
    return extra


def refresh(
    desired: Desired,
    name: str,
    now: datetime,
    identities: Identities,
    *,
    force: bool = False,
    rejected: Secret | None = None,
    environ: Mapping[str, str] | None = None,
    known: Held | None = None,
    allow_rollback: bool = False,
    rediscover: bool = False,
) -> Grant:
    """Refresh ``name`` if it is (still) due, single-flight under the grant's lock (see
    ``custody``); return the usable grant.

    ``force`` refreshes even when the access token looks valid (an API answered 401). With
    ``rejected`` (the token that got the 401), a grant whose token another thread or process
    has already replaced is returned as it is: N callers rejected at once make one refresh.
    ``known`` is the grant as the caller already read it (``custody.scan``); under the lock it
    is used only while custody shows it is still current.

    A grant that custody knows to be superseded (an older grant file put back) is not
    refreshed unless ``allow_rollback`` (`--force`): its refresh token may have been used.

    With ``rediscover`` (apply), an MCP grant's server is asked again for its authorization
    server first; when that has changed, the grant is marked ``needs-relink`` instead.
    """
    custody = open_custody(desired, identities, environ)
    if custody.shared and not force and rejected is None:
        # Shared custody: another machine may have refreshed it since the caller looked. One
        # read, without the lock, spares a wait on it when nothing is due any more.
        fresh = usable_as_is(custody, name, desired, now)
        if fresh is not None:
            return fresh
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(custody.single_flight(name, known))
        except EngineUnavailable as error:
            return _without_engine(desired, custody, name, now, error, environ)
        return refresh_locked(
            desired,
            custody,
            held,
            now,
            force=force,
            rejected=rejected,
            environ=environ,
            allow_rollback=allow_rollback,
            rediscover=rediscover,
        )
    raise AssertionError("unreachable")  # (the ExitStack swallows nothing)


def refresh_locked(
    desired: Desired,
    custody: Custody,
    held: Held,
    now: datetime,
    *,
    force: bool = False,
    rejected: Secret | None = None,
    environ: Mapping[str, str] | None = None,
    allow_rollback: bool = False,
    rediscover: bool = False,
) -> Grant:
    """``refresh`` once the grant's lock is held and ``held`` read under it (the caller
    releases the lock, unless the commit did)."""
    name = held.name
    grant = held.grant
    if grant is None:
        raise NeedsRelink(f"{name}: there is no grant yet; run `reconcile link {name}`")
    if grant.status == "needs-relink":
        raise NeedsRelink(_relink_message(grant))
    if rejected is not None and grant.access_token != rejected:
        return grant
    if not force and held.backing_off(now) and _valid(grant, now):
        return grant  # the provider failed transiently a moment ago: keep the token
    if not force and not is_due(grant, desired.refresh_before, desired.keepalive, now):
        if not held.recorded and grant.access_token is not None:
            # Record it for fast reads, so that the next one skips YAML and AES.
            custody.commit(held, grant, durable=False)
        return grant
    if held.superseded is not None and not allow_rollback:
        raise GrantError(held.superseded)
    if rediscover:
        _check_authorization_server(desired, custody, held, grant, environ)
    return _refresh_held(desired, custody, held, grant, now, environ)


def _without_engine(
    desired: Desired,
    custody: Custody,
    name: str,
    now: datetime,
    error: EngineUnavailable,
    environ: Mapping[str, str] | None,
) -> Grant:
    """The coordination engine cannot be reached (SPEC §7): a valid access token this
    machine holds is served; a grant whose provider does not rotate refresh tokens is
    refreshed locally; a rotating one is refused before anything is sent to the provider."""
    provider = desired.providers[name]
    local = custody.offline(name)
    grant = local.grant if local is not None else None
    if grant is not None and grant.access_token is not None and _valid(grant, now):
        return grant
    if provider.rotates_refresh_tokens or grant is None or grant.refresh_token is None:
        raise GrantError(
            f"{name}: the coordination engine cannot be reached ({error}), and {name}'s "
            "provider rotates refresh tokens: refreshing it now could race another machine, "
            "and the provider would then revoke the grant. Nothing was sent to the provider; "
            "the access token this machine holds has expired. Try again when the engine is "
            "back."
        )
    assert local is not None
    provider = endpoints(provider)
    secret = client_secret(desired, provider, environ) or grant.client_secret
    result = tokens.refresh(provider, secret, grant.refresh_token, now=now)
    fresh = tokens.grant_from_result(provider, result, now=now, previous=grant)
    fresh = replace(fresh, flow=grant.flow or provider.flow)
    custody.commit_offline(local, fresh)
    return fresh


def _check_authorization_server(
    desired: Desired,
    custody: Custody,
    held: Held,
    grant: Grant,
    environ: Mapping[str, str] | None,
) -> None:
    """Mark an MCP grant ``needs-relink`` when its server now trusts another authorization
    server than the one that issued the grant (its tokens cannot be used there)."""
    provider = desired.providers[held.name]
    moved = mcp.moved_authorization_server(provider, grant)
    if moved is None:
        return
    reason = (
        f"the MCP server now names the authorization server {moved} "
        f"(the grant is from {grant.authorization_server})"
    )
    marked = replace(grant, status="needs-relink", status_reason=reason)
    custody.commit(held, marked, durable=True, recipients=grant.recipients or None)
    _notify(desired, "needs-relink", held.name, reason=reason, environ=environ)
    raise NeedsRelink(_relink_message(marked))


def _valid(grant: Grant, now: datetime) -> bool:
    """The access token can still be used (it may be due for a refresh)."""
    return grant.access_token is not None and (grant.expires_at is None or grant.expires_at > now)


def _refresh_held(
    desired: Desired,
    custody: Custody,
    held: Held,
    grant: Grant,
    now: datetime,
    environ: Mapping[str, str] | None,
) -> Grant:

    name = held.name
    provider = endpoints(desired.providers[name], grant)
    secret = client_secret(desired, provider, environ) or grant.client_secret
    try:
        if provider.flow == "client_credentials" or grant.refresh_token is None:
            if provider.flow != "client_credentials":
                raise NeedsRelink(
                    f"{name}: the access token expired and the provider gave no refresh token; "
                    f"run `reconcile link {name}`"
                )
            result = tokens.client_credentials(provider, secret, now=now, scopes=grant.scopes)
            fresh = tokens.grant_from_result(provider, result, now=now, previous=grant)
        else:
            if held.in_flight is not None and provider.rotation_grace is None:
                # An earlier request with this refresh token was never committed: presenting
                # it again could make a rotating provider revoke the grant.
                if _valid(grant, now):
                    return grant
                raise GrantError(held.in_flight)
            with custody.in_flight(held, provider.request_deadline) as flight:
                result = tokens.refresh(provider, secret, grant.refresh_token, now=now)
                fresh = tokens.grant_from_result(provider, result, now=now, previous=grant)
                flight.escrow(fresh)
    except TransientError as error:
        wait = timedelta(seconds=error.retry_after or TRANSIENT_BACKOFF.total_seconds())
        if error.ambiguous and custody.shared:
            # The request may have been acted on: until its intent expires, the refresh token
            # is not presented again (SPEC §7).
            marked = replace(grant, status="uncertain", status_reason=str(error))
            custody.commit(held, marked, durable=True, retry_at=now + wait)
            if _valid(grant, now):
                return marked
            raise
        if not _valid(grant, now):
            raise
        # Keep the current token, and leave the provider alone for a while.
        custody.commit(held, grant, durable=False, retry_at=now + wait)
        return grant
    except OAuthError as error:
        rejected_client = (
            error.error == "invalid_client" and grant.extra.get(SOURCE_KEY) == "registered"
        )
        if not isinstance(error, InvalidGrant) and not rejected_client:
            raise
        if isinstance(error, InvalidGrant):
            # Believed only once a re-read shows that nobody else rotated the token meanwhile.
            current = custody.read(name).grant
            if (
                current is not None
                and current.refresh_token != grant.refresh_token
                and current.status != "needs-relink"
            ):
                return current
        reason = error.description or error.error or "invalid_grant"
        marked = replace(grant, status="needs-relink", status_reason=reason)
        if rejected_client:
            # The authorization server no longer knows the client it registered for this
            # grant (RFC 7591): the next link registers a new one.
            reason = "the authorization server no longer accepts the registered client"
            extra = {**grant.extra, SOURCE_KEY: REJECTED}
            marked = replace(marked, status_reason=reason, extra=extra)
        custody.commit(held, marked, durable=True, recipients=grant.recipients or None)
        _notify(desired, "needs-relink", name, reason=reason, environ=environ)
        raise NeedsRelink(_relink_message(marked)) from None
    fresh = replace(fresh, flow=grant.flow or provider.flow)
    # Rotation (or a durable access token): the durable record is the only safe home.
    durable = fresh.refresh_token != grant.refresh_token or grant.refresh_token is None
    if grant.status == "uncertain":
        durable = True  # the status changes back to ok
    # A refresh keeps the recipients the grant has: changing them is a rekey, which apply
    # alone does (and checks).
    custody.commit(held, fresh, durable=durable, recipients=grant.recipients or None)
    return fresh


def mark_under_scoped(
    desired: Desired,
    name: str,
    scopes: Sequence[str],
    identities: Identities,
    *,
    environ: Mapping[str, str] | None = None,
) -> NeedsRelink:
    """A resource server answered 403 ``insufficient_scope`` (RFC 6750 §3.1) asking for
    ``scopes``: mark the grant ``needs-relink``, remember the scopes so that the next link asks
    for them, and return the error naming them."""
    asked = tuple(dict.fromkeys(scopes))
    wanted = ", ".join(asked) if asked else "scopes it did not name"
    custody = open_custody(desired, identities, environ)
    with custody.single_flight(name) as held:
        grant = held.grant
        if grant is None or grant.kind != "oauth2":
            raise NeedsRelink(f"{name}: there is no grant yet; run `reconcile link {name}`")
        missing = [s for s in asked if s not in grant.granted_scopes] or list(asked)
        reason = f"the resource server asks for {wanted}" if asked else "insufficient_scope"
        known = grant.extra.get(ASKED_SCOPES_KEY, "").split()
        extra = dict(grant.extra)
        if missing:
            extra[ASKED_SCOPES_KEY] = " ".join(dict.fromkeys([*known, *missing]))
        marked = replace(grant, status="needs-relink", status_reason=reason, extra=extra)
        custody.commit(held, marked, durable=True, recipients=grant.recipients or None)
    _notify(desired, "needs-relink", name, reason=reason, environ=environ)
    return NeedsRelink(
        f"{name}: the server refused the token for lack of scope (insufficient_scope) and asks "
        f"for {wanted}; the grant is marked needs-relink. Run `reconcile link {name}`: the new "
        "link asks for them."
    )


def _notify(
    desired: Desired,
    event: str,
    name: str,
    *,
    reason: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Tell `notify.webhook` (if configured) that a grant's status changed. Never raises and
    never waits on the network: delivery is queued (see `apply.notify`)."""
    if desired.notify is None:
        return

    emit(desired, event, name, reason=reason, environ=environ)


def _relink_message(grant: Grant) -> str:
    reason = f" ({grant.status_reason})" if grant.status_reason else ""
    return f"{grant.name} needs to be linked again{reason}; run `reconcile link {grant.name}`"


def revoke(
    desired: Desired,
    name: str,
    grant: Grant,
    *,
    force: bool = False,
    environ: Mapping[str, str] | None = None,
    identities: Identities | None = None,
) -> str:
    """Revoke ``grant`` at the provider (refresh token, then access tokens; RFC 7009) and
    delete it. Without a revocation endpoint, only ``force`` deletes.

    With ``identities``, the access token a refresh recorded for fast reads (the file's one
    is then stale) is revoked too: it is the one scripts were given.
    """

    provider = desired.providers.get(name) or _provider_from_grant(grant)
    if provider.mcp:
        provider = endpoints(provider, grant)
    elif provider.issuer:
        provider = endpoints(provider)
    secret = (
        client_secret(desired, provider, environ) if name in desired.providers else None
    ) or grant.client_secret
    custody = open_custody(desired, identities, environ)
    access_tokens = [t for t in (grant.access_token, grant.secondary_token) if t is not None]
    current = custody.read(name).grant if identities else None
    if (
        current is not None
        and current.access_token is not None
        and current.access_token not in access_tokens
    ):
        access_tokens.insert(0, current.access_token)
    revoked = False
    try:
        if grant.refresh_token is not None:
            revocation.revoke(provider, secret, grant.refresh_token, "refresh_token")
            revoked = True
        for access_token in access_tokens:
            try:
                revocation.revoke(provider, secret, access_token, "access_token")
            except OAuthError:
                if not revoked:
                    raise
                # Revoking the refresh token revoked the grant (RFC 7009 §2.1); its access
                # token may already be unknown to the provider.
            revoked = True
    except OAuthError as error:
        unsupported = error.error == "revocation_unsupported"
        if not (force and unsupported):
            hint = "; `--force` deletes the file anyway" if unsupported else ""
            raise GrantError(f"{error} Nothing was deleted{hint}.") from None
    custody.delete(name)
    return "revoked and deleted" if revoked else "deleted; not revoked at the provider"


def _provider_from_grant(grant: Grant) -> Provider:
    """Enough of a provider to revoke an undeclared grant, from what its file recorded."""
    return Provider(
        name=grant.name,
        client_id=grant.client_id or "",
        flow=grant.flow or "authorization_code",
        token_endpoint=grant.token_endpoint,
        revocation_endpoint=grant.extra.get("revocation_endpoint"),
        token_endpoint_auth_method=grant.extra.get("token_endpoint_auth_method")
        or ("client_secret_basic" if grant.client_secret else "none"),
    )
