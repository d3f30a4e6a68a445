"""The lifecycle of one OAuth grant: link, refresh, revoke. Speaks through `oauth`, writes
through `vault`. Every face (apply, `reconcile token`, the runtime, the server) calls these.

Refresh is single-flight across threads and processes: a lock on the grant file, then a
re-read of the grant (another process may have refreshed it meanwhile; skipped when the caller
already holds the grant and the file's fingerprint shows it unchanged), then at most one call
to the token endpoint. A rotated refresh token is written durably before the new access token
is handed out; a refresh that keeps the refresh token writes only the token cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from .model import Actual, Desired, Grant, Provider, Secret
from .vault.fingerprint import Fingerprint, of_file

#: How long to leave a provider alone after a transient failure without ``Retry-After``.
TRANSIENT_BACKOFF = timedelta(minutes=1)

# A grant file's fingerprint (``vault.fingerprint``): every writer replaces a grant file by an
# atomic rename (or rewrites it, moving its mtime and ctime), so a file whose fingerprint is
# unchanged still holds what was read when it was taken.


class GrantError(Exception):
    """An operation on a grant failed; the message names the grant and what to do."""


class NeedsRelink(GrantError):
    """The grant is marked ``needs-relink``: no refresh is attempted until it is linked again."""


@dataclass(frozen=True)
class Browser:
    """How a link flow reaches the user; the CLI fills it, tests script it."""

    #: Opens a URL (the system browser, or a scripted one); None prints the URL instead.
    open: Callable[[str], None] | None
    #: Shows a line to the user (the URL when not opened, the device code...).
    show: Callable[[str], None]
    #: Seconds to wait for the browser to come back.
    timeout: float = 300.0
    #: Reads a redirect URL the user pasted (a browser on another machine); None: no paste.
    read_pasted: Callable[[], str | None] | None = None


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def client_secret(
    desired: Desired, provider: Provider, environ: Mapping[str, str] | None = None
) -> Secret | None:
    from .config import resolve_reference

    if not provider.client_secret_ref:
        return None
    return resolve_reference(
        provider.client_secret_ref,
        base_dir=desired.path.parent,
        owner=f"provider {provider.name!r} client_secret",
        environ=_environ(environ),
    )


def endpoints(provider: Provider) -> Provider:
    """The provider with discovered endpoints filled in (cached, so offline after once)."""
    from .oauth.discovery import resolve_endpoints

    return resolve_endpoints(provider)


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
    provider = endpoints(desired.providers[name])
    secret = client_secret(desired, provider, environ)
    scopes = link_scopes(provider, previous)
    # `--device` is how a person is reached on a headless machine, not a change of the declared
    # flow: the grant records the declared flow (else the next plan asks for a relink), and a
    # client-credentials grant needs no person at all.
    flow = provider.flow
    if device and flow != "client_credentials":
        flow = "device_code"
    if flow == "client_credentials":
        from .oauth.tokens import client_credentials

        result = client_credentials(provider, secret, now=now, scopes=scopes)
    elif flow == "device_code":
        from .oauth.device import run_device_flow

        def announce(authorization) -> None:
            url = authorization.verification_uri_complete or authorization.verification_uri
            browser.show(
                f"{name}: open {authorization.verification_uri} and enter the code "
                f"{authorization.user_code}"
            )
            if browser.open is not None:
                browser.open(url)

        result = run_device_flow(provider, secret, scopes, announce=announce, now=now)
    else:
        from .oauth.authorize import run_loopback_flow

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
) -> Grant:
    """Write the grant a finished link flow produced (``result``: an ``oauth.TokenResult``),
    under the grant's lock so that it cannot interleave with a refresh. The CLI flows and the
    HTTP callback both end here."""
    from .oauth.tokens import grant_from_result
    from .vault.files import file_lock
    from .vault.store import grant_path, write_grant

    grant = grant_from_result(provider, result, now=now, requested_scopes=scopes)
    grant = replace(grant, client_secret=client_secret, extra=_durable_extra(provider, grant))
    path = grant_path(desired.store_dir, provider.name)
    with file_lock(path, timeout=lock_timeout):
        was = _status_on_disk(path) if desired.notify is not None else None
        _remember(path, write_grant(path, grant, desired.recipients[provider.name]), environ)
        _drop_cache(desired, provider.name, environ)
    event = "recovered" if was == "needs-relink" else "linked"
    _notify(desired, event, provider.name, environ=environ)
    return grant


def link_scopes(provider: Provider, previous: Grant | None) -> tuple[str, ...]:
    """Ask for the declared scopes plus those already granted (a relink never loses scopes)."""
    scopes = list(provider.scopes)
    if previous is not None and previous.kind == "oauth2" and previous.status == "ok":
        scopes += [s for s in previous.granted_scopes if s not in scopes]
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


def is_due(grant: Grant, desired: Desired, now: datetime) -> bool:
    """The access token expires within ``refresh_before``, or an idle refresh token has
    reached ``keepalive`` (the plan's `refresh` rule, checked again under the lock)."""
    if grant.expires_at is not None and grant.expires_at - now <= desired.refresh_before:
        return True
    return (
        grant.refresh_token is not None
        and grant.obtained_at is not None
        and now - grant.obtained_at >= desired.keepalive
    )


def refresh(
    desired: Desired,
    name: str,
    now: datetime,
    identities: list,
    *,
    force: bool = False,
    rejected: Secret | None = None,
    environ: Mapping[str, str] | None = None,
    known: Grant | None = None,
    fingerprint: Fingerprint | None = None,
    allow_rollback: bool = False,
) -> Grant:
    """Refresh ``name`` if it is (still) due, under the grant's lock; return the usable grant.

    ``force`` refreshes even when the access token looks valid (an API answered 401). With
    ``rejected`` (the token that got the 401), a grant whose token another thread or process
    has already replaced is returned as it is: N callers rejected at once make one refresh.

    ``known`` is the grant as the caller already read and decrypted it, with ``fingerprint``
    (see ``vault.fingerprint``) taken *before* that read: under the lock the file is then read
    again only if its fingerprint changed. A fingerprint taken after the read could vouch for a
    newer file than the grant held, and refreshing with a superseded refresh token loses the
    grant. The token cache is always re-read under the lock (another process may have
    refreshed without touching the grant file); its entry wins over ``known``'s access token.

    A grant file older than one this machine has seen (put back from an older commit) is not
    refreshed unless ``allow_rollback`` (`--force`): see ``vault.cache.remember_seen``.
    """
    from .vault.files import file_lock
    from .vault.store import grant_path, read_grant

    path = grant_path(desired.store_dir, name)
    with file_lock(path):
        cached = _cached_token(desired, name, identities, environ)
        if _still_current(path, known, fingerprint):
            assert known is not None
            grant = _overlay(known, cached)
        else:
            grant = _overlay(read_grant(path, identities), cached)
        if grant.status == "needs-relink":
            raise NeedsRelink(_relink_message(grant))
        if rejected is not None and grant.access_token != rejected:
            return grant
        if not force and cached is not None and cached.backing_off(now) and _valid(grant, now):
            return grant  # the provider failed transiently a moment ago: keep the token
        if not force and not is_due(grant, desired, now):
            if cached is None and grant.access_token is not None:
                # Seed this machine's cache so that the next read skips YAML and AES.
                _write_cache(desired, name, path, grant, identities, environ)
            return grant
        _check_not_rolled_back(path, grant, allow_rollback, environ)
        return _refresh_locked(desired, name, grant, now, identities, environ)


def _check_not_rolled_back(
    path: Path, grant: Grant, allow: bool, environ: Mapping[str, str] | None
) -> None:
    """Remember the version about to be refreshed, or refuse it if it is older than one seen."""
    from .vault import cache

    if grant.modified is None:
        return
    newest = cache.newest_seen(path, _environ(environ))
    if newest is not None and grant.modified < newest and not allow:
        raise GrantError(
            f"{grant.name}: {path} was written at {grant.modified:%Y-%m-%dT%H:%M:%SZ}, but this "
            f"machine has seen a newer version of it (written {newest:%Y-%m-%dT%H:%M:%SZ}): an "
            "older grant file was put back (a git checkout, revert or merge?). Its refresh token "
            "may be superseded, and presenting it again can make the provider revoke the grant, "
            "so it was not used. Restore the newest version of that file (`git log -p -- "
            f"{path}`); if this older one is intended, run again with --force."
        )
    _remember(path, grant.modified, environ)


def file_fingerprints(store_dir: Path) -> dict[str, Fingerprint]:
    """The fingerprint of every grant file in ``store_dir``, by grant name. Taken before
    ``vault.store.scan`` reads the files, they can go to ``apply.Context.fingerprints``."""
    from .vault.fingerprint import of_stat
    from .vault.store import SUFFIX

    found: dict[str, Fingerprint] = {}
    try:
        entries = os.scandir(store_dir)
    except FileNotFoundError:
        return found
    with entries:
        for entry in entries:
            if not entry.name.endswith(SUFFIX):
                continue
            try:
                info = entry.stat()
            except FileNotFoundError:
                continue
            found[entry.name[: -len(SUFFIX)]] = of_stat(info)
    return found


def _still_current(path: Path, known: Grant | None, fingerprint: Fingerprint | None) -> bool:
    """``known`` is what the file at ``path`` holds: it was read (decrypted) from the version
    of the file that ``fingerprint`` names, and that version is still in place."""
    return (
        known is not None
        and known.decrypted
        and fingerprint is not None
        and of_file(path) == tuple(fingerprint)
    )


def _valid(grant: Grant, now: datetime) -> bool:
    """The access token can still be used (it may be due for a refresh)."""
    return grant.access_token is not None and (grant.expires_at is None or grant.expires_at > now)


def current(
    desired: Desired, name: str, identities: list, environ: Mapping[str, str] | None = None
) -> Grant:
    """The grant file, with the fresher access token from the cache when there is one."""
    from .vault.store import grant_path, read_grant

    grant = read_grant(grant_path(desired.store_dir, name), identities)
    return _overlay(grant, _cached_token(desired, name, identities, environ))


def with_cached_tokens(
    desired: Desired, actual: Actual, identities: list, environ: Mapping[str, str] | None = None
) -> Actual:
    """``actual`` with each OAuth grant's access token and expiry taken from the token cache
    where it is fresher than the committed file (refreshes that rewrote nothing in git)."""
    grants = {
        name: _overlay(grant, _cached_token(desired, name, identities, environ))
        if grant.kind == "oauth2" and name in desired.providers
        else grant
        for name, grant in actual.grants.items()
    }
    return replace(actual, grants=grants)


def _cached_token(desired: Desired, name: str, identities: list, environ: Mapping[str, str] | None):
    """This machine's cache entry for ``name``, if it belongs to the grant file in use."""
    from .vault import cache
    from .vault.store import grant_path

    cached = cache.read(desired.path, name, identities, _environ(environ), config_unchanged=False)
    if cached is None or cached.grant_path != str(grant_path(desired.store_dir, name)):
        return None  # no entry, or one written for a file the config no longer points at
    return cached


def _overlay(grant: Grant, cached) -> Grant:
    if cached is None:
        return grant
    return replace(
        grant,
        access_token=cached.access_token,
        token_type=cached.token_type or grant.token_type,
        expires_at=cached.expires_at,
        obtained_at=cached.obtained_at,
    )


def _refresh_locked(
    desired: Desired,
    name: str,
    grant: Grant,
    now: datetime,
    identities: list,
    environ: Mapping[str, str] | None,
) -> Grant:
    from .oauth import tokens
    from .oauth.errors import InvalidGrant, TransientError
    from .vault.store import grant_path, write_grant

    provider = endpoints(desired.providers[name])
    secret = client_secret(desired, provider, environ) or grant.client_secret
    path = grant_path(desired.store_dir, name)
    try:
        if provider.flow == "client_credentials" or grant.refresh_token is None:
            if provider.flow != "client_credentials":
                raise NeedsRelink(
                    f"{name}: the access token expired and the provider gave no refresh token; "
                    f"run `reconcile link {name}`"
                )
            result = tokens.client_credentials(provider, secret, now=now, scopes=grant.scopes)
        else:
            result = tokens.refresh(provider, secret, grant.refresh_token, now=now)
    except TransientError as error:
        if not _valid(grant, now):
            raise
        # Keep the current token, and leave the provider alone for a while.
        wait = timedelta(seconds=error.retry_after or TRANSIENT_BACKOFF.total_seconds())
        _write_cache(desired, name, path, grant, identities, environ, retry_at=now + wait)
        return grant
    except InvalidGrant as error:
        reason = error.description or error.error or "invalid_grant"
        marked = replace(grant, status="needs-relink", status_reason=reason)
        write_grant(path, marked, grant.recipients or desired.recipients.get(name, ()))
        _drop_cache(desired, name, environ)
        _notify(desired, "needs-relink", name, reason=reason, environ=environ)
        raise NeedsRelink(_relink_message(marked)) from None
    fresh = tokens.grant_from_result(provider, result, now=now, previous=grant)
    fresh = replace(fresh, flow=grant.flow or provider.flow)
    # A refresh keeps the file's recipients: changing them is a rekey, which only `apply` does.
    if fresh.refresh_token != grant.refresh_token or grant.refresh_token is None:
        # Rotation (or a durable access token): the grant file is the only safe home.
        written = write_grant(path, fresh, grant.recipients or desired.recipients.get(name, ()))
        _remember(path, written, environ)
    _write_cache(desired, name, path, fresh, identities, environ)
    return fresh


def _remember(path: Path, written: datetime, environ: Mapping[str, str] | None) -> None:
    from .vault import cache

    cache.remember_seen(path, written, _environ(environ))


def _write_cache(
    desired: Desired,
    name: str,
    path: Path,
    grant: Grant,
    identities: list,
    environ: Mapping[str, str] | None,
    *,
    retry_at: datetime | None = None,
) -> None:
    from .vault import cache

    assert grant.access_token is not None and grant.obtained_at is not None
    entry = cache.CachedToken(
        access_token=grant.access_token,
        token_type=grant.token_type,
        expires_at=grant.expires_at,
        obtained_at=grant.obtained_at,
        refresh_before=desired.refresh_before.total_seconds(),
        retry_at=retry_at,
    )
    cache.write(desired.path, name, path, entry, identities, _environ(environ))


def _drop_cache(desired: Desired, name: str, environ: Mapping[str, str] | None) -> None:
    from .vault import cache

    cache.drop(desired.path, name, _environ(environ))


def _status_on_disk(path: Path) -> str | None:
    """The status recorded in a grant file's plaintext (no key needed), None if unreadable."""
    from .vault.store import VaultError, read_grant

    try:
        return read_grant(path, None).status
    except VaultError:
        return None


def _notify(
    desired: Desired,
    event: str,
    name: str,
    *,
    reason: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Tell `notify.webhook` (if configured) that a grant's status changed. Never raises and
    never waits on the network: delivery is queued (see `reconciler.notify`)."""
    if desired.notify is None:
        return
    from .notify import emit

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
    identities: list | None = None,
) -> str:
    """Revoke ``grant`` at the provider (refresh token, then access tokens; RFC 7009) and
    delete its file. Without a revocation endpoint, only ``force`` deletes.

    With ``identities``, the access token in this machine's cache (a refresh that kept the
    refresh token left the file's one stale) is revoked too: it is the one scripts were given.
    """
    from .oauth import tokens
    from .oauth.errors import OAuthError
    from .vault import cache
    from .vault.store import delete_grant, grant_path

    provider = desired.providers.get(name) or _provider_from_grant(grant)
    provider = endpoints(provider) if provider.issuer else provider
    secret = (
        client_secret(desired, provider, environ) if name in desired.providers else None
    ) or grant.client_secret
    access_tokens = [grant.access_token] if grant.access_token is not None else []
    cached = (
        cache.read(desired.path, name, identities, _environ(environ), config_unchanged=False)
        if identities
        else None
    )
    if cached is not None and cached.access_token not in access_tokens:
        access_tokens.insert(0, cached.access_token)
    revoked = False
    try:
        if grant.refresh_token is not None:
            tokens.revoke(provider, secret, grant.refresh_token, "refresh_token")
            revoked = True
        for access_token in access_tokens:
            try:
                tokens.revoke(provider, secret, access_token, "access_token")
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
    delete_grant(grant_path(desired.store_dir, name))
    _drop_cache(desired, name, environ)
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
