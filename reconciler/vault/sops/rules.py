"""``.sops.yaml`` creation rules: which recipients a file is encrypted to, found the way sops
finds them (the nearest ``.sops.yaml`` upward, the first rule whose ``path_regex`` matches)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import MalformedError
from .keys import split_recipients, validate_recipients

SOPS_CONFIG_NAME = ".sops.yaml"
#: sops searches this many folders upward for ``.sops.yaml``.
MAX_CONFIG_DEPTH = 100


@dataclass(frozen=True)
class CreationRule:
    """The ``.sops.yaml`` creation rule that applies to a file."""

    config_path: Path
    index: int
    path_regex: str
    recipients: tuple[str, ...]
    encrypted_regex: str = ""


def find_sops_config(start: Path) -> Path | None:
    """The nearest ``.sops.yaml`` in ``start`` or a parent folder (sops searches up to 100
    levels; ``.sops.yml`` is not used, as in sops)."""
    folder = Path(os.path.abspath(start))
    for _ in range(MAX_CONFIG_DEPTH):
        candidate = folder / SOPS_CONFIG_NAME
        if candidate.is_file():
            return candidate
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def _config_error(config: Path, what: str) -> MalformedError:
    return MalformedError(
        f"{config}: {what}. Fix .sops.yaml (see https://getsops.io/docs/ creation_rules), or "
        "list the recipients under `store.recipients` in providers.yaml.",
        config,
    )


def creation_rule_for(file_path: Path, config: Path | None = None) -> CreationRule | None:
    """The first creation rule of ``config`` (default: the nearest ``.sops.yaml`` above the
    file's folder) whose ``path_regex`` matches ``file_path``, as sops matches it: against
    the path relative to the config's folder when the file is below it, else the absolute
    path; ``re.search`` semantics; a rule without ``path_regex`` matches everything.
    None when there is no config or no rule matches."""
    file_abs = os.path.abspath(file_path)
    if config is None:
        config = find_sops_config(Path(file_abs).parent)
        if config is None:
            return None
    try:
        loaded = yaml.load(
            Path(config).read_bytes(), Loader=getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
        )
    except yaml.YAMLError:
        raise _config_error(config, "is not valid YAML") from None
    if not isinstance(loaded, dict):
        return None
    rules = loaded.get("creation_rules")
    if rules is None:
        return None
    if not isinstance(rules, list):
        raise _config_error(config, "creation_rules is not a list")
    config_dir = os.path.abspath(os.path.dirname(config))
    relative = file_abs
    if relative.startswith(config_dir + os.sep):
        relative = relative[len(config_dir) + 1 :]
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise _config_error(config, f"creation_rules[{index}] is not a mapping")
        pattern = rule.get("path_regex") or ""
        if pattern:
            if not isinstance(pattern, str):
                raise _config_error(config, f"creation_rules[{index}].path_regex is not a string")
            try:
                matched = re.search(pattern.replace(r"\z", r"\Z"), relative)
            except re.error:
                raise _config_error(
                    config, f"creation_rules[{index}].path_regex is not a valid regex"
                ) from None
            if not matched:
                continue
        return _rule(Path(config), index, pattern, rule)
    return None


_RULE_OTHER_KEYS = ("pgp", "kms", "gcp_kms", "azure_keyvault", "hc_vault_transit_uri")
_GROUP_OTHER_KEYS = ("pgp", "kms", "gcp_kms", "azure_keyvault", "hc_vault")


def _rule(config: Path, index: int, pattern: str, rule: dict[str, Any]) -> CreationRule:
    where = f"creation_rules[{index}]"
    try:
        groups = rule.get("key_groups")
        if groups:
            if not isinstance(groups, list):
                raise ValueError("key_groups is not a list")
            if len(groups) > 1:
                raise ValueError(
                    "key_groups has several groups (Shamir secret sharing), which reconcile "
                    "reads but cannot write grant files to"
                )
            recipients, other = _group_keys(groups[0])
        else:
            recipients = split_recipients(rule.get("age"))
            other = tuple(k for k in _RULE_OTHER_KEYS if rule.get(k))
        if other:
            # Written to the age keys alone, a grant file would not open with these keys.
            raise ValueError(
                f"it lists {' and '.join(other)} keys, which grant files cannot be encrypted "
                "to; give them a rule with age keys only"
            )
        if rule.get("mac_only_encrypted"):
            raise ValueError(
                "mac_only_encrypted: true would leave the plaintext fields of grant files "
                "(scopes, expiry, status) outside the MAC; remove it from their rule"
            )
        validate_recipients(recipients)
    except ValueError as error:
        raise _config_error(config, f"{where}: {error}") from None
    regex = rule.get("encrypted_regex")
    return CreationRule(
        config_path=config,
        index=index,
        path_regex=pattern,
        recipients=recipients,
        encrypted_regex=regex if isinstance(regex, str) else "",
    )


def _group_keys(group: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(group, dict):
        raise ValueError("a key group is not a mapping")
    recipients: list[str] = []
    other: list[str] = []
    for sub in group.get("merge") or ():
        sub_recipients, sub_other = _group_keys(sub)
        recipients += sub_recipients
        other += sub_other
    age = group.get("age") or ()
    if isinstance(age, str):
        raise ValueError("a key group's age must be a list")
    recipients += split_recipients(age)
    other += [k for k in _GROUP_OTHER_KEYS if group.get(k)]
    return tuple(dict.fromkeys(recipients)), tuple(dict.fromkeys(other))


def rule_recipients(file_path: Path, config: Path | None = None) -> tuple[str, ...] | None:
    """The age recipients of the creation rule for ``file_path``; None if no rule applies."""
    rule = creation_rule_for(file_path, config)
    return None if rule is None else rule.recipients
