"""The one door: every operation a face (CLI, watcher, server, runtime) may call, one
implementation each. Nothing here prints.

One module per concern, each importing the stages it uses at its top: ``basics`` (clock,
identities, the declared config), ``state`` (load, plan, status, validate, init), ``run``
(apply), ``tokens`` and ``issued`` (the value a script gets), ``refreshes`` (those that need
the OAuth stack), ``links`` (link flows, revoke), ``secrets`` (`prompt` secrets), ``engine``
(following the coordination engine from a long-running face). A name is loaded on first use,
so a short command pays only for the stages it runs.

May import: every stage (``config``, ``plan``, ``vault``, ``oauth``, ``custody``, ``apply``).
"""

from __future__ import annotations

import importlib

from .. import errors

TYPE_CHECKING = False  # not typing's: importing typing costs every short command ~3 ms
if TYPE_CHECKING:
    from ..errors import ConflictError, UndeclaredError, UserError
    from .basics import (
        declared_provider,
        find_identities,
        load_desired,
        utcnow,
    )
    from .engine import (
        coordinated,
        follow,
        leads,
    )
    from .issued import (
        Issued,
        issued,
    )
    from .links import (
        DevicePoll,
        LinkRequest,
        begin_browser_link,
        begin_device_link,
        complete_browser_link,
        link,
        open_browser,
        poll_device_link,
        prepare_link,
        revoke,
    )
    from .refreshes import (
        access_token,
        insufficient_scope,
        reissue_rejected,
    )
    from .run import (
        flush_notifications,
        run_apply,
    )
    from .secrets import (
        delete_secret,
        put_secret,
    )
    from .state import (
        State,
        exposed_sources,
        init_project,
        load_state,
        make_plan,
        status,
        unreadable_error,
        unresolved_error,
        validate,
    )
    from .tokens import (
        issue_token,
        read_token,
    )

#: Where each public name lives.
_HOMES = {
    "DevicePoll": "links",
    "Issued": "issued",
    "LinkRequest": "links",
    "State": "state",
    "access_token": "refreshes",
    "begin_browser_link": "links",
    "begin_device_link": "links",
    "complete_browser_link": "links",
    "coordinated": "engine",
    "declared_provider": "basics",
    "delete_secret": "secrets",
    "exposed_sources": "state",
    "find_identities": "basics",
    "flush_notifications": "run",
    "follow": "engine",
    "init_project": "state",
    "insufficient_scope": "refreshes",
    "issue_token": "tokens",
    "issued": "issued",
    "leads": "engine",
    "link": "links",
    "load_desired": "basics",
    "load_state": "state",
    "make_plan": "state",
    "open_browser": "links",
    "poll_device_link": "links",
    "prepare_link": "links",
    "put_secret": "secrets",
    "read_token": "tokens",
    "reissue_rejected": "refreshes",
    "revoke": "links",
    "run_apply": "run",
    "status": "state",
    "unreadable_error": "state",
    "unresolved_error": "state",
    "utcnow": "basics",
    "validate": "state",
}
#: The error types faces catch, re-exported for them.
_ERRORS = ("ConflictError", "UndeclaredError", "UserError")

__all__ = [
    "ConflictError",
    "DevicePoll",
    "Issued",
    "LinkRequest",
    "State",
    "UndeclaredError",
    "UserError",
    "access_token",
    "begin_browser_link",
    "begin_device_link",
    "complete_browser_link",
    "coordinated",
    "declared_provider",
    "delete_secret",
    "exposed_sources",
    "find_identities",
    "flush_notifications",
    "follow",
    "init_project",
    "insufficient_scope",
    "issue_token",
    "issued",
    "leads",
    "link",
    "load_desired",
    "load_state",
    "make_plan",
    "open_browser",
    "poll_device_link",
    "prepare_link",
    "put_secret",
    "read_token",
    "reissue_rejected",
    "revoke",
    "run_apply",
    "status",
    "unreadable_error",
    "unresolved_error",
    "utcnow",
    "validate",
]


def __getattr__(name: str) -> object:
    """Load the module that holds ``name`` on first use (PEP 562)."""
    if name in _ERRORS:
        return getattr(errors, name)
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
