"""Load ``providers.yaml`` into a :class:`~reconciler.model.Desired`.

The file is parsed once, keeping the line and column of every node (``document``),
validated against ``schemas/providers.schema.json`` (``schema``), merged with the built-in
presets (``providers``), and its secret references are resolved (``references``). Every
problem the user can fix is a :class:`ConfigError` whose message names the file, line,
column and JSON path, says what is wrong and, where it can, how to fix it ("did you mean
`scopes`?"). Resolved secret values never appear in a message.

Beside the loader: ``schemes/`` (one module per secret-reference scheme), ``scaffold``
(`reconcile init`'s starter files) and ``exposure`` (`file:` sources git would commit).

Heavy imports (yaml, jsonschema, the vault) happen inside the functions that need them.

May import: ``model``, ``errors``, ``secret``, ``catalog``, ``vault``.
"""

from .durations import parse_duration
from .errors import ConfigError, Issue, PromptRequired
from .loader import declares_coordination, load, locate
from .references import resolve_reference
from .schema import load_schema

__all__ = [
    "ConfigError",
    "Issue",
    "PromptRequired",
    "declares_coordination",
    "load",
    "load_schema",
    "locate",
    "parse_duration",
    "resolve_reference",
]
