"""Built-in provider presets: one YAML file per provider, data only.

Each file follows ``schemas/catalog.schema.json``. ``reconciler.config`` merges a preset
under the fields a ``providers.yaml`` entry gives explicitly. Adding a preset is adding its
YAML file: the schema's list of presets is read from here.

May import: nothing of the project (it is data).
"""

from __future__ import annotations

import copy
import re
from functools import cache, lru_cache
from pathlib import Path

__all__ = ["MCP_EXAMPLE", "UnknownPreset", "load_preset", "preset_names", "summaries"]

#: Remote MCP servers need no preset (SPEC §8): what `reconcile presets` shows about them.
MCP_EXAMPLE = {
    "note": (
        "MCP servers need no preset: declare the server's endpoint with `mcp:`. Its "
        "authorization server (RFC 9728), a client (client_id, else a client ID metadata "
        "document, else RFC 7591 registration) and its scopes are discovered at the first "
        "link, and every token is bound to the server (RFC 8707)."
    ),
    "yaml": "providers:\n  linear:\n    mcp: https://mcp.linear.app/mcp\n",
}

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class UnknownPreset(KeyError):
    """No preset by that name. ``str()`` lists the known presets and a close match."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known
        self.suggestion = _closest(name, known)

    def __str__(self) -> str:
        hint = f"did you mean `{self.suggestion}`? " if self.suggestion else ""
        return f"unknown preset `{self.name}` ({hint}known presets: {', '.join(self.known)})"


#: The presets' YAML files, beside this module (package data; importlib.resources would cost
#: every command ~5 ms of zipfile imports for the same files).
_FOLDER = Path(__file__).resolve().parent


def _closest(name: str, known: tuple[str, ...]) -> str | None:
    import difflib  # only for a did-you-mean hint

    matches = difflib.get_close_matches(str(name).lower(), known, n=1, cutoff=0.6)
    return matches[0] if matches else None


@lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    folder = _FOLDER
    return tuple(
        sorted(
            entry.name[: -len(".yaml")]
            for entry in folder.iterdir()
            if entry.name.endswith(".yaml") and entry.is_file()
        )
    )


def preset_names() -> list[str]:
    """Names of the built-in presets, sorted."""
    return list(_names())


@cache
def _load(name: str) -> dict:
    import yaml  # ~15 ms, and the CLI imports this module for every command

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    text = (_FOLDER / f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.load(text, Loader=loader)
    if not isinstance(data, dict):  # pragma: no cover - guarded by the catalog tests
        raise ValueError(f"preset {name}: not a mapping")
    return data


def load_preset(name: str) -> dict:
    """The preset's data (a fresh copy; the parsed file is cached).

    Raises :class:`UnknownPreset` (a ``KeyError``) for a name that is not in the catalog.
    """
    known = _names()
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name not in known:
        raise UnknownPreset(str(name), known)
    return copy.deepcopy(_load(name))


#: The flows a preset's endpoints make possible, by the endpoint each needs.
_FLOW_ENDPOINTS = (
    ("authorization_code", "authorization_endpoint"),
    ("device_code", "device_authorization_endpoint"),
)


def summaries() -> list[dict]:
    """One entry per preset, for `reconcile presets`: ``name``, ``title``, ``flows`` (those its
    endpoints support), ``notes``, ``docs`` (where to register a client) and ``vars`` (the
    placeholders its URLs take, with their defaults)."""
    found = []
    for name in _names():
        data = _load(name)
        found.append(
            {
                "name": name,
                "title": data.get("title", name),
                "flows": [flow for flow, key in _FLOW_ENDPOINTS if data.get(key)],
                "notes": " ".join(str(data.get("notes") or "").split()) or None,
                "docs": data.get("docs"),
                "vars": dict(data.get("vars") or {}),
            }
        )
    return found
