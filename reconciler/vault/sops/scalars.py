"""Scalar values the way sops sees them: Go's yaml.v3 typing and sops' byte forms for the MAC.

Plaintext scalars are typed like yaml.v3's resolve.go does (YAML 1.2 core schema plus
timestamps, ``0x``/``0o``/``0b`` ints, ``_`` separators, legacy ``0777`` octals), which
differs from PyYAML's YAML 1.1 typing, so typing works on the scalar's source text. Byte
forms (sops.ToBytes): strings as UTF-8, ints in decimal, floats in shortest ``'f'`` form,
booleans ``True``/``False``, timestamps in RFC 3339 with nanoseconds.

Pure Python: no YAML library is needed here.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ...model import Secret

#: The prefix of the long form of YAML's core tags (``!!str`` is ``<prefix>str``).
TAG_PREFIX = "tag:yaml.org,2002:"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1


class UnsupportedValue(Exception):
    """A value sops itself cannot handle (e.g. an integer beyond int64)."""


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
#: Plain scalars yaml.v3 resolves by table: booleans, nulls, NaN and infinities.
KEYWORDS: dict[str, Any] = {}
for _v, _words in (
    (True, ("true", "True", "TRUE")),
    (False, ("false", "False", "FALSE")),
    (None, ("", "~", "null", "Null", "NULL")),
    (math.nan, (".nan", ".NaN", ".NAN")),
    (math.inf, (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")),
    (-math.inf, ("-.inf", "-.Inf", "-.INF")),
):
    for _w in _words:
        KEYWORDS[_w] = _v

_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_DOT_FLOAT = re.compile(r"\.[0-9_]+([eE][-+]?[0-9_]+)?\Z")
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})"
    r"(?:(?:[Tt]([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:[.,]([0-9]+))?(Z|[-+][0-9]{2}:[0-9]{2}))"
    r"|(?: +([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:[.,]([0-9]+))?))?\Z"
)
_CANONICAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")
RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(Z|[-+][0-9]{2}:[0-9]{2})\Z"
)
_DIGITS = {2: frozenset("01"), 8: frozenset("01234567"), 10: frozenset("0123456789")}
_DIGITS[16] = frozenset("0123456789abcdefABCDEF")


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
    """The int yaml.v3 resolves ``plain`` to; None if it is not an int. Raises
    UnsupportedValue for values that only fit a uint64 (sops cannot walk those)."""
    sign = plain[0] if plain[0] in "+-" else ""
    n = _go_parse_uint(plain[1:] if sign else plain)
    if n is None:
        return None
    value = -n if sign == "-" else n
    if INT64_MIN <= value <= INT64_MAX:
        return value
    if not sign and n <= _UINT64_MAX:
        raise UnsupportedValue("an integer beyond the int64 range")
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


def parse_time(text: str, *, strict_rfc3339: bool = False) -> GoTime | None:
    """Parse ``text`` the way yaml.v3's parseTimestamp does (or, with ``strict_rfc3339``,
    like Go's ``Time.UnmarshalText``) and return the value with its MarshalText form."""
    if len(text) == 20 and _CANONICAL_TIME.match(text):  # the common case, already canonical
        try:
            return GoTime(datetime.fromisoformat(text), text)
        except ValueError:
            pass
    if strict_rfc3339:
        m = RFC3339.match(text)
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


def _go_float_from(text: str) -> float | None:
    f = float(text)
    return None if math.isinf(f) else f


def resolve_plain(text: str) -> Any:
    """The Go value yaml.v3 gives an untagged plain scalar: None, bool, int, float, GoTime
    or str. Raises UnsupportedValue for values sops cannot handle."""
    hint = _HINTS.get(text[:1]) if text else "N"
    if hint is None:
        return text
    item = KEYWORDS.get(text, _MISSING)
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
        t = parse_time(text)
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


_RESOLVABLE = frozenset(("bool", "int", "float", "null", "timestamp"))
_TAG_OF: dict[type, str] = {bool: "bool", int: "int", float: "float", type(None): "null"}
_TAG_OF[GoTime] = "timestamp"
_TAG_OF[str] = "str"


def resolve_tagged(tag: str, text: str) -> Any:
    """The Go value for a scalar with an explicit tag (a failed conversion gives None, as
    sops ignores yaml.v3's decode error and keeps a nil)."""
    if not tag.startswith(TAG_PREFIX):
        return text  # a local tag: yaml.v3 keeps the text as a string
    short = tag[len(TAG_PREFIX) :]
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
        t = parse_time(text)
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
# Byte forms (sops.ToBytes).


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


__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "KEYWORDS",
    "RFC3339",
    "TAG_PREFIX",
    "GoTime",
    "UnsupportedValue",
    "format_time",
    "go_float_text",
    "parse_time",
    "resolve_plain",
    "resolve_tagged",
    "to_bytes",
]
