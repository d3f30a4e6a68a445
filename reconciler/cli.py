"""The `reconcile` command: argument parsing and output only. The work is in `operations`."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import textwrap
import traceback
from dataclasses import replace
from pathlib import Path

from . import execenv, operations
from .catalog import MCP_EXAMPLE, summaries
from .errors import ReconcilerError, message_of
from .model import Browser, Secret

TYPE_CHECKING = False  # not typing's: importing typing alone costs a short command ~4 ms
if TYPE_CHECKING:
    from collections.abc import Sequence

EXIT_OK, EXIT_ERROR, EXIT_PENDING, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Options of `apply` that the bare command takes too, and the commands that accept each.
_APPLY_OPTIONS = {
    "prune": ("apply", "plan"),
    "no_link": ("apply",),
    "watch": ("apply",),
    "device": ("apply", "link"),
    "no_browser": ("apply", "link"),
    "link_timeout": ("apply", "link"),
    "allow_foreign_recipients": ("apply",),
    "force": ("apply", "token", "revoke"),
}
_APPLY_DEFAULTS = {"link_timeout": 300.0}

_SYMBOLS = {"link": "+", "prune": "-"}


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options accepted before or after the command. On subcommands they default to
    SUPPRESS so that a value given before the command is not reset after it."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "-f", "--file", type=Path, default=default(Path("providers.yaml")),
        help="the desired-state file (default: ./providers.yaml)",
    )  # fmt: skip
    parser.add_argument(
        "-o", "--output", choices=("text", "json"), default=default("text"),
        help="text for people (default), json for programs: one document on stdout",
    )  # fmt: skip
    parser.add_argument(
        "-v", "--verbose", action="count", default=default(0),
        help="more detail; tracebacks on errors",
    )  # fmt: skip
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default(False),
        help="only errors on stderr",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # exit 1, not argparse's 2: 2 means "changes pending"
            self.print_usage(sys.stderr)
            self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")

    parser = Parser(
        prog="reconcile",
        description="Reconcile declared OAuth grants and API keys into SOPS/age-encrypted files. "
        "With no COMMAND, `reconcile` is `reconcile apply` and takes its options.",
    )
    _global_options(parser, suppress=False)
    parser.add_argument(
        "--version", action=_version_action(), nargs=0, default=argparse.SUPPRESS,
        help="show the version and exit",
    )  # fmt: skip
    _apply_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _global_options(sub, suppress=True)
        return sub

    _apply_options(command("apply", "plan, then carry the plan out (the default command)"))
    plan = command("plan", "show what apply would do, change nothing")
    plan.add_argument(
        "--exit-code", action="store_true", help="exit 2 when changes are pending, 0 when none"
    )
    plan.add_argument(
        "--prune", action="store_true", default=argparse.SUPPRESS,
        help="include undeclared grants to prune",
    )  # fmt: skip
    command("status", "show every grant: status, scopes, expiry, last refresh")
    command("validate", "check the config and its references, change nothing")
    command("init", "create an age identity, .sops.yaml, a starter providers.yaml, .gitignore")
    command("presets", "list the built-in provider presets: name, title, flows, notes")
    token = command("token", "print a valid access token or secret value, for scripts")
    token.add_argument("name", help="the grant or secret name")
    _force_option(token)
    link = command("link", "run one link flow now")
    link.add_argument("name", help="the grant name")
    _link_options(link)
    revoke = command("revoke", "revoke a grant at the provider and delete its file")
    revoke.add_argument("name", help="the grant name")
    revoke.add_argument(
        "--force", action="store_true",
        help="delete the file even when the provider has no revocation endpoint",
    )  # fmt: skip
    revoke.add_argument(
        "-y", "--yes", action="store_true", help="do not ask for confirmation on a terminal"
    )
    run = command("exec", "run a command with credentials in its environment only")
    run.add_argument(
        "--env", action="append", default=[], metavar="VARIABLE=NAME",
        help="set VARIABLE to NAME's access token or secret value (repeatable)",
    )  # fmt: skip
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="what to run")
    serve = command("serve", "serve the local HTTP link and secret surface")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port (default: 8765)")
    serve.add_argument(
        "--allow-remote", action="store_true", help="allow a --host other machines can reach"
    )
    serve.add_argument(
        "--allow-origin", action="append", default=[], metavar="ORIGIN",
        help="an origin return_url may use, e.g. https://composer.example (repeatable)",
    )  # fmt: skip
    return parser


def _apply_options(parser: argparse.ArgumentParser) -> None:
    """`apply`'s options, on `apply` and on the bare command alike. They default to SUPPRESS
    everywhere (``main`` fills the defaults), so a value given before the command is kept."""
    parser.add_argument(
        "--prune", action="store_true", default=argparse.SUPPRESS,
        help="revoke and delete undeclared grants",
    )  # fmt: skip
    parser.add_argument(
        "--no-link", action="store_true", default=argparse.SUPPRESS,
        help="do not start link flows; exit 2 if any are pending",
    )  # fmt: skip
    parser.add_argument(
        "--allow-foreign-recipients", action="store_true", default=argparse.SUPPRESS,
        help="encrypt even to recipients that include none of this machine's age identities",
    )  # fmt: skip
    _force_option(parser)
    _link_options(parser)
    parser.add_argument(
        "--watch", action="store_true", default=argparse.SUPPRESS,
        help="apply, then apply again on every change to the config, .sops.yaml, referenced "
        "files or grant files, and on refresh deadlines, until Ctrl-C",
    )  # fmt: skip


def _force_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force", action="store_true", default=argparse.SUPPRESS,
        help="refresh even from a grant file older than one this machine has seen (rollback)",
    )  # fmt: skip


def _link_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", action="store_true", default=argparse.SUPPRESS,
        help="use the device flow (headless machines)",
    )  # fmt: skip
    parser.add_argument(
        "--no-browser", action="store_true", default=argparse.SUPPRESS,
        help="print the URL instead of opening a browser",
    )  # fmt: skip
    parser.add_argument(
        "--link-timeout", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
        help="how long to wait for the browser (default: 300)",
    )  # fmt: skip


def _version_action() -> type[argparse.Action]:
    class Version(argparse.Action):
        """``--version``: the installed package's version, looked up only when asked for."""

        def __call__(self, parser, namespace, values, option_string=None) -> None:
            print(f"reconcile {_version()}")
            parser.exit()

    return Version


def _version() -> str:
    """The installed version, from the name of the package's ``.dist-info`` folder
    (``{name}-{version}.dist-info``), found first on ``sys.path`` as ``importlib.metadata``
    finds it, without that module's ~100 ms of imports and scanning."""
    prefix, suffix = "oauth_reconciler-", ".dist-info"
    for folder in sys.path:
        try:
            names = os.listdir(folder or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith(prefix) and name.endswith(suffix):
                return name[len(prefix) : -len(suffix)]
    return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command = args.command or "apply"
    for option, commands in _APPLY_OPTIONS.items():
        if hasattr(args, option) and args.command not in commands:
            flag = "--" + option.replace("_", "-")
            parser.error(f"{flag} goes with {' or '.join(commands)}, not {args.command}")
        setattr(args, option, getattr(args, option, _APPLY_DEFAULTS.get(option, False)))
    out = Output(args)
    try:
        return _COMMANDS[args.command](args, out)
    except KeyboardInterrupt:
        out.error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise  # the reader went away (`| head`): ``entry`` ends quietly
    except Exception as error:
        if args.verbose:
            traceback.print_exc()
        out.failed(_message(error), getattr(error, "hint", None))
        return getattr(error, "exit_code", EXIT_ERROR)


def _message(error: Exception) -> str:

    if isinstance(error, ReconcilerError | OSError):
        return message_of(error)
    return f"{message_of(error)} (run with -v for a traceback)"


class Output:
    """Where things are shown: results on stdout, progress and errors on stderr."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = args.output == "json"
        self.quiet = args.quiet
        self.verbose = args.verbose

    def progress(self, line: str) -> None:
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def error(self, message: str) -> None:
        print(f"error: {message}", file=sys.stderr, flush=True)

    def failed(self, message: str, hint: str | None = None) -> None:
        """The command failed before it had a result: the message on stderr and, with
        ``-o json``, as the one document on stdout (``{"error": {"message", "hint"?}}``)."""
        self.error(message)
        if self.json:
            error = {"message": message, **({"hint": hint} if hint else {})}
            self.result("", {"error": error})

    def warning(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def result(self, text: str, document: object) -> None:
        if self.json:
            json.dump(document, sys.stdout, indent=2)
            sys.stdout.write("\n")
        elif text:
            print(text)


def _load(args: argparse.Namespace, out: Output):

    state = operations.load_state(args.file)
    _warn_exposed(state.desired, out)
    return state, operations.unreadable_error(state.actual)


def _unresolved(state) -> Exception | None:
    return operations.unresolved_error(state.desired)


def _warn_exposed(desired, out: Output) -> list[str]:
    """Warn about `file:` references whose plaintext git would commit; return the warnings."""
    found = operations.exposed_sources(desired)
    for warning in found:
        out.warning(warning)
    return found


def _plan_document(plan) -> dict:
    return {
        "actions": [{"name": a.name, "action": a.action, "reason": a.reason} for a in plan.actions],
        "summary": plan.summary(),
        "notes": list(plan.notes),
    }


def _symbol(action, actual) -> str:
    if action.action == "write-secret":
        return "~" if action.name in actual.grants else "+"
    return _SYMBOLS.get(action.action, "~")


def _plan_text(plan, state) -> str:
    lines = []
    if plan.actions:
        width = max(len(a.name) for a in plan.actions)
        for action in plan.actions:
            symbol = _symbol(action, state.actual)
            lines.append(f"  {symbol} {action.name:<{width}}  {action.action:<12}  {action.reason}")
        counts = {"+": 0, "~": 0, "-": 0}
        for action in plan.actions:
            counts[_symbol(action, state.actual)] += 1
        lines.append("")
        lines.append(
            f"Plan: {counts['+']} to add, {counts['~']} to change, {counts['-']} to remove."
        )
    else:
        lines.append(f"No changes. {state.desired.path} and the grant files agree.")
    lines.extend(f"Note: {note}" for note in plan.notes)
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace, out: Output) -> int:
    state, unreadable = _load(args, out)
    plan = operations.make_plan(state, operations.utcnow(), prune=args.prune)
    out.result(_plan_text(plan, state), _plan_document(plan))
    problems = [error for error in (_unresolved(state), unreadable) if error is not None]
    for error in problems:
        out.error(str(error))
    if problems:
        return EXIT_ERROR
    return EXIT_PENDING if args.exit_code and plan.actions else EXIT_OK


def cmd_apply(args: argparse.Namespace, out: Output) -> int:
    if args.watch:
        return cmd_watch(args, out)
    state, unreadable = _load(args, out)
    now = operations.utcnow()
    plan = operations.make_plan(state, now, prune=args.prune)
    for note in plan.notes:
        out.progress(f"note: {note}")
    ask = _ask_secret if sys.stdin.isatty() and not out.json else None
    outcomes = []
    browser = _browser(args)
    links = any(action.action in ("link", "relink") for action in plan.actions)
    link = not args.no_link and not (links and _nobody_to_link(args, out))
    run = operations.run_apply(
        state,
        plan,
        now,
        link=link,
        ask_secret=ask,
        browser=browser,
        device=args.device,
        report_unresolved=True,
        allow_foreign_recipients=args.allow_foreign_recipients,
        allow_rollback=args.force,
    )
    for outcome in run:
        outcomes.append(outcome)
        action = outcome.action
        out.progress(f"{action.name}: {action.action}: {outcome.result}: {outcome.message}")
    tally = {"done": 0, "failed": 0, "pending": 0}
    for outcome in outcomes:
        tally[outcome.result] += 1
    document = {
        "outcomes": [
            {
                "name": o.action.name,
                "action": o.action.action,
                "reason": o.action.reason,
                "result": o.result,
                "message": o.message,
            }
            for o in outcomes
        ],
        "summary": tally,
    }
    if outcomes:
        text = f"Apply: {tally['done']} done, {tally['failed']} failed, {tally['pending']} pending."
    else:
        text = "No changes. Nothing to do."
    out.result(text, document)
    if unreadable:
        out.error(str(unreadable))
    if tally["failed"] or unreadable:
        return EXIT_ERROR
    return EXIT_PENDING if tally["pending"] else EXIT_OK


def cmd_watch(args: argparse.Namespace, out: Output) -> int:
    """`reconcile --watch`: one line per event on stderr; with -o json, JSON lines on stdout."""
    from . import watch  # the watch loop (and watchfiles) load only for `--watch`

    def report(event: watch.Event) -> None:
        if out.json:
            sys.stdout.write(_json_line(event.to_json()))
            sys.stdout.flush()
        if event.level == "error":
            out.error(event.line)
        elif event.level == "info" or out.verbose:
            out.progress(event.line)

    browser = replace(_browser(args), read_pasted=None)  # stdin is not read while watching
    watcher = watch.Watcher(
        args.file,
        report,
        prune=args.prune,
        link=not args.no_link and not _nobody_to_link(args, out),
        browser=browser,
        device=args.device,
    )
    return watcher.run()


def _nobody_to_link(args: argparse.Namespace, out: Output) -> bool:
    """No terminal on stdin and no browser (as Python's ``webbrowser`` finds them), and no
    `--device` or `--no-browser` saying that someone reads the output: a link flow here would
    wait for nobody (cron, CI), so link flows are left pending as with `--no-link`."""
    if args.device or args.no_browser or sys.stdin.isatty():
        return False
    import webbrowser  # its import (subprocess, shlex: ~8 ms) only when a browser may open

    try:
        webbrowser.get()
    except webbrowser.Error:
        out.progress(
            "note: no terminal and no browser here, so link flows are left pending; run "
            "`reconcile link NAME` where someone can sign in, or pass --device to print a code"
        )
        return True
    return False


def _json_line(document: object) -> str:
    return json.dumps(document) + "\n"


def _browser(args: argparse.Namespace):
    """How a link flow reaches the person at this terminal."""

    def show(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def read_pasted() -> str | None:
        return sys.stdin.readline() or None

    return Browser(
        open=None if args.no_browser else operations.open_browser,
        show=show,
        timeout=args.link_timeout,
        read_pasted=read_pasted if sys.stdin.isatty() else None,
    )


def _ask_secret(name: str):
    return Secret(getpass.getpass(f"Value for secret {name!r} (input hidden): "))


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    rows = operations.status(args.file, operations.utcnow())
    out.result(_status_table(rows), {"grants": [row.to_json() for row in rows]})
    return EXIT_ERROR if any(row.status == "invalid" for row in rows) else EXIT_OK


def _status_table(rows) -> str:
    if not rows:
        return "No grants declared or stored."
    table = [("NAME", "KIND", "STATUS", "CUSTODY", "EXPIRES", "LAST REFRESH", "SCOPES")]
    notes = []
    for row in rows:
        document = row.to_json()
        scopes = _scopes_cell(row)
        table.append(
            (
                row.name + ("" if row.declared else " (undeclared)"),
                row.kind,
                row.status,
                row.custody,
                document["expires_at"] or "-",
                document["last_refresh"] or "-",
                scopes,
            )
        )
        if row.reason:
            notes.append(f"  {row.name}: {row.reason}")
        if row.missing_scopes:
            notes.append(
                f"  {row.name}: declared but not granted: {' '.join(row.missing_scopes)}; "
                "`reconcile apply` links it again"
            )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in table
    ]
    return "\n".join([*lines, *notes])


def _scopes_cell(row) -> str:
    """The granted scopes, and the declared ones where they differ (an under-scoped grant)."""
    declared = " ".join(row.scopes) or "-"
    if row.kind != "oauth2" or row.status == "missing":
        return declared
    granted = " ".join(row.granted_scopes) or "-"
    if set(row.scopes) == set(row.granted_scopes) or not row.declared:
        return granted
    return f"{granted} (declared: {declared})"


def cmd_validate(args: argparse.Namespace, out: Output) -> int:
    desired = operations.validate(args.file)
    exposed = _warn_exposed(desired, out)
    count = len(desired.providers) + len(desired.secrets)
    out.result(
        f"{args.file} is valid: {len(desired.providers)} provider(s), "
        f"{len(desired.secrets)} secret(s); every reference resolves.",
        {"valid": True, "file": str(args.file), "grants": count, "warnings": exposed},
    )
    return EXIT_OK


def cmd_init(args: argparse.Namespace, out: Output) -> int:
    done = operations.init_project(args.file)
    for path, what in done.files.items():
        out.progress(f"{what}: {path}")
    document = {"files": {str(path): what for path, what in done.files.items()}}
    if done.todo:
        out.result("", {**document, "todo": done.todo})
        for item in done.todo:
            out.error(item)
        return EXIT_ERROR
    out.result(f"Ready. Edit {args.file}, then run `reconcile plan`.", document)
    return EXIT_OK


def cmd_presets(args: argparse.Namespace, out: Output) -> int:

    presets = summaries()
    out.result(_presets_text(presets), {"presets": presets, "mcp": MCP_EXAMPLE})
    return EXIT_OK


def _presets_text(presets: list[dict]) -> str:
    """A table of name, title and flows; each preset's notes and URL variables under it."""
    name_width = max(len("NAME"), *(len(p["name"]) for p in presets))
    title_width = max(len("TITLE"), *(len(p["title"]) for p in presets))
    indent = " " * (name_width + 2)
    lines = [f"{'NAME':<{name_width}}  {'TITLE':<{title_width}}  FLOWS"]
    for preset in presets:
        flows = ", ".join(preset["flows"])
        lines.append(f"{preset['name']:<{name_width}}  {preset['title']:<{title_width}}  {flows}")
        details = [preset["notes"]] if preset["notes"] else []
        if preset["vars"]:
            details.append(
                "vars: " + ", ".join(f"{k} (default {v})" for k, v in preset["vars"].items())
            )
        for text in details:
            lines += textwrap.wrap(text, 96, initial_indent=indent, subsequent_indent=indent)
    lines += ["", *textwrap.wrap(MCP_EXAMPLE["note"], 98)]
    lines += ["  " + line for line in MCP_EXAMPLE["yaml"].splitlines()]
    return "\n".join(lines)


def cmd_token(args: argparse.Namespace, out: Output) -> int:
    token = operations.read_token(args.file, args.name, allow_rollback=args.force)
    if out.json:
        out.result("", {"name": args.name, "token": token.reveal()})
    else:
        sys.stdout.write(token.reveal() + "\n")
    return EXIT_OK


def cmd_link(args: argparse.Namespace, out: Output) -> int:
    grant = operations.link(args.file, args.name, _browser(args), device=args.device)
    expiry = grant.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if grant.expires_at else None
    out.result(
        f"{args.name}: linked; granted {' '.join(grant.granted_scopes) or '(no scopes)'}"
        + (f"; access token expires {expiry}" if expiry else ""),
        {
            "name": args.name,
            "granted_scopes": list(grant.granted_scopes),
            "expires_at": expiry,
        },
    )
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace, out: Output) -> int:
    if sys.stdin.isatty() and not args.yes:
        print(
            f"Revoke {args.name!r} at the provider and delete its grant file? "
            "This cannot be undone. [y/N] ",
            end="",
            file=sys.stderr,
            flush=True,
        )
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            out.error(f"{args.name}: not revoked; nothing was changed (`--yes` skips the question)")
            return EXIT_ERROR
    message = operations.revoke(args.file, args.name, force=args.force)
    out.result(f"{args.name}: {message}", {"name": args.name, "result": message})
    return EXIT_OK


def cmd_exec(args: argparse.Namespace, out: Output) -> int:

    try:
        command = execenv.command_of(args.argv)
        pairs = execenv.parse_pairs(args.env)
    except execenv.ExecError as error:
        out.error(str(error))
        return EXIT_ERROR
    execenv.run(command, execenv.resolve(args.file, pairs))  # does not return


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    from .server.run import prepare  # starlette and uvicorn load only for `serve`

    server = prepare(
        args.file,
        host=args.host,
        port=args.port,
        allow_remote=args.allow_remote,
        allow_origins=args.allow_origin,
    )
    for warning in server.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    created = " (created)" if server.secret_created else ""
    out.progress(f"local secret: {server.secret_source}{created}")
    if server.internal_mounted:
        out.progress("control plane: /internal/* mounted")
    out.progress(f"reconcile serve: listening on {server.url}")
    server.run()
    return EXIT_OK


_COMMANDS = {
    "apply": cmd_apply,
    "plan": cmd_plan,
    "status": cmd_status,
    "validate": cmd_validate,
    "init": cmd_init,
    "presets": cmd_presets,
    "token": cmd_token,
    "link": cmd_link,
    "revoke": cmd_revoke,
    "exec": cmd_exec,
    "serve": cmd_serve,
}

if __name__ == "__main__":
    sys.exit(main())
