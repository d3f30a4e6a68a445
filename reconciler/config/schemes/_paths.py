"""Where a ``file:`` or ``sops:`` path points: ``~`` expanded, relative to the config's
folder."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def expand(raw: str, base_dir: Path, environ: Mapping[str, str]) -> Path:
    if raw == "~" or raw.startswith("~/"):
        home = environ.get("HOME") or os.path.expanduser("~")
        path = Path(home) / raw[2:] if raw != "~" else Path(home)
    else:
        path = Path(os.path.expanduser(raw))
    return path if path.is_absolute() else Path(base_dir) / path
