"""`reconcile exec --env VAR=NAME ... -- CMD ARGS...`: run a command with credentials in its
environment only.

Every name is resolved first (``operations.read_token``: a valid access token, refreshed if
due, or a static secret's value), so an unknown name or a grant that needs a relink stops
everything before the command runs. Then this process *becomes* the command (``execvpe``):
same PID, same stdin/stdout/stderr, signals delivered to it directly, its exit status is the
exit status. The values are put in the new program's environment and nowhere else: never on
a command line (``ps`` shows none), never in the environment of the shell that started
`reconcile`.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from . import operations

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: Exit codes when the command cannot be run, as env(1) and POSIX shells report them.
EXIT_CANNOT_RUN, EXIT_NOT_FOUND = 126, 127


class ExecError(Exception):
    """A bad ``--env`` pair or command; ``str()`` is the message for the user."""


def parse_pairs(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """``["GITHUB_TOKEN=github", ...]`` → ``[("GITHUB_TOKEN", "github"), ...]``."""
    if not pairs:
        raise ExecError("no credentials to pass: give at least one --env VARIABLE=NAME")
    parsed: dict[str, str] = {}
    for pair in pairs:
        variable, sep, name = pair.partition("=")
        if not sep or not name:
            raise ExecError(f"--env {pair!r}: expected VARIABLE=NAME, e.g. GITHUB_TOKEN=github")
        if not _VARIABLE.match(variable):
            raise ExecError(
                f"--env {pair!r}: {variable!r} is not a valid environment variable name "
                "(letters, digits and _, not starting with a digit)"
            )
        if variable in parsed and parsed[variable] != name:
            raise ExecError(f"--env: {variable} is given twice ({parsed[variable]}, {name})")
        parsed[variable] = name
    return list(parsed.items())


def command_of(argv: Sequence[str]) -> list[str]:
    """The command after ``--`` (argparse keeps the separator in a REMAINDER)."""
    command = list(argv)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ExecError("nothing to run: give the command after --, e.g. `-- gh repo list`")
    return command


def resolve(
    config_path: Path, pairs: Sequence[tuple[str, str]], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``{VARIABLE: value}`` for every pair; raises ``operations.UserError`` (and the other
    errors of ``operations.read_token``) before anything runs."""
    values: dict[str, str] = {}
    resolved: dict[str, str] = {}
    for variable, name in pairs:
        if name not in resolved:
            resolved[name] = operations.read_token(config_path, name, environ).reveal()
        values[variable] = resolved[name]
    return values


def run(command: Sequence[str], extra: Mapping[str, str]) -> NoReturn:
    """Replace this process with ``command``, its environment being ours plus ``extra``."""
    environ = {**os.environ, **extra}
    sys.stdout.flush()
    sys.stderr.flush()
    # Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across exec:
    # give the command the default dispositions it would get from a shell.
    for name in ("SIGPIPE", "SIGXFSZ"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_DFL)
    try:
        os.execvpe(command[0], list(command), environ)
    except FileNotFoundError:
        print(f"error: {command[0]}: command not found", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_NOT_FOUND) from None
    except OSError as error:
        print(f"error: {command[0]}: {error.strerror or error}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CANNOT_RUN) from None
