"""Long-running faces and the coordination engine (SPEC §7): ``follow`` yields each grant
whose live state another process or machine committed, with the token to keep in memory,
recorded first in this machine's token cache (keyed by the state's generation) so that
`reconcile token` serves it too without contacting the engine; ``leads`` says whether this
process is the `--watch` elected to refresh ahead of expiry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import config
from ..custody import EngineUnavailable, open_custody
from ..vault.errors import VaultError
from ..vault.sops.keys import load_identities
from ..vault.store import grant_path
from .issued import Issued, issued
from .state import State


def coordinated(config_path: Path) -> bool:
    """Whether the config declares ``coordination:`` (a YAML parse, no validation)."""
    try:
        return config.declares_coordination(config_path)
    except (OSError, config.ConfigError):
        return False


def leads(state: State, environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is the `--watch` elected to refresh ahead of expiry (always, for
    grants kept in files); the others refresh on demand only."""
    if state.desired.coordination is None:
        return True
    return open_custody(state.desired, state.identities, environ).leads()


def follow(
    config_path: Path, stop: Any, environ: Mapping[str, str] | None = None
) -> Iterator[tuple[str, Issued | None]]:
    """Until ``stop`` (an Event) is set: ``(name, issued)`` for each grant whose state changed
    in the engine; ``issued`` is None when there is no token to keep (the grant needs a
    relink, or was removed). Nothing when the config declares no engine."""
    environ = os.environ if environ is None else environ
    desired = config.load(config_path, environ=environ, resolve_values=False)
    if desired.coordination is None:
        return
    identities = load_identities(environ, required=True)
    custody = open_custody(desired, identities, environ)
    for name in custody.changes(stop):
        if name not in desired.providers:
            continue
        try:
            held = custody.read(name)
        except (EngineUnavailable, VaultError):
            yield name, None  # read again on demand
            continue
        grant = held.grant
        if grant is None or grant.access_token is None or not custody.keep(held):
            yield name, None
            continue
        grant_file = str(grant_path(desired.store_dir, name))
        yield name, issued(config_path, name, grant.access_token, grant_file, None, None, environ)
