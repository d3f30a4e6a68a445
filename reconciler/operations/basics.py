"""What every operation starts from: the clock, the identities sops would use, the config
without its secret values, and the check that a name is declared.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from .. import config
from ..errors import UndeclaredError
from ..model import Desired, Provider
from ..vault.sops.keys import load_identities

TYPE_CHECKING = False  # not typing's: importing typing costs every short command ~3 ms
if TYPE_CHECKING:
    from ..vault.sops.keys import Identities


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def find_identities(environ: Mapping[str, str] | None = None) -> Identities | None:
    """The age identities sops would use, or None when there are none (not an error here)."""
    identities = load_identities(os.environ if environ is None else environ)
    return identities or None


def load_desired(config_path: Path, environ: Mapping[str, str] | None = None) -> Desired:
    """``providers.yaml`` validated, references left unresolved (no secret is read)."""
    return config.load(
        config_path, environ=os.environ if environ is None else environ, resolve_values=False
    )


def declared_provider(desired: Desired, name: str) -> Provider:
    """The OAuth grant ``name`` declares, or ``UndeclaredError``: faces never create
    undeclared grants."""
    provider = desired.providers.get(name)
    if provider is None:
        what = "a static secret, not an OAuth grant" if name in desired.secrets else "not"
        raise UndeclaredError(f"{name!r} is {what} declared in {desired.path}")
    return provider


def _not_a_provider(desired: Desired, name: str) -> str:
    declared = ", ".join(sorted(desired.providers)) or "none"
    return f"{name!r} is not an OAuth grant declared in {desired.path}; providers: {declared}"
