"""Refreshes over shared custody (etcd, SPEC §7), a batch of grants at a time.

Machines applying the same plan at once would otherwise each read every grant and queue on
each other's locks. Here each batch's locks are claimed in one transaction
(``custody.etcd_batch.claim``) that never waits: a grant locked by another process is left to
it, and one whose state changed since the plan read it (refreshed elsewhere) is reported as
such when it is no longer due. Each machine takes its own share of the plan first (``share``:
the grants for which it is the preferred refresher among their recipients), then the rest;
once other machines are seen at work, a batch of their share is read before it is claimed,
since it is most likely refreshed already. Each grant claimed is refreshed exactly as
``lifecycle.refresh`` does under ``single_flight`` (intent, deadline check, escrow,
compare-and-swap commit). What another process held is looked at again once the batch is
done, and whatever is still due then goes the ordinary way (waiting for its lock), so every
grant of the plan gets an answer.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from ..custody.etcd import EtcdCustody
from ..custody.etcd_batch import BATCH, Batched, claim, drop_intents, release
from ..errors import ReconcilerError, message_of
from ..plan import is_due
from ..vault.cache import own_recipients
from . import lifecycle
from .context import Context, Outcome

if TYPE_CHECKING:
    from ..custody import Held
    from ..model import Action, Grant

#: ``(action, context, grant)`` -> the outcome's message, as ``runner._refresh`` words it.
Describe = Callable[["Action", "Context", "Grant"], str]


def refresh_batch(
    actions: Sequence[Action],
    context: Context,
    *,
    carry_out: Callable[[Action, Context], Outcome],
    describe: Describe,
) -> list[Outcome]:
    """One outcome per action (at most ``BATCH``), every one a refresh of an OAuth grant."""
    global _others_at_work
    custody = EtcdCustody(context.desired, context.identities, context.environ)
    outcomes: list[Outcome] = []
    later: list[Action] = []
    for attempt in range(2):
        pending = list(actions) if attempt == 0 else later
        if not pending:
            break
        later = []
        known = context.known or {}
        presenting = {
            a.name
            for a in pending
            if a.name in known and _presents_refresh_token(known[a.name], context)
        }
        look_first = attempt > 0 or (_others_at_work and not any(share(pending, context)[0]))
        try:
            claimed = claim(
                custody, [a.name for a in pending], known, presenting, look_first=look_first
            )
        except (ReconcilerError, OSError):
            # The ordinary way says, grant by grant, what can be done (without the engine
            # too) and what cannot.
            later = pending
            break
        if claimed.locked or claimed.changed:
            _others_at_work = True
        by_name = {a.name: a for a in pending}
        sent = [held for held in claimed.held.values() if _presents_refresh_token(held, context)]
        recorded = {h.name: claimed.intended[h.name] for h in sent if h.name in claimed.intended}
        drop_intents(custody, set(claimed.intended) - set(recorded))
        outcomes += _refresh_together(sent, by_name, custody, context, describe, recorded)
        for name, held in claimed.held.items():
            if name not in {h.name for h in sent}:
                outcomes.append(_refresh_claimed(by_name[name], held, custody, context, describe))
        for name, held in claimed.changed.items():
            action = by_name[name]
            grant = held.grant
            if _refreshed_elsewhere(held, context):
                assert grant is not None
                outcomes.append(Outcome(action, "done", _elsewhere(grant)))
            else:
                later.append(action)
        later += [by_name[name] for name in claimed.locked]
    outcomes += [carry_out(action, context) for action in later]
    return outcomes


def share(actions: Sequence[Action], context: Context) -> tuple[list[Action], list[Action]]:
    """(this machine's share of ``actions``, the others'): a grant's preferred refresher is
    one of its recipients, picked by a hash of its name, so that machines applying the same
    plan at once (each with its own identity) start on different grants."""
    own = {str(r) for r in own_recipients(context.identities)}
    mine: list[Action] = []
    theirs: list[Action] = []
    for action in actions:
        recipients = sorted(context.desired.recipients.get(action.name) or ())
        preferred = (
            recipients[zlib.crc32(action.name.encode()) % len(recipients)] if recipients else None
        )
        (mine if preferred in own else theirs).append(action)
    return mine, theirs


def share_first(actions: Sequence[Action], context: Context) -> list[Action]:
    """``actions`` in the order this machine takes them: its share, then the others', each
    shuffled."""
    mine, theirs = share(actions, context)
    random.shuffle(mine)
    random.shuffle(theirs)
    return mine + theirs


#: Whether this process has met another at work on the plan (a grant locked or refreshed
#: under it): from then on, batches of the others' share are read before they are claimed.
_others_at_work = False


def _elsewhere(grant: Grant) -> str:
    expiry = grant.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if grant.expires_at else "never"
    return f"refreshed by another machine or process, expires {expiry}"


def _refreshed_elsewhere(held: Held, context: Context) -> bool:
    grant = held.grant
    desired = context.desired
    return (
        grant is not None
        and grant.status == "ok"
        and grant.access_token is not None
        and held.in_flight is None
        and not is_due(grant, desired.refresh_before, desired.keepalive, context.now)
    )


def _presents_refresh_token(held: Held, context: Context) -> bool:
    """What ``lifecycle.refresh_locked`` will do is send the refresh token (nothing else to
    look at first: no MCP server to ask, no back-off, no request in flight)."""
    grant = held.grant
    provider = context.desired.providers.get(held.name)
    return (
        grant is not None
        and provider is not None
        and not provider.mcp
        and provider.flow != "client_credentials"
        and grant.status == "ok"
        and grant.refresh_token is not None
        and held.in_flight is None
        and held.superseded is None
        and not held.backing_off(context.now)
        and is_due(grant, context.desired.refresh_before, context.desired.keepalive, context.now)
    )


def _refresh_together(
    helds: Sequence[Held],
    by_name: Mapping[str, Action],
    custody: EtcdCustody,
    context: Context,
    describe: Describe,
    recorded: Mapping[str, bytes],
) -> list[Outcome]:
    """Refreshes that each present a refresh token: their intents are recorded (``recorded``:
    by the claim; the others in one transaction), then each request is sent (its lock checked
    just before) and its answer escrowed, then one transaction commits them all, each by its
    own compare-and-swap."""
    if not helds:
        return []
    batch = Batched(custody)
    batch.intended(recorded)
    try:
        batch.record_intents([h for h in helds if h.name not in recorded])
    except (ReconcilerError, OSError):  # each then records its own (and says why it cannot)
        return [_refresh_claimed(by_name[h.name], h, custody, context, describe) for h in helds]
    try:
        done = [
            _refresh_claimed(by_name[h.name], h, batch, context, describe, False) for h in helds
        ]
        refused = batch.flush()
    finally:
        for held in helds:
            release(custody, held.name)
    return [
        Outcome(o.action, "failed", str(refused[o.action.name])) if o.action.name in refused else o
        for o in done
    ]


def _refresh_claimed(
    action: Action,
    held: Held,
    custody: EtcdCustody,
    context: Context,
    describe: Describe,
    releasing: bool = True,
) -> Outcome:
    assert context.identities is not None
    try:
        grant = lifecycle.refresh_locked(
            context.desired,
            custody,
            held,
            context.now,
            environ=context.environ,
            allow_rollback=context.allow_rollback,
            rediscover=True,
        )
    except ReconcilerError as error:
        return Outcome(action, "failed", str(error))
    except Exception as error:  # an OSError, or a bug: it fails this grant, not the others
        return Outcome(action, "failed", f"{action.name}: {message_of(error)}")
    finally:
        if releasing:
            release(custody, action.name)
    return Outcome(action, "done", describe(action, context, grant))


def chunks(actions: Sequence[Action]) -> list[list[Action]]:
    return [list(actions[i : i + BATCH]) for i in range(0, len(actions), BATCH)]


__all__ = ["chunks", "refresh_batch", "share", "share_first"]
