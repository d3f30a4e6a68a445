"""The ``sops`` metadata block of a file: read it, write it, and the encryption rules it sets
(which leaves are encrypted)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..errors import malformed_error
from .scalars import KEYWORDS
from .syntax import INDENT, emit_literal, emit_scalar, scalar_value

#: The sops version we write into ``sops.version`` (the format we emit is the one of 3.11).
SOPS_VERSION = "3.11.0"
DEFAULT_UNENCRYPTED_SUFFIX = "_unencrypted"


@dataclass(frozen=True)
class AgeKey:
    recipient: str
    enc: str


@dataclass(frozen=True)
class Metadata:
    """The ``sops`` key of a file (the parts we use)."""

    age: tuple[AgeKey, ...]
    lastmodified: str
    mac: str
    version: str = ""
    unencrypted_suffix: str = ""
    encrypted_suffix: str = ""
    unencrypted_regex: str = ""
    encrypted_regex: str = ""
    unencrypted_comment_regex: str = ""
    encrypted_comment_regex: str = ""
    mac_only_encrypted: bool = False
    #: Key types other than age present in the file (pgp, kms, ...), for messages.
    other_keys: tuple[str, ...] = ()
    #: With several key groups (Shamir secret sharing), the age keys of each group, whose
    #: entries hold a share of the data key rather than the key (``age`` is then empty).
    key_groups: tuple[tuple[AgeKey, ...], ...] = ()
    #: How many of ``key_groups`` must open their share to rebuild the data key.
    shamir_threshold: int = 0

    @property
    def recipients(self) -> tuple[str, ...]:
        keys = [k for group in self.key_groups for k in group] if self.key_groups else self.age
        return tuple(dict.fromkeys(k.recipient for k in keys))


# ---------------------------------------------------------------------------------------
# Reading.

_META_STR_FIELDS = (
    "lastmodified",
    "mac",
    "version",
    "unencrypted_suffix",
    "encrypted_suffix",
    "unencrypted_regex",
    "encrypted_regex",
    "unencrypted_comment_regex",
    "encrypted_comment_regex",
)
_META_STR_SET = frozenset(_META_STR_FIELDS)
_RULE_FIELDS = (
    "unencrypted_suffix",
    "encrypted_suffix",
    "unencrypted_regex",
    "encrypted_regex",
    "unencrypted_comment_regex",
    "encrypted_comment_regex",
)
_OTHER_KEY_TYPES = ("pgp", "kms", "gcp_kms", "azure_kv", "hc_vault")


def _mapping_items(node: Any, source: object, what: str) -> list[tuple[str, Any]]:
    if node.id != "mapping":
        raise malformed_error(source, f"{what} is not a mapping")
    return [(k.value, v) for k, v in node.value if k.id == "scalar"]


def _age_keys(node: Any, source: object) -> list[AgeKey]:
    if node.id == "scalar" and scalar_value(node) is None:
        return []
    if node.id != "sequence":
        raise malformed_error(source, "sops.age is not a list")
    keys = []
    for item in node.value:
        fields = dict(_mapping_items(item, source, "an entry of sops.age"))
        rec, enc = fields.get("recipient"), fields.get("enc")
        if rec is None or enc is None or rec.id != "scalar" or enc.id != "scalar":
            raise malformed_error(source, "an entry of sops.age lacks `recipient` or `enc`")
        keys.append(AgeKey(rec.value.strip(), enc.value))
    return keys


def _nonempty(node: Any) -> bool:
    if node.id == "scalar":
        return scalar_value(node) is not None
    return bool(node.value)


def parse_metadata(node: Any, source: object = None) -> Metadata:
    """Read the ``sops`` metadata mapping (as sops' stores.Metadata does: string fields
    take the scalar's text whatever its YAML type)."""
    if node.id != "mapping":
        raise malformed_error(source, "the sops metadata is not a mapping")
    values = dict.fromkeys(_META_STR_FIELDS, "")
    fields: dict[str, Any] = {}
    for knode, vnode in node.value:
        name = knode.value
        if name in _META_STR_SET:
            if vnode.id != "scalar":
                raise malformed_error(source, f"sops.{name} is not a string")
            text = vnode.value
            if text in KEYWORDS and scalar_value(vnode) is None:
                text = ""
            values[name] = text
        else:
            fields[name] = vnode
    flag = fields.get("mac_only_encrypted")
    mac_only = False
    if flag is not None:
        if flag.id != "scalar" or not isinstance(value := scalar_value(flag), bool | None):
            raise malformed_error(source, "sops.mac_only_encrypted is not a boolean")
        mac_only = bool(value)
    age: list[AgeKey] = []
    key_groups: list[tuple[AgeKey, ...]] = []
    other = [t for t in _OTHER_KEY_TYPES if t in fields and _nonempty(fields[t])]
    groups = fields.get("key_groups")
    if other or ("age" in fields and _nonempty(fields["age"])):
        if "age" in fields:
            age = _age_keys(fields["age"], source)
    elif groups is not None and _nonempty(groups):
        if groups.id != "sequence":
            raise malformed_error(source, "sops.key_groups is not a list")
        for item in groups.value:
            group = dict(_mapping_items(item, source, "a sops key group"))
            keys = tuple(_age_keys(group["age"], source)) if "age" in group else ()
            kinds = [t for t in (*_OTHER_KEY_TYPES, "azure_keyvault") if t in group]
            kinds = [t for t in kinds if _nonempty(group[t])]
            if not keys and not kinds:
                raise malformed_error(source, "a key group in its sops metadata lists no keys")
            key_groups.append(keys)
            other += [t for t in kinds if t not in other]
        if len(key_groups) == 1:
            age, key_groups = list(key_groups[0]), []
    else:
        raise malformed_error(source, "its sops metadata lists no keys")
    threshold = _shamir_threshold(fields.get("shamir_threshold"), len(key_groups), source)
    if not values["lastmodified"]:
        raise malformed_error(source, "its sops metadata has no lastmodified")
    rules = [n for n in _RULE_FIELDS if values[n]]
    if len(rules) > 1:
        raise malformed_error(source, f"its sops metadata sets more than one of {', '.join(rules)}")
    if not rules:
        values["unencrypted_suffix"] = DEFAULT_UNENCRYPTED_SUFFIX
    elif rules[0].endswith("regex"):
        try:
            _regex(values[rules[0]])
        except re.error:
            raise malformed_error(
                source, f"sops.{rules[0]} is not a valid regular expression"
            ) from None
    return Metadata(
        age=tuple(age),
        mac_only_encrypted=mac_only,
        other_keys=tuple(other),
        key_groups=tuple(key_groups),
        shamir_threshold=threshold,
        **values,
    )


def _shamir_threshold(node: Any, groups: int, source: object) -> int:
    """``sops.shamir_threshold`` for a file with ``groups`` key groups (0 without Shamir);
    absent, every group is needed."""
    if groups == 0:
        return 0
    value = scalar_value(node) if node is not None and node.id == "scalar" else node
    if value is None:
        return groups
    if value.__class__ is not int or not 2 <= value <= groups:
        raise malformed_error(
            source, f"sops.shamir_threshold is not a whole number from 2 to {groups}"
        )
    return value


# ---------------------------------------------------------------------------------------
# Writing.


def emit_metadata(lines: list[str], meta: Metadata) -> None:
    """Append the ``sops`` block as sops writes it (the fields we set, in sops' order)."""
    lines.append("sops:")
    lines.append(f"{INDENT}age:")
    for key in meta.age:
        lines.append(f"{INDENT * 2}- recipient: {emit_scalar(key.recipient)}")
        # sops (yaml.v3) indents the armor by two under `enc:`, not by a full step.
        emit_literal(lines, INDENT * 2 + "  ", "enc", key.enc, step="  ")
    lines.append(f'{INDENT}lastmodified: "{meta.lastmodified}"')
    lines.append(f"{INDENT}mac: {meta.mac}")
    if meta.encrypted_regex:
        lines.append(f"{INDENT}encrypted_regex: {emit_scalar(meta.encrypted_regex)}")
    lines.append(f"{INDENT}version: {meta.version}")


# ---------------------------------------------------------------------------------------
# Encryption rules.


@lru_cache(maxsize=64)
def _regex(pattern: str) -> re.Pattern[str]:
    # Go RE2 and Python agree on the patterns people write here; \z is RE2's end of text.
    return re.compile(pattern.replace(r"\z", r"\Z"))


class EncryptionRules:
    """Which leaves are encrypted (sops.Tree.shouldBeEncrypted) under one set of metadata
    rules. Shared by every file with the same rules, with a per-path cache."""

    __slots__ = (
        "_by_path",
        "encrypted_regex",
        "encrypted_suffix",
        "mac_only_encrypted",
        "unencrypted_regex",
        "unencrypted_suffix",
        "uses_comments",
    )

    def __init__(self, key: tuple[str, str, str, str, bool, bool]) -> None:
        (
            self.unencrypted_suffix,
            self.encrypted_suffix,
            self.unencrypted_regex,
            self.encrypted_regex,
            self.uses_comments,
            self.mac_only_encrypted,
        ) = key
        self._by_path: dict[tuple[str, ...], bool] = {}

    @staticmethod
    def of(meta: Metadata) -> EncryptionRules:
        return _rules(
            (
                meta.unencrypted_suffix,
                meta.encrypted_suffix,
                meta.unencrypted_regex,
                meta.encrypted_regex,
                bool(meta.unencrypted_comment_regex or meta.encrypted_comment_regex),
                meta.mac_only_encrypted,
            )
        )

    def encrypted(self, path: tuple[str, ...]) -> bool:
        cached = self._by_path.get(path)
        if cached is not None:
            return cached
        result = True
        if self.unencrypted_suffix and any(p.endswith(self.unencrypted_suffix) for p in path):
            result = False
        if self.encrypted_suffix:
            result = any(p.endswith(self.encrypted_suffix) for p in path)
        if self.unencrypted_regex:
            rx = _regex(self.unencrypted_regex)
            if any(rx.search(p) for p in path):
                result = False
        if self.encrypted_regex:
            rx = _regex(self.encrypted_regex)
            result = any(rx.search(p) for p in path)
        if len(self._by_path) < 4096:
            self._by_path[path] = result
        return result


@lru_cache(maxsize=32)
def _rules(key: tuple[str, str, str, str, bool, bool]) -> EncryptionRules:
    return EncryptionRules(key)


__all__ = [
    "DEFAULT_UNENCRYPTED_SUFFIX",
    "SOPS_VERSION",
    "AgeKey",
    "EncryptionRules",
    "Metadata",
    "emit_metadata",
    "parse_metadata",
]
