"""Secret references: ``env:NAME``, ``file:PATH``, ``sops:PATH#dotted.key`` and ``prompt``.

A reference names where a value lives; the value itself never appears in a message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..model import Secret
from .errors import ConfigError, Issue, PromptRequired
from .wording import closest, did_you_mean, shown, type_name

if TYPE_CHECKING:
    from ..vault.sops.keys import Identities

#: A ``file:`` secret holds one value, not a disk image.
MAX_SECRET_FILE = 1 << 20
REFERENCE_HINT = "use env:NAME, file:PATH, sops:PATH#dotted.key or prompt"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: What a key file holds: an age identity line, or a PEM/OpenSSH private key block.
_KEY_MATERIAL = re.compile(
    r"^\s*AGE-(?:SECRET-KEY|PLUGIN)-|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----", re.I | re.M
)
_DOTTED_KEY = re.compile(r"[^.#\s]+(?:\.[^.#\s]+)*")


def parse_reference(ref: object, owner: str) -> tuple[str, str, str | None]:
    """``(kind, target, key)`` of a reference, or ConfigError without echoing it."""
    if isinstance(ref, str):
        if ref == "prompt":
            return "prompt", "", None
        scheme, _, rest = ref.partition(":")
        if scheme == "env" and _ENV_NAME.fullmatch(rest):
            return "env", rest, None
        if scheme == "file" and rest:
            return "file", rest, None
        if scheme == "sops":
            target, _, key = rest.rpartition("#")
            if target and _DOTTED_KEY.fullmatch(key):
                return "sops", target, key
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
    if kind == "env":
        value = environ.get(target)
        if value is None:
            raise ConfigError(
                Issue(
                    f"{owner}: {where}: environment variable {target} is not set",
                    hint=f"export {target}=..., or change the reference",
                )
            )
        if not value:
            raise ConfigError(
                Issue(
                    f"{owner}: {where}: environment variable {target} is empty",
                    hint="set it to the secret's value",
                )
            )
        return Secret(value)
    path = _expand(target, base_dir, environ)
    if kind == "file":
        value = _read_secret_file(path, owner, where)
    else:
        value = _read_sops_value(path, key or "", owner, where, identities)
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


def _expand(raw: str, base_dir: Path, environ: Mapping[str, str]) -> Path:
    if raw == "~" or raw.startswith("~/"):
        home = environ.get("HOME") or os.path.expanduser("~")
        path = Path(home) / raw[2:] if raw != "~" else Path(home)
    else:
        path = Path(os.path.expanduser(raw))
    return path if path.is_absolute() else Path(base_dir) / path


def _read_secret_file(path: Path, owner: str, where: str) -> str:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SECRET_FILE + 1)
    except FileNotFoundError:
        raise ConfigError(
            Issue(
                f"{owner}: {where}: file {path} does not exist",
                hint="create it holding just the value, or fix the path; relative paths "
                "start at the config file's folder",
            )
        ) from None
    except IsADirectoryError:
        raise ConfigError(Issue(f"{owner}: {where}: {path} is a folder, not a file")) from None
    except ValueError:  # e.g. a NUL byte in the path
        raise ConfigError(Issue(f"{owner}: {where}: not a usable file path")) from None
    except OSError as error:
        raise ConfigError(
            Issue(
                f"{owner}: {where}: cannot read {path}: {error.strerror or type(error).__name__}",
                hint="check the file's permissions",
            )
        ) from None
    if len(raw) > MAX_SECRET_FILE:
        raise ConfigError(
            Issue(
                f"{owner}: {where}: {path} is larger than 1 MiB",
                hint="a secret file holds just the value",
            )
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(Issue(f"{owner}: {where}: {path} is not UTF-8 text")) from None
    text = text.rstrip("\r\n")
    if not text:
        raise ConfigError(
            Issue(
                f"{owner}: {where}: file {path} is empty",
                hint="write the secret's value into it",
            )
        )
    return text


def _read_sops_value(
    path: Path, key: str, owner: str, where: str, identities: Identities | None
) -> str:
    if not path.is_file():
        raise ConfigError(
            Issue(
                f"{owner}: {where}: SOPS file {path} does not exist",
                hint="fix the path; relative paths start at the config file's folder",
            )
        )
    try:
        from ..vault.store import decrypt_file
    except ImportError as error:  # pragma: no cover - the vault ships with the package
        raise ConfigError(
            Issue(f"{owner}: {where}: cannot read SOPS files here ({error})")
        ) from None
    try:
        document = decrypt_file(path, identities)
    except ConfigError:
        raise
    except Exception as error:
        detail = shown(str(error), 200) or type(error).__name__
        raise ConfigError(
            Issue(
                f"{owner}: {where}: cannot decrypt {path}: {detail}",
                hint="make sure an age identity for it is available: SOPS_AGE_KEY, "
                "SOPS_AGE_KEY_FILE or ~/.config/sops/age/keys.txt",
            )
        ) from None
    node: object = document
    walked: list[str] = []
    for part in key.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            at = ".".join(walked) or "the top level"
            hint = None
            if isinstance(node, Mapping):
                keys = [str(k) for k in node if k != "sops"]
                hint = did_you_mean(
                    closest(part, keys), f"keys at {at}: {', '.join(keys[:12]) or 'none'}"
                )
            raise ConfigError(Issue(f"{owner}: {where}: {path} has no key `{key}`", hint=hint))
        walked.append(part)
    if isinstance(node, Secret):
        node = node.reveal()
    if isinstance(node, bool) or node is None or isinstance(node, Mapping | list):
        kind = "nothing" if node is None else type_name(node)
        raise ConfigError(
            Issue(
                f"{owner}: {where}: `{key}` in {path} is {kind}, not a value",
                hint="point the reference at a single string value",
            )
        )
    value = node if isinstance(node, str) else str(node)
    if not value:
        raise ConfigError(Issue(f"{owner}: {where}: `{key}` in {path} is empty"))
    return value
