"""Secret references: ``prompt``, or ``<scheme>:<rest>`` for a scheme of ``schemes/``
(``env:NAME``, ``file:PATH``, ``sops:PATH#dotted.key``).

A reference names where a value lives; the value itself never appears in a message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..model import Secret
from .errors import ConfigError, Issue, PromptRequired
from .schemes import SCHEMES, Context

if TYPE_CHECKING:
    from ..vault.sops.keys import Identities

REFERENCE_HINT = "use " + ", ".join(scheme.SYNTAX for scheme in SCHEMES.values()) + " or prompt"
#: What a key file holds: an age identity line, or a PEM/OpenSSH private key block.
_KEY_MATERIAL = re.compile(
    r"^\s*AGE-(?:SECRET-KEY|PLUGIN)-|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----", re.I | re.M
)


def parse_reference(ref: object, owner: str) -> tuple[str, str, str | None]:
    """``(kind, target, key)`` of a reference, or ConfigError without echoing it."""
    if isinstance(ref, str):
        if ref == "prompt":
            return "prompt", "", None
        name, _, rest = ref.partition(":")
        scheme = SCHEMES.get(name)
        parsed = scheme.parse(rest) if scheme is not None else None
        if parsed is not None:
            return name, parsed[0], parsed[1]
    raise ConfigError(
        Issue(
            f"{owner}: not a secret reference (the value is not shown)",
            hint=REFERENCE_HINT,
        )
    )


def resolve_reference(
    ref: str,
    *,
    base_dir: Path,
    owner: str,
    environ: Mapping[str, str],
    identities: Identities | None = None,
) -> Secret:
    """Read the value a secret reference points at.

    ``owner`` names what the reference belongs to in error messages, e.g. ``"secret
    `openai`"``. ``file:`` and ``sops:`` paths are relative to ``base_dir`` (the config's
    folder), with ``~`` expanded. Raises :class:`ConfigError` naming the owner and the
    reference (never the value) when it can't be resolved or is empty, and
    :class:`PromptRequired` for ``prompt``.
    """
    kind, target, key = parse_reference(ref, owner)
    where = f"reference `{ref}`"  # never the value
    if kind == "prompt":
        raise PromptRequired(
            Issue(
                f"{owner}: `prompt` has no stored value",
                hint="it is asked for interactively or written over HTTP",
            )
        )
    context = Context(owner, where, base_dir, environ, identities)
    scheme = SCHEMES[kind]
    value = scheme.resolve(target, key, context)
    if scheme.READS_FILES:  # a file on this machine can be the user's own key file
        _refuse_key_material(value, owner, where)
    return Secret(value)


def _refuse_key_material(value: str, owner: str, where: str) -> None:
    """A reference that leads to an age identity or a private key is a mistake (or worse):
    such a key is never sent to a provider."""
    if _KEY_MATERIAL.search(value):
        raise ConfigError(
            Issue(
                f"{owner}: {where}: it holds an age identity or a private key, not a secret "
                "value; refusing to use it",
                hint="point the reference at the value the provider issued, never at a key",
            )
        )
