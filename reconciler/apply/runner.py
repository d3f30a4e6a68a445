"""Carry out a plan. A failure on one grant does not stop the others.

Refreshes run a few at a time on worker threads: against a real provider each spends most of
its time waiting (network round trips, fsync of a rotated grant), and each holds its own
grant's lock (single-flight across threads and processes, see ``lifecycle.refresh``). Many
refreshes at once also use the other cores, in forked worker processes (``workers``). Every
other action runs on the caller's thread, in plan order: a link needs a person, a prompt the
terminal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from queue import SimpleQueue
from typing import TYPE_CHECKING, cast

from ..custody import open_custody
from ..errors import ReconcilerError, message_of
from ..model import Action, Browser, Desired, Grant, Plan
from ..vault.sops.keys import identity_recipients, normalize_identities
from . import lifecycle, workers
from .context import Context, Outcome, Result
from .workers import Forked

if TYPE_CHECKING:
    from ..custody import Custody


#: Refreshes carried out at once. What a refresh does between its waits holds the GIL, so more
#: workers only add switching; where there is hardly any wait (a loopback token endpoint, no
#: rotation) the threads cost a few per cent over one-by-one.
REFRESH_WORKERS = 8


class ApplyError(ReconcilerError):
    """An action could not be carried out; the message is for the user (no secrets in it)."""


class Pending(Exception):
    """An action that needs the user (a link flow) and linking is switched off."""


def apply(plan: Plan, context: Context) -> Generator[Outcome, None, None]:
    """Yield one outcome per action, as soon as it is known (so faces can show progress).

    Refresh outcomes come in the order the refreshes finish (those that finish while another
    action runs, a link waiting for the browser say, right after it); the other actions' in
    plan order. A refresh of a grant that has another action in the plan (a rekey) starts once
    that action is done. Closing the iterator, or an exception in the caller
    (KeyboardInterrupt), starts no further refresh; the few already under way finish, so that a
    rotated refresh token still reaches its file (the process exits once they have).
    """
    refreshes = [action for action in plan.actions if action.action == "refresh"]
    if len(refreshes) < 2:
        for action in plan.actions:
            yield _carry_out(action, context)
        return
    yield from _apply_concurrently(plan, refreshes, context)


def unresolved(desired: Desired) -> list[Outcome]:
    """A failed outcome for each declared secret whose reference does not resolve (the plan
    leaves them out), so that a run reports them beside what it did."""
    return [
        Outcome(
            Action(name, "write-secret", "its reference does not resolve"),
            "failed",
            str(desired.unresolved[name]),
        )
        for name in sorted(desired.unresolved)
    ]


def _apply_concurrently(plan: Plan, refreshes: list[Action], context: Context) -> Iterator[Outcome]:
    others = [action for action in plan.actions if action.action != "refresh"]
    last_other = {action.name: index for index, action in enumerate(others)}
    after: dict[int, list[Action]] = {}  # index in ``others`` -> refreshes that wait for it
    ready: list[Action] = []
    for action in refreshes:
        if action.name in last_other:
            after.setdefault(last_other[action.name], []).append(action)
        else:
            ready.append(action)
    _import_refresh_stack()
    if context.desired.coordination is not None:
        # Other machines apply the same plan at the same time: each starting on its own share
        # of it, they mostly find a grant already refreshed instead of queueing on its lock.
        from . import batched  # the etcd backend loads only when `coordination:` is declared

        ready = batched.share_first(ready, context)

    if _batched(ready, after, context):
        yield from _apply_batched(ready, others, context)
        return
    if not after and workers.can_fork(len(ready)):
        yield from _apply_forked(ready, others, context)
        return
    # Finished refreshes, in the order they finish (``concurrent.futures.wait`` would cost
    # O(pending) per call, so O(n²) over a plan of n refreshes).
    finished: SimpleQueue[Future[Outcome]] = SimpleQueue()
    pool = ThreadPoolExecutor(
        max_workers=min(REFRESH_WORKERS, len(refreshes)), thread_name_prefix="reconcile-refresh"
    )
    submitted = 0

    def submit(actions: list[Action]) -> None:
        nonlocal submitted
        for action in actions:
            pool.submit(_carry_out, action, context).add_done_callback(finished.put)
            submitted += 1

    try:
        submit(ready)
        yielded = 0
        for index, action in enumerate(others):
            yield _carry_out(action, context)
            submit(after.pop(index, []))
            while not finished.empty():
                yielded += 1
                yield finished.get().result()
        while yielded < submitted:
            yielded += 1
            yield finished.get().result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _apply_forked(
    refreshes: list[Action], others: list[Action], context: Context
) -> Iterator[Outcome]:
    """``_apply_concurrently`` with the refreshes in forked worker processes, which start
    before any other action does (a link starts threads, and a fork needs none)."""

    def carry_out(number: int) -> tuple[str, str]:  # in a worker process
        outcome = _carry_out(refreshes[number], context)
        return outcome.result, outcome.message

    batch = Forked(len(refreshes), carry_out)
    try:
        for action in others:
            yield _carry_out(action, context)
            for number, result, message in batch.reports(block=False):
                yield Outcome(refreshes[number], cast(Result, result), message)
        for number, result, message in batch.reports():
            yield Outcome(refreshes[number], cast(Result, result), message)
    finally:
        batch.stop()


def _batched(ready: list[Action], after: dict[int, list[Action]], context: Context) -> bool:
    """Shared custody: refreshes claimed a batch at a time (``batched``)."""
    return (
        context.desired.coordination is not None
        and context.identities is not None
        and not after
        and len(ready) > 1
        and all(context.desired.providers.get(a.name) is not None for a in ready)
    )


def _apply_batched(
    refreshes: list[Action], others: list[Action], context: Context
) -> Iterator[Outcome]:
    """The refreshes in batches (``batched.refresh_batch``): on forked workers when there
    are many, else on threads; one job per batch."""
    from . import batched  # the etcd backend loads only when `coordination:` is declared

    groups = batched.chunks(refreshes)
    number_of = {id(action): index for index, action in enumerate(refreshes)}

    def carry_out(number: int) -> list[tuple[int, str, str]]:
        done = batched.refresh_batch(
            groups[number],
            context,
            carry_out=_carry_out,
            describe=_describe_refresh,
        )
        return [(number_of[id(o.action)], o.result, o.message) for o in done]

    if workers.can_fork(len(refreshes)):

        def in_worker(number: int) -> tuple[str, str]:
            return "batch", json.dumps(carry_out(number))

        forked = Forked(len(groups), in_worker)
        try:
            for action in others:
                yield _carry_out(action, context)
                for _, _, message in forked.reports(block=False):
                    for index, result, text in json.loads(message):
                        yield Outcome(refreshes[index], cast(Result, result), text)
            for _, _, message in forked.reports():
                for index, result, text in json.loads(message):
                    yield Outcome(refreshes[index], cast(Result, result), text)
        finally:
            forked.stop()
        return
    pool = ThreadPoolExecutor(
        max_workers=min(REFRESH_WORKERS, len(groups)), thread_name_prefix="reconcile-refresh"
    )
    try:
        futures = [pool.submit(carry_out, number) for number in range(len(groups))]
        for action in others:
            yield _carry_out(action, context)
        for future in futures:
            for index, result, text in future.result():
                yield Outcome(refreshes[index], cast(Result, result), text)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _import_refresh_stack() -> None:
    """Import, once and on this thread, what a refresh imports lazily (the grant-file custody
    with the SOPS stack, Authlib, httpx2): worker threads that import the same packages at the
    same moment only queue on the import locks. The TLS context is built here too, so that
    forked workers share it instead of each loading the trust store again."""
    from ..custody import files  # noqa: F401
    from ..oauth.transport import tls_context

    try:
        import authlib.oauth2.auth  # the refresh stack, once, before the threads
        import authlib.oauth2.rfc6749.parameters  # noqa: F401

        tls_context()
    except ImportError:  # each refresh then reports it
        pass


def _carry_out(action: Action, context: Context) -> Outcome:
    """One action's outcome; the errors a user can act on become a failed outcome."""
    handler = _HANDLERS[action.action]
    try:
        message = handler(action, context)
    except Pending as pending:
        return Outcome(action, "pending", str(pending))
    except ReconcilerError as error:
        return Outcome(action, "failed", str(error))
    except Exception as error:  # an OSError, or a bug: it fails this grant, not the others
        return Outcome(action, "failed", f"{action.name}: {message_of(error)}")
    return Outcome(action, "done", message)


def _recipients(context: Context, name: str) -> tuple[str, ...]:
    recipients = context.desired.recipients.get(name, ())
    if not recipients:
        raise ApplyError(
            f"{name}: no recipients to encrypt to; add `store.recipients` to "
            f"{context.desired.path} or a matching creation rule to .sops.yaml"
        )
    return recipients


def _write_secret(action: Action, context: Context) -> str:
    spec = context.desired.secrets[action.name]
    value = spec.value
    if value is None:
        if context.ask_secret is None:
            raise ApplyError(
                f"secret {action.name!r} is declared as `prompt` and has no value yet, but "
                "there is no terminal to ask on; run `reconcile apply` interactively or "
                f"write it with `PUT /v1/secrets/{action.name}` (reconcile serve)"
            )
        value = context.ask_secret(action.name)
        if not value:
            raise ApplyError(f"secret {action.name!r}: an empty value was given; nothing written")
    grant = Grant(name=action.name, kind="secret", value=value, obtained_at=context.now)
    recipients = _recipients(context, action.name)
    _keeps_this_machine(action, context, recipients)
    custody = _custody(context)
    with custody.single_flight(action.name, replacing=True) as held:
        custody.commit(held, grant, durable=True, recipients=recipients)
    return "written"


def _rekey(action: Action, context: Context) -> str:
    if context.identities is None:
        raise ApplyError(
            _needs_identity(action.name, "changing recipients") + ", or run `sops updatekeys`"
        )
    recipients = _recipients(context, action.name)
    _keeps_this_machine(action, context, recipients)
    custody = _custody(context)
    # Single-flight, as a refresh writes: one in another process cannot rotate the refresh
    # token between this read and this write.
    with custody.single_flight(action.name) as held:
        if held.grant is None:
            raise ApplyError(f"{action.name}: the grant is gone; run `reconcile apply` again")
        custody.commit(held, held.grant, durable=True, recipients=recipients)
    return "re-encrypted to " + ", ".join(recipients)


def _keeps_this_machine(action: Action, context: Context, recipients: tuple[str, ...]) -> None:
    """Refuse to encrypt to recipients that include none of this machine's age identities: a
    pulled commit that changed them would otherwise lock the user out of their own grants (and
    hand whatever the file holds to someone else). Machines with no identity, or only SSH ones
    (whose recipients are not known here), are not checked."""

    if context.allow_foreign_recipients or context.identities is None:
        return
    ours = identity_recipients(normalize_identities(context.identities))
    if not ours or not ours.isdisjoint(recipients):
        return
    change = f" ({action.reason})" if action.action == "rekey" else ""
    raise ApplyError(
        f"{action.name}: refusing to encrypt to {', '.join(recipients)}{change}: none of them "
        "is an age identity of this machine, so it could no longer read the file. The "
        f"recipients come from `store.recipients` in {context.desired.path} or a .sops.yaml "
        "creation rule; check that change (e.g. `git log -p .sops.yaml`). If it is intended, "
        "run `reconcile apply --allow-foreign-recipients`."
    )


def _custody(context: Context) -> Custody:

    return open_custody(context.desired, context.identities, context.environ)


def _prune(action: Action, context: Context) -> str:
    grant = context.actual.grants[action.name]
    if grant.kind == "oauth2":
        if context.identities is None:
            raise ApplyError(_needs_identity(action.name, "revoking the grant"))
        held = _custody(context).read(action.name)
        if held.grant is None:
            return "already gone"
        return lifecycle.revoke(
            context.desired,
            action.name,
            held.grant,
            environ=context.environ,
            identities=context.identities,
        )
    _custody(context).delete(action.name)
    return "deleted"


def _link(action: Action, context: Context) -> str:

    provider = context.desired.providers[action.name]
    needs_user = provider.flow != "client_credentials"
    if needs_user and not context.link:
        raise Pending(f"{action.name}: needs a link flow (`reconcile link {action.name}`)")
    if needs_user and context.browser is None:
        raise ApplyError(
            f"{action.name}: a link flow needs a person and none can be reached here; "
            f"run `reconcile link {action.name}` in a terminal"
        )
    grant = lifecycle.link(
        context.desired,
        action.name,
        context.now,
        context.browser or Browser(open=None, show=lambda line: None),
        device=context.device,
        previous=context.actual.grants.get(action.name),
        environ=context.environ,
    )
    return "linked, granted: " + (" ".join(grant.granted_scopes) or "(no scopes)")


def _refresh(action: Action, context: Context) -> str:

    if context.identities is None:
        raise ApplyError(_needs_identity(action.name, "refreshing"))
    grant = lifecycle.refresh(
        context.desired,
        action.name,
        context.now,
        context.identities,
        environ=context.environ,
        known=(context.known or {}).get(action.name),
        allow_rollback=context.allow_rollback,
        rediscover=True,
    )
    return _describe_refresh(action, context, grant)


def _describe_refresh(action: Action, context: Context, grant: Grant) -> str:
    before = context.actual.grants.get(action.name)
    expiry = grant.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if grant.expires_at else "never"
    if (
        before is not None
        and grant.access_token == before.access_token
        and grant.obtained_at == before.obtained_at
    ):
        return (
            f"kept the current token (valid until {expiry}): the provider failed "
            "transiently, so the refresh is retried later"
        )
    return f"refreshed, expires {expiry}"


def _needs_identity(name: str, doing: str) -> str:
    return (
        f"{name}: {doing} needs an age identity that can decrypt the grant file; set "
        "SOPS_AGE_KEY_FILE (or SOPS_AGE_KEY) the way sops reads it"
    )


def _attach(action: Action, context: Context) -> str:
    if context.identities is None:
        raise ApplyError(_needs_identity(action.name, "attaching"))
    from ..custody.etcd import EtcdCustody  # loaded only when `coordination:` is declared

    custody = _custody(context)
    if not isinstance(custody, EtcdCustody):
        raise ApplyError(f"{action.name}: `coordination:` is not declared; nothing to attach to")
    held = custody.attach(action.name)
    where = f"etcd {custody.coordination.namespace}"
    return f"attached to {where} (revision {getattr(held.grant, 'revision', None)})"


def _detach(action: Action, context: Context) -> str:
    if context.identities is None:
        raise ApplyError(_needs_identity(action.name, "detaching"))
    from ..custody.etcd import EtcdCustody, recorded_coordination  # only for a detach

    grant = context.actual.grants[action.name]
    engine = recorded_coordination(grant)
    if engine is None:
        raise ApplyError(
            f"{action.name}: its grant file does not say which engine holds its live state; "
            "declare `coordination:` again and run `reconcile apply`"
        )
    custody = EtcdCustody(context.desired, context.identities, context.environ, engine)
    custody.detach(action.name)
    return f"detached from etcd {engine.namespace}: the grant file holds its live state again"


_HANDLERS: dict[str, Callable[[Action, Context], str]] = {
    "attach": _attach,
    "detach": _detach,
    "link": _link,
    "relink": _link,
    "refresh": _refresh,
    "write-secret": _write_secret,
    "rekey": _rekey,
    "prune": _prune,
}
