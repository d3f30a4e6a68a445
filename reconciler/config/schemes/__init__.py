"""Secret-reference schemes, one module each (``env``, ``file``, ``sops``): adding a scheme is
adding a module here (and its syntax to the schema's ``secretRef`` pattern).

Each module defines:

- ``NAME`` (the text before the colon) and ``SYNTAX`` (how a hint writes it, ``env:NAME``);
- ``READS_FILES``: it reads a file of this machine, which must never be a private key;
- ``parse(rest) -> (target, key) | None``: the part after the colon, or None if malformed;
- ``resolve(target, key, context) -> str``: the value, or ``ConfigError`` naming the owner and
  the reference (never the value).

``prompt`` is no scheme: it has no value to read (``references``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...vault.sops.keys import Identities


@dataclass(frozen=True)
class Context:
    """What resolving needs: who owns the reference, where relative paths start, the
    environment, and the age identities for ``sops:``."""

    owner: str
    #: How messages name the reference: ``reference `env:X` `` (never the value).
    where: str
    base_dir: Path
    environ: Mapping[str, str]
    identities: Identities | None = None


def _discover() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue  # shared helpers, not schemes
        module = importlib.import_module(f"{__name__}.{info.name}")
        found[module.NAME] = module
    return found


#: Every scheme, by name.
SCHEMES: dict[str, ModuleType] = _discover()
