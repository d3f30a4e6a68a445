"""Read a YAML file into plain data that remembers the line and column of every node.

Only what JSON can hold is accepted; :data:`MAX_NODES` and :data:`MAX_DEPTH` guard against
alias bombs and absurd nesting. Every failure is a :class:`ConfigError` pointing at the spot.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, Issue

#: Guards against alias bombs and absurd nesting in hand-written YAML.
MAX_NODES = 100_000
MAX_DEPTH = 64

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"

#: Where a value sits in the document: mapping keys and list indexes from the top.
NodePath = tuple[str | int, ...]


class Document:
    """Plain data built from a YAML node tree, plus the position of every node."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.data: Any = None
        self.values: dict[NodePath, tuple[int, int]] = {}
        self.keys: dict[NodePath, tuple[int, int]] = {}

    def position(self, path: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of the value at ``path`` (or of its key), falling back
        to the nearest ancestor that exists."""
        current = tuple(path)
        if key and current in self.keys:
            return self.keys[current]
        while current:
            if current in self.values:
                return self.values[current]
            if current in self.keys:
                return self.keys[current]
            current = current[:-1]
        return self.values.get((), (1, 1))

    def issue(
        self,
        path: Sequence[str | int],
        message: str,
        hint: str | None = None,
        *,
        key: bool = False,
    ) -> Issue:
        """An :class:`Issue` located at ``path`` in this document."""
        line, column = self.position(path, key=key)
        return Issue(message, self.file, line, column, json_path(path), hint)

    def relocated(self, path: Sequence[str | int], error: ConfigError) -> Issue:
        """The first issue of ``error`` (raised without a location), placed at ``path``."""
        first = error.issues[0]
        return self.issue(path, first.message, first.hint)


def json_path(path: Sequence[str | int]) -> str:
    """``path`` written as a JSON path: ``$.providers.github.scopes[0]``."""
    import json  # only to quote an odd key in a message

    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += "." + part
        else:
            out += "[" + json.dumps(part) + "]"
    return out


def read_document(path: Path) -> Document:
    """Read and parse the YAML file at ``path``."""
    return _parse(_read_text(path), str(path))


def _read_text(path: Path) -> str:
    file = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            Issue(
                "no such file",
                file,
                hint="create it with `reconcile init`, or pass another one with -f",
            )
        ) from None
    except IsADirectoryError:
        raise ConfigError(Issue("is a folder, not a providers.yaml file", file)) from None
    except OSError as error:
        raise ConfigError(Issue(f"cannot read it: {error.strerror or error}", file)) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise ConfigError(
            Issue("the file is not UTF-8 text", file, line, column, hint="save it as UTF-8")
        ) from None


def _parse(text: str, file: str) -> Document:
    doc = Document(file)
    loader_class = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.data = _Builder(loader, doc).build(node, ())
    except yaml.YAMLError as error:
        raise ConfigError(_yaml_issue(error, text, file)) from None
    except RecursionError:
        raise ConfigError(Issue("the document is nested too deeply", file, 1, 1)) from None
    finally:
        loader.dispose()
    return doc


def _mark(node: Any) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    """Turns a composed node tree into plain data, refusing what JSON can't hold."""

    def __init__(self, loader: Any, doc: Document) -> None:
        self.loader = loader
        self.doc = doc
        self.count = 0
        self.active: set[int] = set()
        #: >0 while building merged (``<<``) mappings: their positions never win.
        self.weak = 0

    def _error(
        self, node: Any, message: str, hint: str | None = None, path: NodePath | None = None
    ) -> ConfigError:
        line, column = _mark(node)
        where = json_path(path) if path is not None else None
        return ConfigError(Issue(message, self.doc.file, line, column, where, hint))

    def _record(self, table: dict, path: NodePath, node: Any) -> None:
        if self.weak:
            table.setdefault(path, _mark(node))
        else:
            table[path] = _mark(node)

    def build(self, node: Any, path: NodePath, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self._error(
                node,
                f"the document expands to more than {MAX_NODES} values",
                "YAML aliases are expanded; a providers.yaml is a few hundred lines",
            )
        if depth > MAX_DEPTH:
            raise self._error(node, f"the document is nested more than {MAX_DEPTH} levels deep")
        self._record(self.doc.values, path, node)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR_TAG:
                return node.value
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.YAMLError:
                raise
            except Exception:  # e.g. `!!int abc`: the constructors raise ValueError & co
                raise self._error(
                    node, f"the value is not a valid `{node.tag}`", "remove the tag"
                ) from None
        if id(node) in self.active:
            raise self._error(node, "a YAML alias refers to the collection that contains it")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _SEQ_TAG:
                    raise self._error(node, f"unsupported YAML tag `{node.tag}`")
                return [
                    self.build(item, (*path, index), depth + 1)
                    for index, item in enumerate(node.value)
                ]
            if node.tag != _MAP_TAG:
                raise self._error(node, f"unsupported YAML tag `{node.tag}`")
            return self._mapping(node, path, depth)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: Any, path: NodePath, depth: int) -> dict:
        result: dict[str, Any] = {}
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._error(key_node, "a mapping key must be a plain value, not a collection")
            key = key_node.value
            if key in result:
                first_line, _ = self.doc.keys.get((*path, key), (None, None))
                where = f", first given on line {first_line}" if first_line else ""
                raise self._error(
                    key_node,
                    f"duplicate key `{key}`{where}",
                    "each key may appear only once",
                    (*path, key),
                )
            self._record(self.doc.keys, (*path, key), key_node)
            result[key] = self.build(value_node, (*path, key), depth + 1)
        # YAML merge keys: explicit keys win, then earlier merge sources over later ones.
        for value_node in merges:
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise self._error(source, "`<<` (merge) needs a mapping or a list of mappings")
                self.weak += 1
                try:
                    merged = self.build(source, path, depth + 1)
                finally:
                    self.weak -= 1
                for key, value in merged.items():
                    result.setdefault(key, value)
        self._record(self.doc.values, path, node)
        return result


def _yaml_issue(error: Any, text: str, file: str) -> Issue:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is not None:
        line, column = mark.line + 1, mark.column + 1
    elif getattr(error, "position", None) is not None:  # ReaderError
        before = text[: error.position]
        line = before.count("\n") + 1
        column = error.position - (before.rfind("\n") + 1) + 1
    else:
        line, column = 1, 1
    problem = getattr(error, "problem", None) or getattr(error, "reason", None) or str(error)
    problem = " ".join(str(problem).split())
    message = f"invalid YAML: {problem}"
    context = getattr(error, "context", None)
    context_mark = getattr(error, "context_mark", None)
    if context and getattr(error, "problem", None):
        message += f", {' '.join(context.split())}"
        if context_mark is not None and context_mark.line + 1 != line:
            message += f" that starts on line {context_mark.line + 1}"
    source_lines = text.splitlines()
    source_line = source_lines[line - 1] if 0 < line <= len(source_lines) else ""
    hint = None
    if "\t" in source_line[: max(column, 1)] or "\\t" in problem:
        hint = "indent with spaces; YAML does not allow tabs"
    elif "mapping values are not allowed" in problem:
        hint = "check the indentation, or quote a value that contains `: `"
    elif "expected" in problem and ("key" in problem or "':'" in problem):
        hint = "check the indentation and that every key ends with `:`"
    elif "undefined alias" in problem or "unknown escape" in problem:
        hint = "quote the value"
    elif "special characters are not allowed" in problem or "unacceptable" in problem:
        hint = "remove the control character"
    elif "another document" in problem:
        hint = "providers.yaml holds a single YAML document; remove the `---` separator"
    elif "could not determine a constructor" in problem:
        hint = "remove the YAML tag (`!...`)"
    return Issue(message, file, line, column, None, hint)
