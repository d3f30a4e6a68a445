"""The SOPS document format for YAML files: values, data key, MAC.

This is our own implementation of the format the ``sops`` binary (3.x) reads and writes, so
that a file written here decrypts with ``sops -d`` and a file ``sops`` wrote or edited is
read back here. The facts it relies on (checked against the sops sources):

* Every encrypted leaf is ``ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<t>]``: AES-256
  GCM with a 32-byte random IV, a 16-byte tag, and as additional data the leaf's key path
  joined with ``:`` plus a trailing ``:`` (list items use the path of their list). ``t`` is
  ``str``, ``int``, ``float``, ``bool``, ``time``, ``bytes`` or ``comment``. An empty string
  is never encrypted (it stays ``""``). A null is never encrypted nor hashed.
* The data key (32 random bytes) is age-encrypted, ASCII-armored, once per recipient, under
  ``sops.age[*].enc``.
* The MAC is SHA-512 over the byte form of every leaf, in document order (only the encrypted
  ones, after a fixed 32-byte prefix, when ``mac_only_encrypted`` is set), written as
  uppercase hex and stored encrypted (type ``str``) with the RFC 3339 ``lastmodified`` string
  as additional data. Byte forms: strings as UTF-8, ints in decimal, floats in shortest
  ``'f'`` form, booleans ``True``/``False``, timestamps in RFC 3339 with nanoseconds.
  Comments and the ``sops`` metadata key are not hashed.
* Plaintext scalars are typed like Go's yaml.v3 does (YAML 1.2 core schema plus timestamps,
  ``0x``/``0o``/``0b`` ints, ``_`` separators, legacy ``0777`` octals), which differs from
  PyYAML's YAML 1.1 typing. So the MAC is computed from the composed node graph and the
  scalar source text, never from PyYAML-constructed Python objects.

Heavy dependencies (``pyrage``, ``cryptography``) are imported inside the functions that use
them; PyYAML is imported on first use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from ..model import Secret

#: The sops version we write into ``sops.version`` (the format we emit is the one of 3.11).
SOPS_VERSION = "3.11.0"
#: Leaves encrypted in grant files; everything else stays plaintext but MAC-covered.
GRANT_ENCRYPTED_REGEX = "^(access_token|refresh_token|id_token|value|client_secret)$"
DEFAULT_UNENCRYPTED_SUFFIX = "_unencrypted"
NONCE_SIZE = 32
DATA_KEY_SIZE = 32
#: sops' ``MACOnlyEncryptedInitialization``: sha256(b"sops").
MAC_ONLY_ENCRYPTED_INIT = hashlib.sha256(b"sops").digest()
#: Refuse absurd documents (alias bombs, deep nesting) instead of exhausting memory.
MAX_DEPTH = 64
MAX_LEAVES = 100_000


# ---------------------------------------------------------------------------------------
# Errors. Messages name the file and what to do; they never carry a plaintext value.


class VaultError(Exception):
    """A grant or SOPS file cannot be used. ``str()`` is a one-paragraph user message."""

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path


class TamperedError(VaultError):
    """The MAC does not match, or an encrypted value fails authentication."""


class NoIdentityError(VaultError):
    """No age identity was found where sops looks for one."""


class DecryptError(VaultError):
    """Identities are present but none of them opens the file's data key."""


class MalformedError(VaultError):
    """Not YAML, not a SOPS file, metadata missing, or a leaf of the wrong type."""


def _where(source: object) -> str:
    return str(source) if source is not None else "<sops document>"


def _tampered(source: object, what: str) -> TamperedError:
    return TamperedError(
        f"{_where(source)}: {what}: it was tampered with (changed outside sops and reconcile) "
        "or is corrupted, so it is not used and will not be rewritten. Restore it from version "
        "control (git checkout/restore), or delete it and link the grant again.",
        source,
    )


def _malformed(source: object, what: str) -> MalformedError:
    return MalformedError(
        f"{_where(source)}: {what}. Fix the file by hand (it is YAML), restore it from version "
        "control, or delete it and let reconcile write it again.",
        source,
    )


# ---------------------------------------------------------------------------------------
# Values and tree items that need a type of their own.


class Comment(str):
    """A comment leaf (from a decrypted ``type:comment`` value); never part of the MAC."""

    __slots__ = ()


@dataclass(frozen=True)
class GoTime:
    """A YAML timestamp as sops sees it: Python value plus Go's ``MarshalText`` bytes."""

    value: datetime | None
    text: str


# ---------------------------------------------------------------------------------------
# Go yaml.v3 scalar typing (resolve.go) reimplemented on the scalar source text.

_HINTS: dict[str, str] = {"+": "S", "-": "S", ".": "."}
_HINTS.update(dict.fromkeys("0123456789", "D"))
_HINTS.update(dict.fromkeys("yYnNtTfFoO~", "M"))

_MISSING = object()
_RESOLVE_MAP: dict[str, Any] = {}
for _v, _words in (
    (True, ("true", "True", "TRUE")),
    (False, ("false", "False", "FALSE")),
    (None, ("", "~", "null", "Null", "NULL")),
    (math.nan, (".nan", ".NaN", ".NAN")),
    (math.inf, (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")),
    (-math.inf, ("-.inf", "-.Inf", "-.INF")),
):
    for _w in _words:
        _RESOLVE_MAP[_w] = _v

_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_DOT_FLOAT = re.compile(r"\.[0-9_]+([eE][-+]?[0-9_]+)?\Z")
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})"
    r"(?:(?:[Tt]([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:[.,]([0-9]+))?(Z|[-+][0-9]{2}:[0-9]{2}))"
    r"|(?: +([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:[.,]([0-9]+))?))?\Z"
)
_DIGITS = {2: frozenset("01"), 8: frozenset("01234567"), 10: frozenset("0123456789")}
_DIGITS[16] = frozenset("0123456789abcdefABCDEF")
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


class _Unsupported(Exception):
    """A value sops itself cannot handle (e.g. an integer beyond int64)."""


def _go_parse_uint(s: str) -> int | None:
    """strconv.ParseUint(s, 0, 64) without the range check (None on syntax error)."""
    if not s:
        return None
    base = 10
    if s[0] == "0":
        if len(s) >= 3 and s[1] in "bB":
            base, s = 2, s[2:]
        elif len(s) >= 3 and s[1] in "oO":
            base, s = 8, s[2:]
        elif len(s) >= 3 and s[1] in "xX":
            base, s = 16, s[2:]
        else:
            base, s = 8, s[1:]
            if not s:
                return 0
    digits = _DIGITS[base]
    for c in s:
        if c not in digits:
            return None
    return int(s, base)


def _go_int(plain: str) -> int | None:
    """The int yaml.v3 resolves ``plain`` to; None if it is not an int. Raises _Unsupported
    for values that only fit a uint64 (sops cannot walk those)."""
    sign = plain[0] if plain[0] in "+-" else ""
    n = _go_parse_uint(plain[1:] if sign else plain)
    if n is None:
        return None
    value = -n if sign == "-" else n
    if _INT64_MIN <= value <= _INT64_MAX:
        return value
    if not sign and n <= _UINT64_MAX:
        raise _Unsupported("an integer beyond the int64 range")
    return None


def _go_underscore_ok(s: str) -> bool:
    """strconv's underscoreOK for a decimal number: `_` only between digits."""
    saw = "^"
    for c in s.lstrip("+-"):
        if "0" <= c <= "9":
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _go_time(text: str, *, strict_rfc3339: bool = False) -> GoTime | None:
    """Parse ``text`` the way yaml.v3's parseTimestamp does (or, with ``strict_rfc3339``,
    like Go's ``Time.UnmarshalText``) and return the value with its MarshalText form."""
    if len(text) == 20 and _CANONICAL_TIME.match(text):  # the common case, already canonical
        try:
            return GoTime(datetime.fromisoformat(text), text)
        except ValueError:
            pass
    if strict_rfc3339:
        m = _RFC3339.match(text)
        if not m:
            return None
        y, mo, d, h, mi, s, frac, zone = m.groups()
    else:
        m = _TIMESTAMP.match(text)
        if not m:
            return None
        y, mo, d = m.group(1, 2, 3)
        if m.group(4) is not None:
            h, mi, s, frac, zone = m.group(4, 5, 6, 7, 8)
        elif m.group(9) is not None:
            h, mi, s, frac = m.group(9, 10, 11, 12)
            zone = "Z"
        else:
            h = mi = s = "0"
            frac, zone = None, "Z"
    year, month, day, hour, minute, second = int(y), int(mo), int(d), int(h), int(mi), int(s)
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    nanos = int((frac or "0")[:9].ljust(9, "0"))
    offset = 0
    if zone != "Z":
        oh, om = int(zone[1:3]), int(zone[4:6])
        if oh > 24 or om > 60 or (strict_rfc3339 and (oh > 23 or om > 59)):
            return None
        offset = (oh * 3600 + om * 60) * (-1 if zone[0] == "-" else 1)
    out = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if nanos:
        out += "." + f"{nanos:09d}".rstrip("0")
    if offset == 0:
        out += "Z"
    else:
        minutes = abs(offset) // 60
        out += f"{'-' if offset < 0 else '+'}{minutes // 60:02d}:{minutes % 60:02d}"
    try:
        value = datetime(
            year, month, day, hour, minute, second, nanos // 1000, tzinfo=UTC
        ) - timedelta(seconds=offset)
    except (ValueError, OverflowError):
        value = None
    return GoTime(value, out)


_CANONICAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(Z|[-+][0-9]{2}:[0-9]{2})\Z"
)


def _go_float_from(text: str) -> float | None:
    f = float(text)
    return None if math.isinf(f) else f


def resolve_plain(text: str) -> Any:
    """The Go value yaml.v3 gives an untagged plain scalar: None, bool, int, float, GoTime
    or str. Raises _Unsupported for values sops cannot handle."""
    hint = _HINTS.get(text[:1]) if text else "N"
    if hint is None:
        return text
    item = _RESOLVE_MAP.get(text, _MISSING)
    if item is not _MISSING:
        return item
    if hint == "M":
        return text
    if hint == ".":
        # yaml.v3 hands these straight to strconv.ParseFloat, which allows Go-style `_`
        # digit separators.
        if _DOT_FLOAT.match(text) and ("_" not in text or _go_underscore_ok(text)):
            f = _go_float_from(text.replace("_", ""))
            if f is not None:
                return f
        return text
    if hint == "D":
        t = _go_time(text)
        if t is not None:
            return t
    plain = text.replace("_", "") if "_" in text else text
    if plain:
        n = _go_int(plain)
        if n is not None:
            return n
        if _YAML_STYLE_FLOAT.match(plain):
            f = _go_float_from(plain)
            if f is not None:
                return f
    return text


_LONG_TAG = "tag:yaml.org,2002:"
_RESOLVABLE = frozenset(("bool", "int", "float", "null", "timestamp"))
_TAG_OF: dict[type, str] = {bool: "bool", int: "int", float: "float", type(None): "null"}
_TAG_OF[GoTime] = "timestamp"
_TAG_OF[str] = "str"


def resolve_tagged(tag: str, text: str) -> Any:
    """The Go value for a scalar with an explicit tag (a failed conversion gives None, as
    sops ignores yaml.v3's decode error and keeps a nil)."""
    if not tag.startswith(_LONG_TAG):
        return text  # a local tag: yaml.v3 keeps the text as a string
    short = tag[len(_LONG_TAG) :]
    if short == "str":
        return text
    if short == "binary":
        try:
            raw = base64.b64decode(text.replace("\n", "").replace("\r", ""), validate=True)
        except (binascii.Error, ValueError):
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    if short not in _RESOLVABLE:
        return text
    if short == "timestamp":
        t = _go_time(text)
        return t if t is not None else None
    value = resolve_plain(text)
    if isinstance(value, GoTime):  # only an untagged or !!timestamp scalar is a timestamp
        value = text
    got = _TAG_OF.get(type(value))
    if got == short:
        return value
    if short == "float" and got == "int":
        return float(value)
    return None


# ---------------------------------------------------------------------------------------
# Byte forms (sops.ToBytes) and YAML loading.


def go_float_text(f: float) -> str:
    """strconv.FormatFloat(f, 'f', -1, 64)."""
    if f != f:
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    r = repr(f)
    s = format(Decimal(r), "f") if ("e" in r or "E" in r) else r
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def to_bytes(value: Any) -> bytes:
    """The bytes sops feeds the MAC for a leaf value."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        return b"True" if value else b"False"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return go_float_text(value).encode()
    if isinstance(value, GoTime):
        return value.text.encode()
    if isinstance(value, datetime):
        return format_time(value).encode()
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, Secret):
        return value.reveal().encode()
    raise TypeError(f"unsupported leaf type {type(value).__name__}")


def format_time(value: datetime) -> str:
    """RFC 3339 (Go's MarshalText form, in UTC): ``2026-01-01T00:00:00Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    out = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        out += "." + f"{value.microsecond:06d}".rstrip("0")
    return out + "Z"


_PLAIN = "!sops-plain"
_STR_TAG = _LONG_TAG + "str"
_QUOTED_STYLES = frozenset("\"'|>")


@lru_cache(maxsize=1)
def _loader_class() -> type:
    import yaml
    from yaml.nodes import ScalarNode

    base = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
    seq_tag, map_tag = _LONG_TAG + "seq", _LONG_TAG + "map"

    class _NodeLoader(base):  # type: ignore[misc, valid-type]
        """Composes nodes only; untagged plain scalars get a marker tag instead of PyYAML's
        YAML 1.1 typing, so we can type them with Go's rules ourselves."""

        def resolve(self, kind: type, value: str, implicit: tuple[bool, bool]) -> str:
            if kind is ScalarNode:
                return _PLAIN if implicit[0] else _STR_TAG
            return map_tag if kind.id == "mapping" else seq_tag

    return _NodeLoader


def compose_documents(data: bytes | str, source: object = None) -> list[Any]:
    """Every YAML document of ``data`` as a node graph (C loader when available)."""
    import yaml

    loader = _loader_class()(data)
    try:
        docs = []
        while loader.check_node():
            docs.append(loader.get_node())
        return docs
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise _malformed(source, f"is not valid YAML{where}") from None
    finally:
        loader.dispose()


def scalar_value(node: Any) -> Any:
    """The Go-typed value of a scalar node (see resolve_plain/resolve_tagged)."""
    tag = node.tag
    if tag == _PLAIN:
        text = node.value
        if node.style:  # quoted, literal or folded: a string (plain style is '' or None)
            return text
        hint = _HINTS.get(text[:1]) if text else "N"
        if hint is None:
            return text
        if hint == "M":
            value = _RESOLVE_MAP.get(text, _MISSING)
            return text if value is _MISSING else value
        return resolve_plain(text)
    if tag == _STR_TAG:
        return node.value
    return resolve_tagged(tag, node.value)


# ---------------------------------------------------------------------------------------
# Metadata.


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

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple(k.recipient for k in self.age)


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
_OTHER_KEY_TYPES = ("pgp", "kms", "gcp_kms", "azure_kv", "hc_vault")


def _mapping_items(node: Any, source: object, what: str) -> list[tuple[str, Any]]:
    if node.id != "mapping":
        raise _malformed(source, f"{what} is not a mapping")
    return [(k.value, v) for k, v in node.value if k.id == "scalar"]


def _age_keys(node: Any, source: object) -> list[AgeKey]:
    if node.id == "scalar" and scalar_value(node) is None:
        return []
    if node.id != "sequence":
        raise _malformed(source, "sops.age is not a list")
    keys = []
    for item in node.value:
        fields = dict(_mapping_items(item, source, "an entry of sops.age"))
        rec, enc = fields.get("recipient"), fields.get("enc")
        if rec is None or enc is None or rec.id != "scalar" or enc.id != "scalar":
            raise _malformed(source, "an entry of sops.age lacks `recipient` or `enc`")
        keys.append(AgeKey(rec.value.strip(), enc.value))
    return keys


_META_STR_SET = frozenset(_META_STR_FIELDS)
_RULE_FIELDS = (
    "unencrypted_suffix",
    "encrypted_suffix",
    "unencrypted_regex",
    "encrypted_regex",
    "unencrypted_comment_regex",
    "encrypted_comment_regex",
)


def parse_metadata(node: Any, source: object = None) -> Metadata:
    """Read the ``sops`` metadata mapping (as sops' stores.Metadata does: string fields
    take the scalar's text whatever its YAML type)."""
    if node.id != "mapping":
        raise _malformed(source, "the sops metadata is not a mapping")
    values = dict.fromkeys(_META_STR_FIELDS, "")
    fields: dict[str, Any] = {}
    for knode, vnode in node.value:
        name = knode.value
        if name in _META_STR_SET:
            if vnode.id != "scalar":
                raise _malformed(source, f"sops.{name} is not a string")
            text = vnode.value
            if text in _RESOLVE_MAP and scalar_value(vnode) is None:
                text = ""
            values[name] = text
        else:
            fields[name] = vnode
    flag = fields.get("mac_only_encrypted")
    mac_only = False
    if flag is not None:
        v = scalar_value(flag) if flag.id == "scalar" else _MISSING
        if not (v is None or isinstance(v, bool)):
            raise _malformed(source, "sops.mac_only_encrypted is not a boolean")
        mac_only = bool(v)
    age: list[AgeKey] = []
    other = [t for t in _OTHER_KEY_TYPES if t in fields and _nonempty(fields[t])]
    groups = fields.get("key_groups")
    if other or ("age" in fields and _nonempty(fields["age"])):
        if "age" in fields:
            age = _age_keys(fields["age"], source)
    elif groups is not None and _nonempty(groups):
        if groups.id != "sequence":
            raise _malformed(source, "sops.key_groups is not a list")
        if len(groups.value) > 1:
            raise _malformed(
                source,
                "it uses several key groups (Shamir secret sharing), which reconcile does not "
                "support; decrypt it with sops instead",
            )
        group = dict(_mapping_items(groups.value[0], source, "a sops key group"))
        if "age" in group:
            age = _age_keys(group["age"], source)
        other = [t for t in (*_OTHER_KEY_TYPES, "azure_keyvault") if t in group]
        other = [t for t in other if _nonempty(group[t])]
    else:
        raise _malformed(source, "its sops metadata lists no keys")
    if not values["lastmodified"]:
        raise _malformed(source, "its sops metadata has no lastmodified")
    rules = [n for n in _RULE_FIELDS if values[n]]
    if len(rules) > 1:
        raise _malformed(source, f"its sops metadata sets more than one of {', '.join(rules)}")
    if not rules:
        values["unencrypted_suffix"] = DEFAULT_UNENCRYPTED_SUFFIX
    elif rules[0].endswith("regex"):
        try:
            _regex(values[rules[0]])
        except re.error:
            raise _malformed(source, f"sops.{rules[0]} is not a valid regular expression") from None
    return Metadata(
        age=tuple(age),
        mac_only_encrypted=mac_only,
        other_keys=tuple(other),
        **values,
    )


def _nonempty(node: Any) -> bool:
    if node.id == "scalar":
        return scalar_value(node) is not None
    return bool(node.value)


@lru_cache(maxsize=64)
def _regex(pattern: str) -> re.Pattern[str]:
    # Go RE2 and Python agree on the patterns people write here; \z is RE2's end of text.
    return re.compile(pattern.replace(r"\z", r"\Z"))


def lastmodified_ad(value: str, source: object = None) -> str:
    """The MAC's additional data: lastmodified parsed as RFC 3339 and formatted again."""
    m = _RFC3339.match(value)
    if not m:
        raise _malformed(source, "sops.lastmodified is not an RFC 3339 timestamp")
    date_time = value[:19]
    zone = m.group(8)
    if zone in ("Z", "+00:00", "-00:00"):
        zone = "Z"
    return date_time + zone


class _Rules:
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
    def of(meta: Metadata) -> _Rules:
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
def _rules(key: tuple[str, str, str, str, bool, bool]) -> _Rules:
    return _Rules(key)


# ---------------------------------------------------------------------------------------
# Decryption.

_ENC = re.compile(r"ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]")


def _b64(text: str) -> bytes:
    return binascii.a2b_base64(text, strict_mode=True)


_AESGCM: Any = None


def _aesgcm(key: bytes) -> Any:
    global _AESGCM
    if _AESGCM is None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        _AESGCM = AESGCM
    return _AESGCM(key)


def _convert_decrypted(raw: bytes, kind: str) -> Any:
    """Type a decrypted value like sops' aes.Cipher.Decrypt; ValueError if it cannot."""
    if kind == "str":
        return raw.decode("utf-8")
    text = raw.decode("ascii")
    if kind == "int":
        if not re.fullmatch(r"[-+]?[0-9]+", text):
            raise ValueError("int")
        value = int(text)
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError("int")
        return value
    if kind == "float":
        if not text or "_" in text or text != text.strip():
            raise ValueError("float")
        value = float(text)
        if math.isinf(value) and "inf" not in text.lower():
            raise ValueError("float")
        return value
    if kind == "bool":
        if text in ("1", "t", "T", "TRUE", "true", "True"):
            return True
        if text in ("0", "f", "F", "FALSE", "false", "False"):
            return False
        raise ValueError("bool")
    if kind == "time":
        t = _go_time(text, strict_rfc3339=True)
        if t is None:
            raise ValueError("time")
        return t
    if kind == "bytes":
        return raw
    if kind == "comment":
        return Comment(raw.decode("utf-8"))
    raise ValueError("type")


class _Decryptor:
    __slots__ = ("_aes", "source")

    def __init__(self, data_key: bytes, source: object) -> None:
        self._aes = _aesgcm(data_key)
        self.source = source

    def decrypt(self, value: str, path: tuple[str, ...]) -> Any:
        where = ":".join(path) or "the MAC"
        m = _ENC.match(value)
        if m is None:
            raise _tampered(self.source, f"the value at {where} should be encrypted but is not")
        try:
            data, iv, tag = _b64(m.group(1)), _b64(m.group(2)), _b64(m.group(3))
        except (binascii.Error, ValueError):
            raise _tampered(self.source, f"the encrypted value at {where} is damaged") from None
        aad = (":".join(path) + ":").encode() if path else b""
        return self._open(data, iv, tag, aad, m.group(4), where)

    def decrypt_mac(self, value: str, aad: str) -> Any:
        m = _ENC.match(value)
        if m is None:
            raise _tampered(self.source, "its MAC is missing or not encrypted")
        try:
            data, iv, tag = _b64(m.group(1)), _b64(m.group(2)), _b64(m.group(3))
        except (binascii.Error, ValueError):
            raise _tampered(self.source, "its MAC is damaged") from None
        return self._open(data, iv, tag, aad.encode(), m.group(4), "the MAC")

    def _open(self, data: bytes, iv: bytes, tag: bytes, aad: bytes, kind: str, where: str) -> Any:
        from cryptography.exceptions import InvalidTag

        try:
            raw = self._aes.decrypt(iv, data + tag, aad)
        except (InvalidTag, ValueError):
            raise _tampered(
                self.source, f"the encrypted value at {where} fails authentication"
            ) from None
        try:
            return _convert_decrypted(raw, kind)
        except (ValueError, UnicodeDecodeError):
            raise _malformed(
                self.source, f"the value at {where} does not decode as its type {kind!r}"
            ) from None


@dataclass
class Document:
    """A parsed SOPS document. ``data`` holds the first YAML document without the ``sops``
    key: plaintext leaves as Go-typed values (str, int, float, bool, None, GoTime),
    encrypted leaves decrypted when ``decrypted`` is True, else left as their ``ENC[...]``
    text. ``encrypted_paths`` lists the key paths of leaves that are encrypted."""

    data: dict[str, Any]
    metadata: Metadata
    decrypted: bool
    encrypted_paths: frozenset[tuple[str, ...]] = field(default_factory=frozenset)
    extra_documents: list[dict[str, Any]] = field(default_factory=list)


class _Walker:
    """One pass over the node graph: builds the value tree, decrypts, feeds the MAC."""

    __slots__ = (
        "_cache",
        "_hash_plain",
        "decryptor",
        "enc_paths",
        "leaves",
        "mac",
        "rules",
        "source",
    )

    def __init__(self, rules: _Rules, decryptor: _Decryptor | None, source: object) -> None:
        self.rules = rules
        self.decryptor = decryptor
        self.source = source
        self.enc_paths: set[tuple[str, ...]] = set()
        self.leaves = 0
        self.mac = None
        self._cache = rules._by_path
        self._hash_plain = not rules.mac_only_encrypted
        if decryptor is not None:
            self.mac = hashlib.sha512()
            if rules.mac_only_encrypted:
                self.mac.update(MAC_ONLY_ENCRYPTED_INIT)

    def mapping(self, node: Any, path: tuple[str, ...], depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise _malformed(self.source, "it is nested too deeply")
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            if knode.id != "scalar":
                raise _malformed(self.source, "it has a mapping key that is not a string")
            key = scalar_value(knode)
            if key.__class__ is not str:
                where = ":".join(path) or "the top level"
                raise _malformed(self.source, f"it has a non-string mapping key under {where}")
            if key in out:
                raise _malformed(self.source, f"the key {':'.join((*path, key))} appears twice")
            if not path and key == "sops":
                out[key] = None  # placeholder: removed by the caller, never hashed
                continue
            if vnode.id == "scalar":
                out[key] = self.leaf(vnode, (*path, key))
            else:
                out[key] = self.value(vnode, (*path, key), depth + 1)
        return out

    def value(self, node: Any, path: tuple[str, ...], depth: int) -> Any:
        kind = node.id
        if kind == "scalar":
            return self.leaf(node, path)
        if kind == "mapping":
            return self.mapping(node, path, depth)
        if depth > MAX_DEPTH:
            raise _malformed(self.source, "it is nested too deeply")
        return [self.value(item, path, depth + 1) for item in node.value]

    def leaf(self, node: Any, path: tuple[str, ...]) -> Any:
        self.leaves += 1
        if self.leaves > MAX_LEAVES:
            raise _malformed(self.source, "it has too many values")
        try:
            value = scalar_value(node)
        except _Unsupported as error:
            raise _malformed(self.source, f"the value at {':'.join(path)} is {error}") from None
        if value is None:
            return None
        rules = self.rules
        if rules.uses_comments:
            # Comment-based rules need the comments, which PyYAML drops: treat exactly the
            # values that carry the sops envelope as encrypted (the MAC still covers all).
            encrypted = isinstance(value, str) and value.startswith("ENC[AES256_GCM,")
        else:
            encrypted = self._cache.get(path)
            if encrypted is None:
                encrypted = rules.encrypted(path)
        if encrypted:
            self.enc_paths.add(path)
            if value.__class__ is not str:
                raise _tampered(
                    self.source, f"the value at {':'.join(path)} should be encrypted but is not"
                )
            if self.decryptor is not None and value:
                value = self.decryptor.decrypt(value, path)
        elif not self._hash_plain:
            return value
        mac = self.mac
        if mac is not None:
            if value.__class__ is str:
                mac.update(value.encode())
            elif not isinstance(value, Comment):
                mac.update(to_bytes(value))
        return value


def load_document(
    data: bytes | str,
    identities: Sequence[Any] | None,
    source: object = None,
    *,
    preferred_recipients: Iterable[str] = (),
) -> Document:
    """Parse a SOPS YAML file. With ``identities`` (pyrage identities), open the data key,
    decrypt every encrypted leaf and verify the MAC; with None, decrypt nothing.

    Raises MalformedError, DecryptError, NoIdentityError (identities == []) or
    TamperedError; never includes a plaintext value in a message.
    """
    docs = compose_documents(data, source)
    if not docs or docs[0].id != "mapping":
        raise _malformed(source, "is not a SOPS file (no top-level mapping)")
    meta_node = None
    for knode, vnode in docs[0].value:
        if knode.id == "scalar" and knode.value == "sops" and scalar_value(knode) == "sops":
            meta_node = vnode
    if meta_node is None:
        raise _malformed(source, "is not a SOPS file (no `sops` metadata)")
    meta = parse_metadata(meta_node, source)
    rules = _Rules.of(meta)
    decryptor = None
    if identities is not None:
        data_key = open_data_key(meta, identities, source, preferred_recipients)
        decryptor = _Decryptor(data_key, source)
    walker = _Walker(rules, decryptor, source)
    trees = []
    for doc in docs:
        if doc.id == "scalar" and scalar_value(doc) is None:
            trees.append({})
            continue
        if doc.id != "mapping":
            raise _malformed(source, "a YAML document in it is not a mapping")
        tree = walker.mapping(doc, (), 0)
        tree.pop("sops", None)
        trees.append(tree)
    if decryptor is not None:
        assert walker.mac is not None
        computed = walker.mac.hexdigest().upper()
        stored = decryptor.decrypt_mac(meta.mac, lastmodified_ad(meta.lastmodified, source))
        if type(stored) is not str or not hmac.compare_digest(stored, computed):
            raise _tampered(source, "its MAC does not match its content")
    return Document(
        data=trees[0],
        metadata=meta,
        decrypted=decryptor is not None,
        encrypted_paths=frozenset(walker.enc_paths),
        extra_documents=trees[1:],
    )


def open_data_key(
    meta: Metadata,
    identities: Sequence[Any],
    source: object = None,
    preferred_recipients: Iterable[str] = (),
) -> bytes:
    """Decrypt the data key with the first age entry one of ``identities`` opens."""
    import pyrage

    if not identities:
        raise NoIdentityError(
            f"{_where(source)}: no age identity is available to decrypt it. Like sops, "
            "reconcile looks in $SOPS_AGE_KEY, $SOPS_AGE_KEY_FILE, $SOPS_AGE_KEY_CMD, then "
            "$XDG_CONFIG_HOME/sops/age/keys.txt (default ~/.config/sops/age/keys.txt); set one "
            "of them or run `reconcile init`.",
            source,
        )
    if not meta.age:
        kinds = ", ".join(meta.other_keys) or "no"
        raise DecryptError(
            f"{_where(source)}: it is encrypted to {kinds} keys but to no age recipient, so "
            "reconcile cannot open it; add an age recipient with `sops updatekeys`.",
            source,
        )
    preferred = set(preferred_recipients)
    entries = sorted(meta.age, key=lambda k: k.recipient not in preferred)
    ours_failed = False
    for entry in entries:
        try:
            key = pyrage.decrypt(entry.enc.encode(), list(identities))
        except (pyrage.DecryptError, ValueError):
            # An entry for a recipient we hold the identity of must open: if it does not,
            # the entry was altered.
            ours_failed = ours_failed or entry.recipient in preferred
            continue
        if len(key) != DATA_KEY_SIZE:
            raise _tampered(source, "its data key has the wrong size")
        return key
    if ours_failed:
        raise _tampered(source, "the age-encrypted data key for your recipient is damaged")
    listed = ", ".join(meta.recipients)
    raise DecryptError(
        f"{_where(source)}: none of the {len(identities)} age identities found opens it; it is "
        f"encrypted to {listed}. Use the identity of one of those recipients (SOPS_AGE_KEY_FILE), "
        "or have someone who can decrypt it add your recipient with `sops updatekeys`.",
        source,
    )


# ---------------------------------------------------------------------------------------
# Encryption and emission.

_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
_PLAIN_OK = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?\Z")


def _plain_ok(text: str) -> bool:
    """Can ``text`` be emitted as a plain scalar that every YAML reader (yaml.v3, libyaml,
    PyYAML's YAML 1.1 typing) reads back as this same string?"""
    if not _PLAIN_OK.match(text) or text[0] in _INDICATORS:
        return False
    if ": " in text or " #" in text or text.endswith(":") or "  " in text:
        return False
    if text.startswith(("---", "...")):
        return False
    try:
        if not isinstance(resolve_plain(text), str):
            return False
    except _Unsupported:
        return False
    return _yaml11_plain_is_str(text)


@lru_cache(maxsize=1)
def _yaml11_resolver() -> Any:
    from yaml.resolver import Resolver

    return Resolver()


def _yaml11_plain_is_str(text: str) -> bool:
    from yaml.nodes import ScalarNode

    return _yaml11_resolver().resolve(ScalarNode, text, (True, False)) == _STR_TAG


_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\t": "\\t",
    "\r": "\\r",
    "\0": "\\0",
}


def quote(text: str) -> str:
    """A YAML double-quoted scalar for ``text`` (printable characters kept as they are)."""
    out = ['"']
    for ch in text:
        o = ord(ch)
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif o < 0x20 or 0x7F <= o <= 0x9F:
            out.append(f"\\x{o:02x}")
        elif 0xD800 <= o <= 0xDFFF:
            raise ValueError("a string holds a lone surrogate, which is not valid UTF-8")
        elif o in (0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF):
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def emit_scalar(value: Any) -> str:
    if isinstance(value, str):
        return value if _plain_ok(value) else quote(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError("an integer beyond the int64 range")
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        r = repr(value)
        return r if ("." in r or "e" in r or "n" in r) else r + ".0"
    if isinstance(value, GoTime):
        return value.text
    if isinstance(value, datetime):
        return format_time(value)
    raise TypeError(f"cannot write a {type(value).__name__} value")


def _key_text(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError("mapping keys must be strings")
    return emit_scalar(key)


class _Encryptor:
    __slots__ = ("_aes", "mac", "rules")

    def __init__(self, data_key: bytes, rules: _Rules) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aes = AESGCM(data_key)
        self.rules = rules
        self.mac = hashlib.sha512()
        if rules.mac_only_encrypted:
            self.mac.update(MAC_ONLY_ENCRYPTED_INIT)

    def seal(self, plaintext: bytes, aad: bytes, kind: str) -> str:
        iv = os.urandom(NONCE_SIZE)
        out = self._aes.encrypt(iv, plaintext, aad)
        return (
            f"ENC[AES256_GCM,data:{base64.b64encode(out[:-16]).decode()},"
            f"iv:{base64.b64encode(iv).decode()},tag:{base64.b64encode(out[-16:]).decode()},"
            f"type:{kind}]"
        )

    def leaf(self, value: Any, path: tuple[str, ...]) -> Any:
        if value is None:
            return None
        encrypted = self.rules.encrypted(path)
        if isinstance(value, Secret):
            if not encrypted:
                raise ValueError(f"a secret at {':'.join(path)} would be written unencrypted")
            value = value.reveal()
        try:
            raw = to_bytes(value)
        except UnicodeEncodeError:
            raise ValueError(f"the value at {':'.join(path)} is not valid UTF-8 text") from None
        if encrypted or not self.rules.mac_only_encrypted:
            self.mac.update(raw)
        if not encrypted:
            return value
        if isinstance(value, str) and not value:
            return ""
        if isinstance(value, str):
            kind = "str"
        elif isinstance(value, bool):
            kind = "bool"
        elif isinstance(value, int):
            kind = "int"
        elif isinstance(value, float):
            kind = "float"
        elif isinstance(value, GoTime | datetime):
            kind = "time"
        elif isinstance(value, bytes):
            if not value:
                return ""
            kind = "bytes"
        else:
            raise TypeError(f"cannot encrypt a {type(value).__name__} value")
        return self.seal(raw, (":".join(path) + ":").encode(), kind)


_INDENT = "    "


def _emit_value(
    lines: list[str], prefix: str, value: Any, indent: str, enc: Any, path: tuple
) -> None:
    """Append ``prefix`` + value (a mapping key line or a list dash) in block style."""
    if isinstance(value, Mapping):
        if not value:
            lines.append(f"{prefix} {{}}" if prefix else "{}")
            return
        if prefix:
            lines.append(prefix)
        _emit_mapping(lines, value, indent, enc, path)
    elif isinstance(value, list | tuple):
        if not value:
            lines.append(f"{prefix} []")
            return
        lines.append(prefix)
        for item in value:
            if isinstance(item, Mapping) and item:
                sub: list[str] = []
                _emit_mapping(sub, item, indent + "  ", enc, path)
                lines.append(indent + "- " + sub[0][len(indent) + 2 :])
                lines.extend(sub[1:])
            else:
                _emit_value(lines, indent + "-", item, indent + _INDENT, enc, path)
    else:
        leaf = enc.leaf(value, path)
        lines.append(f"{prefix} {emit_scalar(leaf)}")


def _emit_mapping(lines: list[str], mapping: Mapping, indent: str, enc: Any, path: tuple) -> None:
    for key, value in mapping.items():
        _emit_value(lines, f"{indent}{_key_text(key)}:", value, indent + _INDENT, enc, (*path, key))


def _emit_block(lines: list[str], indent: str, key: str, text: str) -> None:
    lines.append(f"{indent}{key}: |")
    for line in text.splitlines():
        lines.append(f"{indent}{_INDENT}{line}" if line else "")


def encode_document(
    data: Mapping[str, Any],
    recipients: Sequence[str],
    *,
    encrypted_regex: str | None = GRANT_ENCRYPTED_REGEX,
    now: datetime | None = None,
) -> bytes:
    """Encrypt ``data`` (str keys; leaves str/int/float/bool/None/datetime/Secret; lists and
    mappings) into a SOPS YAML document for the age ``recipients``. Everything happens in
    memory; the caller writes the bytes. Without ``encrypted_regex`` every leaf is encrypted
    (sops' default), except keys ending in ``_unencrypted``."""
    import pyrage

    from .keys import parse_recipient

    if not recipients:
        raise ValueError("at least one age recipient is needed to write a SOPS file")
    if "sops" in data:
        raise ValueError("`sops` is reserved for the SOPS metadata")
    parsed = [parse_recipient(r) for r in recipients]
    meta = Metadata(
        age=(),
        lastmodified="",
        mac="",
        version=SOPS_VERSION,
        encrypted_regex=encrypted_regex or "",
        unencrypted_suffix="" if encrypted_regex else DEFAULT_UNENCRYPTED_SUFFIX,
    )
    data_key = os.urandom(DATA_KEY_SIZE)
    enc = _Encryptor(data_key, _Rules.of(meta))
    lines: list[str] = []
    _emit_mapping(lines, data, "", enc, ())
    when = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    lastmodified = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    mac = enc.seal(enc.mac.hexdigest().upper().encode(), lastmodified.encode(), "str")
    lines.append("sops:")
    lines.append(f"{_INDENT}age:")
    for text, parsed_recipient in zip(recipients, parsed, strict=True):
        armored = pyrage.encrypt(data_key, [parsed_recipient], armored=True).decode("ascii")
        lines.append(f"{_INDENT * 2}- recipient: {emit_scalar(text.strip())}")
        _emit_block(lines, _INDENT * 2 + "  ", "enc", armored)
    lines.append(f'{_INDENT}lastmodified: "{lastmodified}"')
    lines.append(f"{_INDENT}mac: {mac}")
    if encrypted_regex:
        lines.append(f"{_INDENT}encrypted_regex: {emit_scalar(encrypted_regex)}")
    lines.append(f"{_INDENT}version: {SOPS_VERSION}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def plain_data(value: Any) -> Any:
    """Turn a Document's data into plain Python: GoTime → datetime, Comment → str."""
    if isinstance(value, dict):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v) for v in value]
    if isinstance(value, GoTime):
        return value.value if value.value is not None else value.text
    if isinstance(value, Comment):
        return str(value)
    return value


__all__ = [
    "GRANT_ENCRYPTED_REGEX",
    "SOPS_VERSION",
    "AgeKey",
    "Comment",
    "DecryptError",
    "Document",
    "GoTime",
    "MalformedError",
    "Metadata",
    "NoIdentityError",
    "TamperedError",
    "VaultError",
    "encode_document",
    "format_time",
    "load_document",
    "open_data_key",
    "plain_data",
    "resolve_plain",
    "resolve_tagged",
    "to_bytes",
]
