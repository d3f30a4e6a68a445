"""Carry out a plan, one action at a time. A failure on one grant does not stop the others."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from .grants import Browser
from .model import Action, Actual, Desired, Grant, Plan, Secret

Result = Literal["done", "failed", "pending"]


@dataclass(frozen=True)
class Outcome:
    action: Action
    result: Result
    message: str


class ApplyError(Exception):
    """An action could not be carried out; the message is for the user (no secrets in it)."""


class Pending(Exception):
    """An action that needs the user (a link flow) and linking is switched off."""


@dataclass
class Context:
    desired: Desired
    actual: Actual
    #: age identities, or None when none is available (enough for writes, not for rekey).
    identities: list | None
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


def apply(plan: Plan, context: Context) -> Iterator[Outcome]:
    """Yield one outcome per action, as soon as it is known (so faces can show progress)."""
    from .config import ConfigError
    from .grants import GrantError
    from .oauth.errors import OAuthError
    from .vault.store import VaultError

    for action in plan.actions:
        handler = _HANDLERS[action.action]
        try:
            message = handler(action, context)
        except Pending as pending:
            yield Outcome(action, "pending", str(pending))
        except (ApplyError, VaultError, GrantError, OAuthError, ConfigError) as error:
            yield Outcome(action, "failed", str(error))
        except OSError as error:
            yield Outcome(action, "failed", f"{action.name}: {error.strerror or error}")
        else:
            yield Outcome(action, "done", message)


def _grant_path(context: Context, name: str):
    from .vault.store import grant_path

    return grant_path(context.desired.store_dir, name)


def _recipients(context: Context, name: str) -> tuple[str, ...]:
    recipients = context.desired.recipients.get(name, ())
    if not recipients:
        raise ApplyError(
            f"{name}: no recipients to encrypt to; add `store.recipients` to "
            f"{context.desired.path} or a matching creation rule to .sops.yaml"
        )
    return recipients


def _write_secret(action: Action, context: Context) -> str:
    from .vault.store import write_grant

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
    write_grant(_grant_path(context, action.name), grant, _recipients(context, action.name))
    return "written"


def _rekey(action: Action, context: Context) -> str:
    from .vault.store import read_grant, write_grant

    if context.identities is None:
        raise ApplyError(
            _needs_identity(action.name, "changing recipients") + ", or run `sops updatekeys`"
        )
    path = _grant_path(context, action.name)
    grant = read_grant(path, context.identities)
    write_grant(path, grant, _recipients(context, action.name))
    return "re-encrypted to " + ", ".join(_recipients(context, action.name))


def _prune(action: Action, context: Context) -> str:
    from .vault.store import delete_grant, read_grant

    grant = context.actual.grants[action.name]
    if grant.kind == "oauth2":
        from . import grants

        if context.identities is None:
            raise ApplyError(_needs_identity(action.name, "revoking the grant"))
        grant = read_grant(_grant_path(context, action.name), context.identities)
        return grants.revoke(
            context.desired,
            action.name,
            grant,
            environ=context.environ,
            identities=context.identities,
        )
    delete_grant(_grant_path(context, action.name))
    return "deleted"


def _link(action: Action, context: Context) -> str:
    from . import grants

    provider = context.desired.providers[action.name]
    needs_user = provider.flow != "client_credentials"
    if needs_user and not context.link:
        raise Pending(f"{action.name}: needs a link flow (`reconcile link {action.name}`)")
    if needs_user and context.browser is None:
        raise ApplyError(
            f"{action.name}: a link flow needs a person and none can be reached here; "
            f"run `reconcile link {action.name}` in a terminal"
        )
    grant = grants.link(
        context.desired,
        action.name,
        context.now,
        context.browser or grants.Browser(open=None, show=lambda line: None),
        device=context.device,
        previous=context.actual.grants.get(action.name),
        environ=context.environ,
    )
    return "linked, granted: " + (" ".join(grant.granted_scopes) or "(no scopes)")


def _refresh(action: Action, context: Context) -> str:
    from . import grants

    if context.identities is None:
        raise ApplyError(_needs_identity(action.name, "refreshing"))
    before = context.actual.grants.get(action.name)
    grant = grants.refresh(
        context.desired, action.name, context.now, context.identities, environ=context.environ
    )
    expiry = grant.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if grant.expires_at else "never"
    if before is not None and grant.obtained_at == before.obtained_at:
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


_HANDLERS: dict[str, Callable[[Action, Context], str]] = {
    "link": _link,
    "relink": _link,
    "refresh": _refresh,
    "write-secret": _write_secret,
    "rekey": _rekey,
    "prune": _prune,
}
