"""``file:PATH``: the text of a file (one trailing line break dropped), at most 1 MiB."""

from __future__ import annotations

from ..errors import ConfigError, Issue
from ._paths import expand

NAME = "file"
SYNTAX = "file:PATH"
READS_FILES = True
#: A ``file:`` secret holds one value, not a disk image.
MAX_SECRET_FILE = 1 << 20


def parse(rest: str) -> tuple[str, str | None] | None:
    return (rest, None) if rest else None


def resolve(target: str, key: str | None, context) -> str:
    path = expand(target, context.base_dir, context.environ)
    owner, where = context.owner, context.where
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
