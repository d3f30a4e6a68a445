"""``sops:PATH#dotted.key``: one value inside another SOPS file, decrypted with this
machine's age identities."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ...secret import Secret
from ..errors import ConfigError, Issue
from ..wording import closest, did_you_mean, shown, type_name
from ._paths import expand

NAME = "sops"
SYNTAX = "sops:PATH#dotted.key"
READS_FILES = True
_DOTTED_KEY = re.compile(r"[^.#\s]+(?:\.[^.#\s]+)*")


def parse(rest: str) -> tuple[str, str | None] | None:
    target, _, key = rest.rpartition("#")
    return (target, key) if target and _DOTTED_KEY.fullmatch(key) else None


def resolve(target: str, key: str | None, context) -> str:
    path = expand(target, context.base_dir, context.environ)
    owner, where, identities = context.owner, context.where, context.identities
    key = key or ""
    if not path.is_file():
        raise ConfigError(
            Issue(
                f"{owner}: {where}: SOPS file {path} does not exist",
                hint="fix the path; relative paths start at the config file's folder",
            )
        )
    # The SOPS reader loads cryptography's AES; only a sops: reference needs it.
    from ...vault.store import decrypt_file

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
