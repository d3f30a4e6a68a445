"""``load`` (the whole file → :class:`Desired`) and ``locate`` (the fast path for reads)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..model import Desired, Notify, Provider, Secret, SecretSpec
from .coordination import build_coordination
from .document import read_document
from .durations import (
    DEFAULT_KEEPALIVE,
    DEFAULT_REFRESH_BEFORE,
    DEFAULT_REQUEST_DEADLINE,
    default_duration,
)
from .errors import ConfigError, Issue, raise_if_any
from .providers import build_provider
from .references import parse_reference, resolve_reference
from .schema import schema_issues
from .store import DEFAULT_STORE_DIR, resolve_recipients, resolve_store_dir
from .syntax import NAME, URL, URL_HINT
from .wording import shown

if TYPE_CHECKING:
    from ..vault.sops.keys import Identities


def load(
    path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    resolve_values: bool = True,
    identities: Identities | None = None,
) -> Desired:
    """Read, validate and resolve ``providers.yaml``.

    With ``resolve_values``, each ``secrets.<name>.value`` reference is read (``prompt``
    gives ``None``; nobody is asked here). Client secrets and the notify secret stay
    references. Raises :class:`ConfigError` for anything the user must fix.
    """
    path = Path(path)
    environ = os.environ if environ is None else environ
    doc = read_document(path)
    file = doc.file
    if doc.data is None:
        raise ConfigError(Issue("the file is empty", file, 1, 1, "$", "start it with `version: 1`"))
    raise_if_any(schema_issues(doc), file)

    data: dict = doc.data
    issues: list[Issue] = []
    store = data.get("store") or {}
    defaults = data.get("defaults") or {}
    provider_entries: dict = data.get("providers") or {}
    secret_entries: dict = data.get("secrets") or {}
    config_path = Path(os.path.abspath(path))

    for section, entries in (("providers", provider_entries), ("secrets", secret_entries)):
        for name in entries:
            if not NAME.fullmatch(name):
                issues.append(doc.issue((section, name), f"invalid name `{shown(name)}`", key=True))
    for name in secret_entries:
        if name in provider_entries:
            line, _ = doc.position(("providers", name), key=True)
            issues.append(
                doc.issue(
                    ("secrets", name),
                    f"`{name}` is declared both as a provider (line {line}) and as a secret",
                    "each name is one grant file; rename one of them",
                    key=True,
                )
            )

    providers: dict[str, Provider] = {}
    for name, entry in provider_entries.items():
        provider = build_provider(name, entry, doc, issues)
        if provider is not None:
            providers[name] = provider

    secrets: dict[str, SecretSpec] = {}
    unresolved: dict[str, ConfigError] = {}
    for name, entry in secret_entries.items():
        ref = entry["value"]
        owner = f"secret `{name}`"
        value: Secret | None = None
        try:
            kind, _, _ = parse_reference(ref, owner)
        except ConfigError as error:
            issues.append(doc.relocated(("secrets", name, "value"), error))
            continue
        if resolve_values and kind != "prompt":
            try:
                value = resolve_reference(
                    ref,
                    base_dir=config_path.parent,
                    owner=owner,
                    environ=environ,
                    identities=identities,
                )
            except ConfigError as error:  # this grant's problem, not the whole config's
                located = doc.relocated(("secrets", name, "value"), error)
                unresolved[name] = ConfigError(located)
        secrets[name] = SecretSpec(name=name, ref=ref, value=value)

    notify = None
    if "notify" in data:
        secret_ref = data["notify"].get("secret")
        if secret_ref is not None:
            try:
                parse_reference(secret_ref, "notify secret")
            except ConfigError as error:
                issues.append(doc.relocated(("notify", "secret"), error))
        webhook = data["notify"]["webhook"]
        if not URL.fullmatch(webhook):
            issues.append(
                doc.issue(
                    ("notify", "webhook"), f"`{shown(webhook)}` is not an allowed URL", URL_HINT
                )
            )
        notify = Notify(webhook=webhook, secret_ref=secret_ref)

    refresh_before = default_duration(
        doc, defaults, "refresh_before", DEFAULT_REFRESH_BEFORE, issues
    )
    keepalive = default_duration(doc, defaults, "keepalive", DEFAULT_KEEPALIVE, issues)
    deadline = default_duration(
        doc, defaults, "request_deadline", DEFAULT_REQUEST_DEADLINE, issues
    ).total_seconds()
    providers = {name: replace(p, request_deadline=deadline) for name, p in providers.items()}
    coordination = None
    if "coordination" in data:
        coordination = build_coordination(data["coordination"], config_path, doc, issues)
    store_dir = resolve_store_dir(path, store)
    names = sorted({*provider_entries, *secret_entries})
    recipients = resolve_recipients(names, store, store_dir, doc, issues) if not issues else {}
    raise_if_any(issues, file)

    return Desired(
        path=config_path,
        store_dir=store_dir,
        recipients=recipients,
        refresh_before=refresh_before,
        keepalive=keepalive,
        providers=providers,
        secrets=secrets,
        notify=notify,
        unresolved=unresolved,
        coordination=coordination,
    )


def locate(path: Path) -> tuple[Path, list[str]]:
    """The store folder and the declared names, without schema validation or references.

    The fast path for ``reconcile token``: one YAML parse, no jsonschema, no vault.
    """
    path = Path(path)
    doc = read_document(path)
    file, data = doc.file, doc.data
    hint = "run `reconcile validate` for details"
    if not isinstance(data, dict):
        raise ConfigError(Issue("not a providers.yaml mapping", file, 1, 1, "$", hint))
    store = data.get("store") or {}
    if not isinstance(store, dict) or not isinstance(store.get("dir", DEFAULT_STORE_DIR), str):
        raise ConfigError(Issue("invalid `store`", file, None, None, "$.store", hint))
    names: set[str] = set()
    for section in ("providers", "secrets"):
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            raise ConfigError(Issue(f"invalid `{section}`", file, None, None, f"$.{section}", hint))
        names.update(name for name in entries if NAME.fullmatch(name))
    return resolve_store_dir(path, store), sorted(names)


def declares_coordination(path: Path) -> bool:
    """Whether the config declares ``coordination:`` (one YAML parse, no validation): for a
    long-running face deciding whether to watch the engine."""
    data = read_document(Path(path)).data
    return isinstance(data, dict) and isinstance(data.get("coordination"), dict)
