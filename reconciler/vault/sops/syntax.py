"""YAML text ⇄ values: compose nodes and type their scalars the Go way; write block-style
YAML whose scalars every reader (yaml.v3, libyaml, PyYAML) types the same.

The MAC is computed from the composed node graph and the scalar source text, never from
PyYAML-constructed Python objects. PyYAML is imported with this module, which
``reconcile token``'s fast path never loads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from ..errors import malformed_error
from .scalars import (
    INT64_MAX,
    INT64_MIN,
    TAG_PREFIX,
    GoTime,
    UnsupportedValue,
    format_time,
    resolve_plain,
    resolve_tagged,
)

INDENT = "    "
_PLAIN = "!sops-plain"
_STR_TAG = TAG_PREFIX + "str"

# ---------------------------------------------------------------------------------------
# Reading.


@lru_cache(maxsize=1)
def _loader_class() -> type:
    base = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
    seq_tag, map_tag = TAG_PREFIX + "seq", TAG_PREFIX + "map"

    # The base is picked at run time (the C loader when PyYAML was built with it).
    class _NodeLoader(base):  # type: ignore[misc, valid-type]
        """Composes nodes only; untagged plain scalars get a marker tag instead of PyYAML's
        YAML 1.1 typing, so we can type them with Go's rules ourselves."""

        def resolve(
            self,
            kind: type[ScalarNode | SequenceNode | MappingNode],
            value: str,
            implicit: tuple[bool, bool],
        ) -> str:
            if kind is ScalarNode:
                return _PLAIN if implicit[0] else _STR_TAG
            return map_tag if kind.id == "mapping" else seq_tag

    return _NodeLoader


def compose_documents(data: bytes | str, source: object = None) -> list[Any]:
    """Every YAML document of ``data`` as a node graph (C loader when available)."""
    loader = _loader_class()(data)
    try:
        docs = []
        while loader.check_node():
            docs.append(loader.get_node())
        return docs
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise malformed_error(source, f"is not valid YAML{where}") from None
    finally:
        loader.dispose()


def scalar_value(node: Any) -> Any:
    """The Go-typed value of a scalar node (see resolve_plain/resolve_tagged)."""
    tag = node.tag
    if tag == _PLAIN:
        # quoted, literal or folded: a string (plain style is '' or None)
        return node.value if node.style else resolve_plain(node.value)
    if tag == _STR_TAG:
        return node.value
    return resolve_tagged(tag, node.value)


# ---------------------------------------------------------------------------------------
# Writing.

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
    except UnsupportedValue:
        return False
    return _yaml11_plain_is_str(text)


@lru_cache(maxsize=1)
def _yaml11_resolver() -> Any:
    return Resolver()


def _yaml11_plain_is_str(text: str) -> bool:
    tag: str = _yaml11_resolver().resolve(ScalarNode, text, (True, False))
    return tag == _STR_TAG


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
        if not INT64_MIN <= value <= INT64_MAX:
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


#: Turns a leaf value at a key path into the value written (e.g. its ``ENC[...]`` text).
LeafWriter = Callable[[Any, tuple[str, ...]], Any]


def _emit_value(
    lines: list[str], prefix: str, value: Any, indent: str, leaf: LeafWriter, path: tuple[str, ...]
) -> None:
    """Append ``prefix`` + value (a mapping key line or a list dash) in block style."""
    if isinstance(value, Mapping):
        if not value:
            lines.append(f"{prefix} {{}}" if prefix else "{}")
            return
        if prefix:
            lines.append(prefix)
        emit_mapping(lines, value, indent, leaf, path)
    elif isinstance(value, list | tuple):
        if not value:
            lines.append(f"{prefix} []")
            return
        lines.append(prefix)
        for item in value:
            if isinstance(item, Mapping) and item:
                sub: list[str] = []
                emit_mapping(sub, item, indent + "  ", leaf, path)
                lines.append(indent + "- " + sub[0][len(indent) + 2 :])
                lines.extend(sub[1:])
            else:
                _emit_value(lines, indent + "-", item, indent + INDENT, leaf, path)
    else:
        lines.append(f"{prefix} {emit_scalar(leaf(value, path))}")


def emit_mapping(
    lines: list[str],
    mapping: Mapping[str, Any],
    indent: str,
    leaf: LeafWriter,
    path: tuple[str, ...],
) -> None:
    """Append ``mapping`` in block style; every leaf goes through ``leaf`` first (list items
    get the key path of their list)."""
    for key, value in mapping.items():
        _emit_value(lines, f"{indent}{_key_text(key)}:", value, indent + INDENT, leaf, (*path, key))


def emit_literal(lines: list[str], indent: str, key: str, text: str, step: str = INDENT) -> None:
    """Append ``key: |`` and ``text`` as a literal block scalar, ``step`` further in."""
    lines.append(f"{indent}{key}: |")
    for line in text.splitlines():
        lines.append(f"{indent}{step}{line}" if line else "")


__all__ = [
    "INDENT",
    "LeafWriter",
    "compose_documents",
    "emit_literal",
    "emit_mapping",
    "emit_scalar",
    "quote",
    "scalar_value",
]
