"""``env:NAME``: the value of an environment variable."""

from __future__ import annotations

import re

from ..errors import ConfigError, Issue

NAME = "env"
SYNTAX = "env:NAME"
READS_FILES = False
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse(rest: str) -> tuple[str, str | None] | None:
    return (rest, None) if _VARIABLE.fullmatch(rest) else None


def resolve(target: str, key: str | None, context) -> str:
    value = context.environ.get(target)
    if value is None:
        raise ConfigError(
            Issue(
                f"{context.owner}: {context.where}: environment variable {target} is not set",
                hint=f"export {target}=..., or change the reference",
            )
        )
    if not value:
        raise ConfigError(
            Issue(
                f"{context.owner}: {context.where}: environment variable {target} is empty",
                hint="set it to the secret's value",
            )
        )
    return value
