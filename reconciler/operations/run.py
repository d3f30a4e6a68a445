"""Carrying a plan out, for `apply` and `--watch`."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from datetime import datetime

from ..apply import Context, Outcome, apply, notify, unresolved
from ..model import Plan, Secret
from .state import State


def run_apply(
    state: State,
    plan: Plan,
    now: datetime,
    *,
    link: bool = True,
    ask_secret: Callable[[str], Secret] | None = None,
    browser=None,
    device: bool = False,
    environ: Mapping[str, str] | None = None,
    report_unresolved: bool = False,
    allow_foreign_recipients: bool = False,
    allow_rollback: bool = False,
) -> Generator[Outcome, None, None]:
    """Carry ``plan`` out, one outcome at a time. With ``report_unresolved``, a failed outcome
    comes first for each secret whose reference does not resolve (a whole run's report)."""
    context = Context(
        state.desired,
        state.actual,
        state.identities,
        now,
        ask_secret=ask_secret,
        link=link,
        browser=browser,
        device=device,
        environ=environ,
        known=state.known,
        allow_foreign_recipients=allow_foreign_recipients,
        allow_rollback=allow_rollback,
    )
    if not report_unresolved:
        return apply(plan, context)
    return _after(unresolved(state.desired), apply(plan, context))


def _after(
    first: list[Outcome], rest: Generator[Outcome, None, None]
) -> Generator[Outcome, None, None]:
    """``first``, then ``rest``: still a generator, which a face may close early."""
    yield from first
    yield from rest


def flush_notifications() -> None:
    """Wait for the webhook notifications still queued (a long-running face, before it exits)."""
    notify.flush()
