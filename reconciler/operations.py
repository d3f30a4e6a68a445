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


@dataclass(frozen=True)
class State:
    desired: Desired
    actual: Actual
    #: age identities found the way sops finds them, or None when there are none.
    identities: list | None


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def find_identities(environ: Mapping[str, str] | None = None) -> list | None:
    """The age identities sops would use, or None when there are none (not an error here)."""
    from .vault.keys import load_identities

    identities = load_identities(os.environ if environ is None else environ)
    return identities or None


def load_state(
    config_path: Path, *, decrypt: bool = True, environ: Mapping[str, str] | None = None
) -> State:
    """Read ``providers.yaml`` and the grant files. With ``decrypt`` and an identity available,
    secret references are resolved and grant values decrypted so that they can be compared;
    without, only plaintext metadata is read (enough for CI or a reviewer's machine)."""
    from . import config
    from .vault.store import scan

    environ = os.environ if environ is None else environ
    identities = find_identities(environ) if decrypt else None
    desired = config.load(
        config_path,
        environ=environ,
        resolve_values=identities is not None,
        identities=identities,
    )
    actual = scan(desired.store_dir, identities)
    return State(desired, actual, identities)


def make_plan(state: State, now: datetime, *, prune: bool = False) -> Plan:
    from .plan import plan

    return plan(state.desired, state.actual, now, prune=prune)


def unreadable_error(actual: Actual, store_dir: Path) -> UserError | None:
    """One error for every grant file that could not be read (tampered, wrong key...)."""
    if not actual.unreadable:
        return None
    lines = [actual.unreadable[name] for name in sorted(actual.unreadable)]
    return UserError(
        " ".join(lines) + " These files were left untouched; restore them from git "
        f"(`git checkout -- {store_dir}`) or fix the identity, then run again."
    )


def run_apply(
    state: State,
    plan: Plan,
    now: datetime,
    *,
    link: bool = True,
    ask_secret: Callable[[str], Secret] | None = None,
) -> Iterator:
    from .apply import Context, apply

    context = Context(state.desired, state.actual, state.identities, now, ask_secret, link)
    return apply(plan, context)


def read_token(config_path: Path, name: str, environ: Mapping[str, str] | None = None) -> Secret:
    """The value to hand a script: a static secret's value or a grant's access token.

    This is the hot path of ``reconcile token``: it reads only the config's store folder
    (no schema validation) and the one grant file.
    """
    from . import config
    from .vault.store import NoIdentityError, grant_path, read_grant

    environ = os.environ if environ is None else environ
    store_dir, declared = config.locate(config_path)
    if name not in declared:
        raise UserError(
            f"{name!r} is not declared in {config_path}; declared: {', '.join(declared) or 'none'}"
        )
    path = grant_path(store_dir, name)
    if not path.exists():
        raise UserError(f"{name}: no grant file at {path}; run `reconcile apply` first")
    identities = find_identities(environ)
    if identities is None:
        raise NoIdentityError(
            f"{path}: no age identity found to decrypt it. sops looks in SOPS_AGE_KEY, "
            "SOPS_AGE_KEY_FILE, then $XDG_CONFIG_HOME/sops/age/keys.txt."
        )
    grant = read_grant(path, identities)
    return _usable_token(grant, path)


def _usable_token(grant: Grant, path: Path) -> Secret:
    if grant.kind == "secret":
        if grant.value is None:
            raise UserError(f"{grant.name}: {path} holds no value; run `reconcile apply`")
        return grant.value
    if grant.status == "needs-relink":
        reason = f" ({grant.status_reason})" if grant.status_reason else ""
        raise UserError(
            f"{grant.name} needs to be linked again{reason}; run `reconcile link {grant.name}`"
        )
    if grant.access_token is None or (grant.expires_at and grant.expires_at <= utcnow()):
        raise UserError(
            f"{grant.name}: the access token has expired and refreshing is not available yet "
            "in this version; run `reconcile link` again"
        )
    return grant.access_token


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
