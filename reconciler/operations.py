"""The operations every face (CLI, watcher, server, runtime) calls: one implementation each.

They glue the stages together: config → vault → plan → apply. Nothing here prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import ConflictError, ReconcilerError, UndeclaredError, UserError
from .model import Actual, Desired, Grant, Plan, Provider, Secret

TYPE_CHECKING = False  # not typing's: importing typing costs every short command ~3 ms
if TYPE_CHECKING:
    from typing import Any

    from .apply import Outcome
    from .custody import Held
    from .oauth.authorize import PendingLink
    from .oauth.device import DeviceAuthorization
    from .oauth.tokens import TokenResult
    from .plan import GrantReport
    from .vault.sops.keys import Identities


@dataclass(frozen=True)
class State:
    desired: Desired
    actual: Actual
    #: age identities found the way sops finds them, or None when there are none.
    identities: Identities | None
    #: Each grant as the scan read it, with its custody basis (``custody.Held``), for the
    #: single-flight re-read to skip what is provably unchanged.
    known: Mapping[str, Held] | None = None


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def find_identities(environ: Mapping[str, str] | None = None) -> Identities | None:
    """The age identities sops would use, or None when there are none (not an error here)."""
    from .vault.sops.keys import load_identities

    identities = load_identities(os.environ if environ is None else environ)
    return identities or None


def load_state(
    config_path: Path, *, resolve: bool = True, environ: Mapping[str, str] | None = None
) -> State:
    """Read ``providers.yaml`` and the grant files. With an identity available, grant values
    are decrypted (and their MAC checked) and, with ``resolve``, secret references are
    resolved so that they can be compared; otherwise only plaintext metadata is read (enough
    for CI or a reviewer's machine). An identity that opens none of the grant files counts as
    none: references it cannot resolve are then no error."""
    from . import config
    from .custody import open_custody

    environ = os.environ if environ is None else environ
    identities = find_identities(environ)
    desired = config.load(
        config_path,
        environ=environ,
        resolve_values=resolve and identities is not None,
        identities=identities,
    )
    actual, known = open_custody(desired, identities, environ).scan()
    if actual.sealed_reason is not None:  # a reviewer's own key: as without one
        identities = None
        desired = config.load(config_path, environ=environ, resolve_values=False)
    return State(desired, actual, identities, known if identities is not None else None)


def exposed_sources(desired: Desired) -> list[str]:
    """A warning for each `file:` source whose plaintext git would commit."""
    from .config.exposure import warnings

    return warnings(desired)


def flush_notifications() -> None:
    """Wait for the webhook notifications still queued (a long-running face, before it exits)."""
    from .apply import notify

    notify.flush()


def make_plan(state: State, now: datetime, *, prune: bool = False) -> Plan:
    from .plan import plan

    return plan(state.desired, state.actual, now, prune=prune)


def unreadable_error(actual: Actual) -> UserError | None:
    """One error for every grant file that could not be read (tampered, wrong key...)."""
    if not actual.unreadable:
        return None
    lines = [actual.unreadable[name] for name in sorted(actual.unreadable)]
    return UserError(
        " ".join(lines) + " These files were left untouched; fix each as its message says "
        "(and only that file), then run again."
    )


def unresolved_error(desired: Desired) -> UserError | None:
    """One error for every declared secret whose reference could not be resolved."""
    if not desired.unresolved:
        return None
    return UserError(
        "\n".join(str(desired.unresolved[name]) for name in sorted(desired.unresolved))
    )


def run_apply(
    state: State,
    plan: Plan,
    now: datetime,
    *,
    link: bool = True,
    ask_secret: Callable[[str], Secret] | None = None,
    browser=None,
    device: bool = False,
    environ: Mapping[str, str] | None = None,
    report_unresolved: bool = False,
    allow_foreign_recipients: bool = False,
    allow_rollback: bool = False,
) -> Generator[Outcome, None, None]:
    """Carry ``plan`` out, one outcome at a time. With ``report_unresolved``, a failed outcome
    comes first for each secret whose reference does not resolve (a whole run's report)."""
    from .apply import Context, apply, unresolved

    context = Context(
        state.desired,
        state.actual,
        state.identities,
        now,
        ask_secret=ask_secret,
        link=link,
        browser=browser,
        device=device,
        environ=environ,
        known=state.known,
        allow_foreign_recipients=allow_foreign_recipients,
        allow_rollback=allow_rollback,
    )
    if not report_unresolved:
        return apply(plan, context)
    return _after(unresolved(state.desired), apply(plan, context))


def _after(
    first: list[Outcome], rest: Generator[Outcome, None, None]
) -> Generator[Outcome, None, None]:
    """``first``, then ``rest``: still a generator, which a face may close early."""
    yield from first
    yield from rest


def read_token(
    config_path: Path,
    name: str,
    environ: Mapping[str, str] | None = None,
    *,
    allow_rollback: bool = False,
) -> Secret:
    """The value to hand a script: a static secret's value or a valid access token.
    ``allow_rollback`` (`token --force`): refresh even from a grant file put back.

    This is the hot path of ``reconcile token`` and ``runtime.token()``: a cached access token
    is checked without parsing any YAML; a static secret needs the config's store folder (no
    schema validation) and the one grant file. Only a token that is due loads everything and
    refreshes it, single-flight under the grant's lock.
    """
    from .vault import cache
    from .vault.sops.keys import load_identities

    environ = os.environ if environ is None else environ
    identities = load_identities(environ, required=True)
    cached = cache.read(config_path, name, identities, environ)
    if cached is not None and cached.is_fresh(utcnow()):
        return cached.access_token

    from . import config
    from .vault.store import grant_path, read_grant

    store_dir, declared = config.locate(config_path)
    if name not in declared:
        raise UserError(
            f"{name!r} is not declared in {config_path}; declared: {', '.join(declared) or 'none'}"
        )
    path = grant_path(store_dir, name)
    if not path.exists():
        raise UserError(f"{name}: no grant file at {path}; run `reconcile apply` first")
    grant = read_grant(path, identities)
    if grant.kind == "secret":
        if grant.value is None:
            raise UserError(f"{grant.name}: {path} holds no value; run `reconcile apply`")
        # Remembered like an access token, so that the next read skips YAML and AES; any
        # change to the config or the grant file invalidates it.
        entry = cache.CachedToken(grant.value, None, None, utcnow(), None)
        cache.write(config_path, name, path, entry, identities, environ)
        return grant.value
    return _access_token(config_path, name, identities, environ, allow_rollback)


@dataclass(frozen=True)
class Issued:
    """A token for a long-running process to keep in memory, with what bounds that use."""

    secret: Secret
    #: When it is due for a refresh (POSIX seconds, ``plan.schedule``); None: never.
    refresh_at: float | None = None
    #: ``(path, fingerprint)`` of every file whose change must send the process back to
    #: ``issue_token``, taken *before* the value was read (a fingerprint must never vouch for
    #: a newer file than the value came from). Empty: do not keep the token at all.
    watched: tuple[tuple[str, tuple[int, ...]], ...] = ()


def issue_token(config_path: Path, name: str, environ: Mapping[str, str] | None = None) -> Issued:
    """``read_token`` for a long-running process (``runtime.token()``): the value, and how long
    and while which files stay unchanged it may be kept in memory."""
    from . import config
    from .vault.fingerprint import of_file
    from .vault.store import grant_path

    environ = os.environ if environ is None else environ
    config_before = of_file(config_path)
    store_dir, declared = config.locate(config_path)
    grant_file = str(grant_path(store_dir, name)) if name in declared else None
    grant_before = of_file(grant_file) if grant_file else None
    secret = read_token(config_path, name, environ)
    if grant_file is None:
        return Issued(secret)
    return _issued(config_path, name, secret, grant_file, config_before, grant_before, environ)


def reissue_rejected(
    config_path: Path, name: str, rejected: Secret, environ: Mapping[str, str] | None = None
) -> Issued | None:
    """A replacement for ``rejected``, which an API answered with 401: one forced refresh,
    single-flight under the grant's lock, skipped when another thread or process already
    replaced the token. None for a static secret: there is nothing to refresh."""
    from . import config
    from .apply import lifecycle
    from .errors import NeedsRelink
    from .vault.sops.keys import load_identities
    from .vault.store import grant_path

    environ = os.environ if environ is None else environ
    desired = config.load(config_path, environ=environ, resolve_values=False)
    if name not in desired.providers:
        return None
    identities = load_identities(environ, required=True)
    grant = lifecycle.refresh(
        desired, name, utcnow(), identities, force=True, rejected=rejected, environ=environ
    )
    if grant.access_token is None:
        raise NeedsRelink(f"{name}: the grant holds no access token; run `reconcile link {name}`")
    grant_file = str(grant_path(desired.store_dir, name))
    return _issued(config_path, name, grant.access_token, grant_file, None, None, environ)


def _issued(
    config_path: Path,
    name: str,
    secret: Secret,
    grant_file: str,
    config_before: tuple[int, ...] | None,
    grant_before: tuple[int, ...] | None,
    environ: Mapping[str, str],
) -> Issued:
    """What bounds keeping ``secret`` in memory: a static secret until its files change; an
    OAuth token while the on-disk cache entry that records its deadline is still the one read
    here. ``*_before`` are fingerprints from before ``secret`` was read."""
    from .vault import cache
    from .vault.fingerprint import of_file
    from .vault.sops.keys import load_identities
    from .vault.store import read_grant

    try:
        kind = read_grant(Path(grant_file), None).kind  # plaintext metadata: no decryption
        if kind == "secret":
            if config_before is None or grant_before is None:
                return Issued(secret)
            return Issued(
                secret, None, ((str(config_path), config_before), (grant_file, grant_before))
            )
        # An OAuth token's deadline is in the on-disk cache entry, which ``cache.read``
        # accepts only while the config and grant files are those it was written beside:
        # taken just before that read, these fingerprints are never newer than it vouches for.
        entry_file = str(cache.entry_path(config_path, name, environ))
        files = (str(config_path), grant_file, entry_file)
        watched = tuple((path, found) for path in files if (found := of_file(path)) is not None)
        cached = cache.read(config_path, name, load_identities(environ, required=True), environ)
    except Exception:  # only costs keeping it: the next call reads again
        return Issued(secret)
    if cached is None or cached.access_token != secret or len(watched) != len(files):
        return Issued(secret)  # no on-disk record of its deadline (e.g. no X25519 identity)
    deadline = cached.refresh_at.timestamp() if cached.refresh_at is not None else None
    return Issued(secret, deadline, watched)


def _access_token(
    config_path: Path,
    name: str,
    identities: Identities,
    environ: Mapping[str, str],
    allow_rollback: bool = False,
) -> Secret:
    from . import config
    from .apply import lifecycle

    desired = config.load(config_path, environ=environ, resolve_values=False)
    if name not in desired.providers:
        raise UserError(f"{name} is declared as a secret in {config_path}, not as an OAuth grant")
    grant = lifecycle.refresh(
        desired, name, utcnow(), identities, environ=environ, allow_rollback=allow_rollback
    )
    if grant.access_token is None:
        raise UserError(f"{name}: the grant holds no access token; run `reconcile link {name}`")
    return grant.access_token


def link(
    config_path: Path,
    name: str,
    browser,
    *,
    device: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Grant:
    """Run one link flow now, whatever the plan says (`reconcile link NAME`)."""
    from .apply import lifecycle

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
    from .oauth.loopback import system_browser

    system_browser(url)


# --- link flows a long-running face drives step by step (`reconcile serve`) -----------------


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
    from .apply import lifecycle

    desired = load_desired(config_path, environ)
    provider = declared_provider(desired, name)
    previous = _stored_metadata(desired, name)
    scopes = lifecycle.link_scopes(provider, previous)
    scopes += tuple(s for s in dict.fromkeys(extra_scopes) if s not in scopes)
    provider = lifecycle.endpoints(provider)
    return LinkRequest(provider, lifecycle.client_secret(desired, provider, environ), scopes)


def begin_browser_link(
    request: LinkRequest, redirect_uri: str, now: Callable[[], datetime]
) -> PendingLink:
    """An authorization request (state, PKCE, URL) to send a browser to."""
    from .oauth import authorize

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
    from .oauth import authorize

    declared_provider(load_desired(config_path, environ), name)
    result = authorize.finish_link(pending, params, now=now)
    request = LinkRequest(pending.provider, pending.client_secret, pending.scopes)
    return _store_link(config_path, name, request, result, now(), environ, lock_timeout)


def begin_device_link(request: LinkRequest) -> DeviceAuthorization:
    """A device authorization (RFC 8628): the code a person enters elsewhere."""
    from .oauth import device

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
    from .oauth import device
    from .oauth.errors import TransientError

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
    from .apply import lifecycle

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


def load_desired(config_path: Path, environ: Mapping[str, str] | None = None) -> Desired:
    """``providers.yaml`` validated, references left unresolved (no secret is read)."""
    return _desired_without_values(config_path, environ)


def declared_provider(desired: Desired, name: str) -> Provider:
    """The OAuth grant ``name`` declares, or ``UndeclaredError``: faces never create
    undeclared grants."""
    provider = desired.providers.get(name)
    if provider is None:
        what = "a static secret, not an OAuth grant" if name in desired.secrets else "not"
        raise UndeclaredError(f"{name!r} is {what} declared in {desired.path}")
    return provider


def _stored_metadata(desired: Desired, name: str) -> Grant | None:
    """The grant file's plaintext metadata (its granted scopes), None if there is none."""
    from .custody import open_custody
    from .vault.errors import VaultError

    try:
        return open_custody(desired, None).read(name).grant
    except VaultError:
        return None


def status(
    config_path: Path, now: datetime, environ: Mapping[str, str] | None = None
) -> list[GrantReport]:
    """Every grant's row of `reconcile status` (SPEC §4). With a key, each file's MAC is
    checked (a hand-edited file shows as ``invalid``); references are not resolved."""
    from .plan import report

    state = load_state(config_path, resolve=False, environ=environ)
    return report(state.desired, state.actual, now)


def revoke(
    config_path: Path, name: str, *, force: bool = False, environ: Mapping[str, str] | None = None
) -> str:
    """Revoke ``name`` at the provider and delete its file (`reconcile revoke NAME`)."""
    from .apply import lifecycle
    from .custody import open_custody
    from .vault.store import grant_path

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


def put_secret(
    config_path: Path, name: str, value: Secret, environ: Mapping[str, str] | None = None
) -> None:
    """Write a `prompt` secret's value (HTTP `PUT /v1/secrets/{name}`)."""
    from .custody import open_custody

    desired = _desired_without_values(config_path, environ)
    if name not in desired.secrets:
        raise UndeclaredError(f"{name!r} is not a secret declared in {desired.path}")
    if desired.secrets[name].ref != "prompt":
        raise ConflictError(
            f"secret {name!r} takes its value from `{desired.secrets[name].ref}` in "
            f"{desired.path}, so a value written here would be replaced by the next apply; "
            "declare it as `value: prompt` to set it over HTTP"
        )
    if not value:
        raise UserError(f"secret {name!r}: an empty value was given; nothing written")
    grant = Grant(name=name, kind="secret", value=value, obtained_at=utcnow())
    custody = open_custody(desired, None, environ)
    with custody.single_flight(name, replacing=True) as held:
        custody.commit(held, grant, durable=True, recipients=desired.recipients[name])


def delete_secret(config_path: Path, name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Delete a declared secret's file; False when there was none."""
    from .custody import open_custody

    desired = _desired_without_values(config_path, environ)
    if name not in desired.secrets:
        raise UndeclaredError(f"{name!r} is not a secret declared in {desired.path}")
    return open_custody(desired, None, environ).delete(name)


def _desired_without_values(config_path: Path, environ: Mapping[str, str] | None) -> Desired:
    from . import config

    return config.load(
        config_path, environ=os.environ if environ is None else environ, resolve_values=False
    )


def _not_a_provider(desired: Desired, name: str) -> str:
    declared = ", ".join(sorted(desired.providers)) or "none"
    return f"{name!r} is not an OAuth grant declared in {desired.path}; providers: {declared}"


def validate(config_path: Path, environ: Mapping[str, str] | None = None) -> Desired:
    """Load the config and resolve every reference (providers' client secrets included)."""
    from . import config

    environ = os.environ if environ is None else environ
    identities = find_identities(environ)
    desired = config.load(config_path, environ=environ, identities=identities)
    unresolved = unresolved_error(desired)
    if unresolved is not None:
        raise unresolved
    for provider in desired.providers.values():
        if provider.client_secret_ref and provider.client_secret_ref != "prompt":
            config.resolve_reference(
                provider.client_secret_ref,
                base_dir=desired.path.parent,
                owner=f"provider {provider.name!r} client_secret",
                environ=environ,
                identities=identities,
            )
    return desired


def init_project(config_path: Path, environ: Mapping[str, str] | None = None):
    """Create what a new project needs, keeping whatever already exists."""
    from .config.scaffold import initialise

    return initialise(config_path, os.environ if environ is None else environ)
