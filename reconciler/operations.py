"""The operations every face (CLI, watcher, server, runtime) calls: one implementation each.

They glue the stages together: config → vault → plan → apply. Nothing here prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .model import Actual, Desired, Grant, Plan, Secret


class UserError(Exception):
    """A problem the user can fix; ``str()`` is the one-paragraph message to show."""


class UndeclaredError(UserError):
    """The name is not declared in ``providers.yaml``: faces never create undeclared grants."""


class ConflictError(UserError):
    """The request contradicts ``providers.yaml`` (e.g. writing a secret it sources elsewhere)."""


class NeedsRelinkError(UserError):
    """The grant is marked ``needs-relink``; only a new link flow can fix it."""


@dataclass(frozen=True)
class State:
    desired: Desired
    actual: Actual
    #: age identities found the way sops finds them, or None when there are none.
    identities: list | None
    #: Fingerprints of the grant files, taken before the scan read them.
    fingerprints: Mapping | None = None


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def find_identities(environ: Mapping[str, str] | None = None) -> list | None:
    """The age identities sops would use, or None when there are none (not an error here)."""
    from .vault.keys import load_identities

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
    from .vault.store import scan

    environ = os.environ if environ is None else environ
    identities = find_identities(environ)
    unresolved: config.ConfigError | None = None
    try:
        desired = config.load(
            config_path,
            environ=environ,
            resolve_values=resolve and identities is not None,
            identities=identities,
        )
    except config.ConfigError as error:
        if not resolve or identities is None:
            raise
        unresolved = error  # excused below if the identity turns out not to be this store's
        desired = config.load(config_path, environ=environ, resolve_values=False)
    from .grants import file_fingerprints

    fingerprints = file_fingerprints(desired.store_dir)  # before the scan reads the files
    actual = scan(desired.store_dir, identities)
    if actual.sealed_reason is not None:
        identities = None  # a reviewer's own key: as without one
    elif unresolved is not None:
        raise unresolved
    if identities is not None:  # this machine's fresher access tokens, for expiry
        from .grants import with_cached_tokens

        actual = with_cached_tokens(desired, actual, identities, environ)
    return State(desired, actual, identities, fingerprints if identities is not None else None)


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
    allow_foreign_recipients: bool = False,
    allow_rollback: bool = False,
) -> Iterator:
    from .apply import Context, apply

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
        fingerprints=state.fingerprints,
        allow_foreign_recipients=allow_foreign_recipients,
        allow_rollback=allow_rollback,
    )
    return apply(plan, context)


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
    from .vault.keys import load_identities

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
        entry = cache.CachedToken(grant.value, None, None, utcnow(), 0.0)
        cache.write(config_path, name, path, entry, identities, environ)
        return grant.value
    return _access_token(config_path, name, identities, environ, allow_rollback)


def _access_token(
    config_path: Path,
    name: str,
    identities: list,
    environ: Mapping[str, str],
    allow_rollback: bool = False,
) -> Secret:
    from . import config, grants

    desired = config.load(config_path, environ=environ, resolve_values=False)
    if name not in desired.providers:
        raise UserError(f"{name} is declared as a secret in {config_path}, not as an OAuth grant")
    try:
        grant = grants.refresh(
            desired, name, utcnow(), identities, environ=environ, allow_rollback=allow_rollback
        )
    except grants.NeedsRelink as error:
        raise NeedsRelinkError(str(error)) from None
    except grants.GrantError as error:
        raise UserError(str(error)) from None
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
    from . import grants
    from .vault.store import grant_path, read_grant

    state = load_state(config_path, environ=environ)
    if name not in state.desired.providers:
        raise UserError(_not_a_provider(state.desired, name))
    previous = None
    if name in state.actual.grants and state.identities is not None:
        previous = read_grant(grant_path(state.desired.store_dir, name), state.identities)
    return grants.link(
        state.desired, name, utcnow(), browser, device=device, previous=previous, environ=environ
    )


def revoke(
    config_path: Path, name: str, *, force: bool = False, environ: Mapping[str, str] | None = None
) -> str:
    """Revoke ``name`` at the provider and delete its file (`reconcile revoke NAME`)."""
    from . import grants
    from .vault.store import delete_grant, grant_path, read_grant

    state = load_state(config_path, environ=environ)
    path = grant_path(state.desired.store_dir, name)
    if not path.exists():
        raise UserError(f"{name}: there is no grant file at {path}; nothing to revoke")
    if state.identities is None:
        raise UserError(f"{name}: revoking needs an age identity that can decrypt {path}")
    grant = read_grant(path, state.identities)
    if grant.kind == "secret":
        delete_grant(path)
        return "deleted (a static secret has nothing to revoke)"
    try:
        return grants.revoke(
            state.desired, name, grant, force=force, environ=environ, identities=state.identities
        )
    except grants.GrantError as error:
        raise UserError(str(error)) from None


def put_secret(
    config_path: Path, name: str, value: Secret, environ: Mapping[str, str] | None = None
) -> None:
    """Write a `prompt` secret's value (HTTP `PUT /v1/secrets/{name}`)."""
    from .vault.store import grant_path, write_grant

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
    write_grant(grant_path(desired.store_dir, name), grant, desired.recipients[name])


def delete_secret(config_path: Path, name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Delete a declared secret's file; False when there was none."""
    from .vault.store import delete_grant, grant_path

    desired = _desired_without_values(config_path, environ)
    if name not in desired.secrets:
        raise UndeclaredError(f"{name!r} is not a secret declared in {desired.path}")
    path = grant_path(desired.store_dir, name)
    if not path.exists():
        return False
    delete_grant(path)
    return True


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


def init_project(config_path: Path, environ: Mapping[str, str] | None = None) -> dict[Path, str]:
    """Create what a new project needs, keeping whatever already exists."""
    from .init import initialise

    return initialise(config_path, os.environ if environ is None else environ)
