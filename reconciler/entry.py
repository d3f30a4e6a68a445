"""The `reconcile` console script.

`reconcile token NAME` is what scripts run most, often many times a minute, and its answer
is usually in the token cache: it is served from there before the CLI module (argparse and
the rest) is even loaded. Every other command, and any token the cache cannot vouch for, goes
to ``cli.main``.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: see reconciler.cli
if TYPE_CHECKING:
    from collections.abc import Sequence


#: 128 + the signal's number, as a shell reports a command the signal ended.
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; Ctrl-C exits 130 and a reader that went away (`| head`) ends it
    quietly with 141, as SIGINT and SIGPIPE end other commands."""
    try:
        code = _run(sys.argv[1:] if argv is None else list(argv))
        sys.stdout.flush()  # here, not at exit, where a broken pipe would print a warning
        return code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            os.dup2(devnull, stream.fileno())  # what is still buffered goes nowhere
        return EXIT_BROKEN_PIPE


def _run(argv: list[str]) -> int:
    token = cached_token(argv)
    if token is not None:
        sys.stdout.write(token + "\n")
        return 0
    from .cli import main as run_command  # argparse and the stages: only past the cache

    return run_command(argv)


def cached_token(argv: list[str]) -> str | None:
    """`reconcile token NAME [-f FILE]` served from the token cache without building the
    parser or loading the config; None sends every other case down the full path."""
    if "token" not in argv:
        return None
    words = list(argv)
    config = "providers.yaml"
    for flag in ("-f", "--file"):
        if flag in words:
            at = words.index(flag)
            if at + 1 >= len(words):
                return None
            config = words.pop(at + 1)
            words.pop(at)
    if len(words) != 2 or words[0] != "token" or words[1].startswith("-"):
        return None
    from .vault.cache import fresh_token  # pyrage: only for `reconcile token`

    try:
        return fresh_token(config, words[1], os.environ)
    except Exception:  # anything unusual: the full path reports it properly
        return None
