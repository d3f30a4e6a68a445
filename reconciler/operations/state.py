"""The state of a project (``providers.yaml`` and its grants), its plan and its report, and
the checks and files around them: validate, init, `file:` sources git would commit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .. import config
from ..config.exposure import warnings
from ..config.scaffold import initialise
from ..custody import open_custody
from ..errors import UserError
from ..model import Actual, Desired, Plan
from ..plan import plan, report
from .basics import find_identities

TYPE_CHECKING = False  # not typing's: importing typing costs every short command ~3 ms
if TYPE_CHECKING:
    from ..custody import Held
    from ..plan import GrantReport
    from ..vault.sops.keys import Identities


@dataclass(frozen=True)
class State:
    desired: Desired
    actual: Actual
    #: age identities found the way sops finds them, or None when there are none.
    identities: Identities | None
    #: Each grant as the scan read it, with its custody basis (``custody.Held``), for the
    #: single-flight re-read to skip what is provably unchanged.
    known: Mapping[str, Held] | None = None


def load_state(
    config_path: Path, *, resolve: bool = True, environ: Mapping[str, str] | None = None
) -> State:
    """Read ``providers.yaml`` and the grant files. With an identity available, grant values
    are decrypted (and their MAC checked) and, with ``resolve``, secret references are
    resolved so that they can be compared; otherwise only plaintext metadata is read (enough
    for CI or a reviewer's machine). An identity that opens none of the grant files counts as
    none: references it cannot resolve are then no error."""
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


def make_plan(state: State, now: datetime, *, prune: bool = False) -> Plan:

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


def status(
    config_path: Path, now: datetime, environ: Mapping[str, str] | None = None
) -> list[GrantReport]:
    """Every grant's row of `reconcile status` (SPEC §4). With a key, each file's MAC is
    checked (a hand-edited file shows as ``invalid``); references are not resolved."""
    state = load_state(config_path, resolve=False, environ=environ)
    return report(state.desired, state.actual, now)


def validate(config_path: Path, environ: Mapping[str, str] | None = None) -> Desired:
    """Load the config and resolve every reference (providers' client secrets included)."""
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


def exposed_sources(desired: Desired) -> list[str]:
    """A warning for each `file:` source whose plaintext git would commit."""
    return warnings(desired)


def init_project(config_path: Path, environ: Mapping[str, str] | None = None):
    """Create what a new project needs, keeping whatever already exists."""
    return initialise(config_path, os.environ if environ is None else environ)
