"""What ``runner`` carries out a plan with (``Context``) and what it reports (``Outcome``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from ..model import Action, Actual, Browser, Desired, Secret

if TYPE_CHECKING:
    from ..custody import Held
    from ..vault.sops.keys import Identities

Result = Literal["done", "failed", "pending"]


@dataclass(frozen=True)
class Outcome:
    action: Action
    result: Result
    message: str


@dataclass
class Context:
    desired: Desired
    actual: Actual
    #: age identities, or None when none is available (enough for writes, not for rekey).
    identities: Identities | None
    now: datetime
    #: Asks the user for a `prompt` secret; None when there is no terminal.
    ask_secret: Callable[[str], Secret] | None = None
    #: False for `apply --no-link`: link flows are reported as pending.
    link: bool = True
    #: How link flows reach the user; None when there is no one to reach.
    browser: Browser | None = None
    #: Use the device flow for every link (headless machines).
    device: bool = False
    environ: Mapping[str, str] | None = None
    #: Per grant name, the grant as the scan read it with its custody basis
    #: (``custody.Held``): a refresh then skips re-reading what is provably unchanged. None,
    #: or a missing name: the grant is read again under the lock.
    known: Mapping[str, Held] | None = None
    #: `apply --allow-foreign-recipients`: write even to recipients none of whose identities
    #: this machine holds (see ``_keeps_this_machine``).
    allow_foreign_recipients: bool = False
    #: `apply --force`: refresh even a grant file older than one this machine has seen.
    allow_rollback: bool = False
