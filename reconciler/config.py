"""Load ``providers.yaml`` into a :class:`~reconciler.model.Desired`.

The file is parsed once, keeping the line and column of every node, validated against
``schemas/providers.schema.json``, merged with the built-in presets, and its secret
references are resolved. Every problem the user can fix is a :class:`ConfigError` whose
message names the file, line, column and JSON path, says what is wrong and, where it can,
how to fix it ("did you mean `scopes`?"). Resolved secret values never appear in a message.

Heavy imports (jsonschema, the vault) happen inside the functions that need them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from .model import Desired, Notify, Provider, Secret, SecretSpec

__all__ = [
    "ConfigError",
    "Issue",
    "PromptRequired",
    "load",
    "load_schema",
    "locate",
    "parse_duration",
    "resolve_reference",
]

DEFAULT_STORE_DIR = "secrets"
DEFAULT_REFRESH_BEFORE = timedelta(minutes=5)
DEFAULT_KEEPALIVE = timedelta(days=7)

#: Most issues listed in one ConfigError (the rest are counted).
MAX_ISSUES = 5
#: Guards against alias bombs and absurd nesting in hand-written YAML.
MAX_NODES = 100_000
MAX_DEPTH = 64
#: A ``file:`` secret holds one value, not a disk image.
MAX_SECRET_FILE = 1 << 20

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED_KEY = re.compile(r"[^.#\s]+(?:\.[^.#\s]+)*")
_DURATION = re.compile(r"(?:[0-9]+[smhdw])+")
_DURATION_PART = re.compile(r"([0-9]+)([smhdw])")
_URL = re.compile(
    r"(?:https://[^\s/?#@]+|http://(?:127\.0\.0\.1|\[::1\]|localhost))"
    r"(?::[0-9]{1,5})?(?:[/?#]\S*)?"
)
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_ENDPOINTS = (
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "device_authorization_endpoint",
    "revocation_endpoint",
    "redirect_uri",
)
_SECRET_METHODS = ("client_secret_basic", "client_secret_post")
_REFERENCE_HINT = "use env:NAME, file:PATH, sops:PATH#dotted.key or prompt"
_URL_HINT = "endpoints must use https://; http:// only on 127.0.0.1, [::1] or localhost"


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Issue:
    """One problem in a config file, with where it is and how to fix it."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file is not None:
            location = self.file
            if self.line is not None:
                location += f":{self.line}:{self.column or 1}"
            parts.append(location)
        if self.path:
            parts.append(self.path)
        parts.append(self.message + (f" ({self.hint})" if self.hint else ""))
        return ": ".join(parts)


class ConfigError(Exception):
    """An invalid config or an unresolvable reference.

    ``str()`` is one paragraph: one ``<file>:<line>:<col>: <json path>: <what> (<hint>)``
    line per issue, the most relevant first. ``issues`` holds them as :class:`Issue`.
    """

    def __init__(self, issues: str | Issue | Iterable[Issue]) -> None:
        if isinstance(issues, str):
            issues = (Issue(issues),)
        elif isinstance(issues, Issue):
            issues = (issues,)
        self.issues: tuple[Issue, ...] = tuple(issues) or (Issue("invalid configuration"),)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)

    # The first (most relevant) issue's location, for callers that show one.
    @property
    def file(self) -> str | None:
        return self.issues[0].file

    @property
    def line(self) -> int | None:
        return self.issues[0].line

    @property
    def column(self) -> int | None:
        return self.issues[0].column

    @property
    def path(self) -> str | None:
        return self.issues[0].path

    @property
    def hint(self) -> str | None:
        return self.issues[0].hint


class PromptRequired(ConfigError):
    """The reference is ``prompt``: there is no value to read, it must be asked for."""


# --------------------------------------------------------------------------- YAML with positions

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"

PathT = tuple[str | int, ...]


class _Document:
    """Plain data built from a YAML node tree, plus the position of every node."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.data: Any = None
        self.values: dict[PathT, tuple[int, int]] = {}
        self.keys: dict[PathT, tuple[int, int]] = {}

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
        line, column = self.position(path, key=key)
        return Issue(message, self.file, line, column, _json_path(path), hint)


def _json_path(path: Sequence[str | int]) -> str:
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += "." + part
        else:
            import json

            out += "[" + json.dumps(part) + "]"
    return out


def _mark(node: Any) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    """Turns a composed node tree into plain data, refusing what JSON can't hold."""

    def __init__(self, loader: Any, doc: _Document) -> None:
        self.loader = loader
        self.doc = doc
        self.count = 0
        self.active: set[int] = set()
        #: >0 while building merged (``<<``) mappings: their positions never win.
        self.weak = 0

    def _error(
        self, node: Any, message: str, hint: str | None = None, path: PathT | None = None
    ) -> ConfigError:
        line, column = _mark(node)
        where = _json_path(path) if path is not None else None
        return ConfigError(Issue(message, self.doc.file, line, column, where, hint))

    def _record(self, table: dict, path: PathT, node: Any) -> None:
        if self.weak:
            table.setdefault(path, _mark(node))
        else:
            table[path] = _mark(node)

    def build(self, node: Any, path: PathT, depth: int = 0) -> Any:
        import yaml

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

    def _mapping(self, node: Any, path: PathT, depth: int) -> dict:
        import yaml

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


def _parse(text: str, file: str) -> _Document:
    import yaml

    doc = _Document(file)
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


def _read(path: Path) -> tuple[str, str]:
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
        return raw.decode("utf-8-sig"), file
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise ConfigError(
            Issue("the file is not UTF-8 text", file, line, column, hint="save it as UTF-8")
        ) from None


# --------------------------------------------------------------------------- schema


def _schema_text(name: str) -> str:
    from importlib import resources

    try:
        return resources.files("reconciler.schemas").joinpath(name).read_text(encoding="utf-8")
    except ModuleNotFoundError:
        # A source checkout: packaging maps schemas/ to reconciler.schemas, git does not.
        here = Path(__file__).resolve().parent.parent / "schemas" / name
        return here.read_text(encoding="utf-8")


@lru_cache(maxsize=4)
def _schema(name: str) -> dict:
    import json

    return json.loads(_schema_text(f"{name}.schema.json"))


def load_schema(name: str = "providers") -> dict:
    """The published JSON Schema ``schemas/<name>.schema.json`` (a fresh copy)."""
    import copy

    return copy.deepcopy(_schema(name))


@lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(_schema("providers"))


def _closest(word: object, candidates: Iterable[str]) -> str | None:
    import difflib

    candidates = list(candidates)
    text = str(word)
    lowered = {c.lower(): c for c in candidates}
    if text.lower() in lowered:
        return lowered[text.lower()]
    matches = difflib.get_close_matches(text, candidates, n=1, cutoff=0.6)
    if not matches:
        matches = difflib.get_close_matches(text.lower(), list(lowered), n=1, cutoff=0.6)
        matches = [lowered[m] for m in matches]
    return matches[0] if matches else None


def _type_name(value: object) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a YAML {type(value).__name__}"


_EXPECTED = {
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a number",
    "null": "nothing",
}


def _shown(value: object, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_reference(path: Sequence[str | int]) -> bool:
    """True for fields that hold secret references: never echo what the user put there."""
    if not path:
        return False
    last = path[-1]
    return last in ("client_secret", "secret") or (last == "value" and path[0] == "secrets")


def _schema_issues(doc: _Document) -> list[Issue]:
    errors = list(_validator().iter_errors(doc.data))
    if not errors:
        return []
    issues: list[tuple[tuple, Issue]] = []
    suggested: set[tuple[PathT, str]] = set()
    required: list[tuple[PathT, str]] = []
    for error in errors:
        for path, issue, rank, suggestion in _describe(error, doc):
            if suggestion is not None:
                suggested.add((path, suggestion))
            if error.validator == "required":
                required.append((path, issue.message))
            issues.append(((rank, issue.line or 0, issue.column or 0), issue))
    # "unknown key `clientid` (did you mean `client_id`?)" makes "missing `client_id`" noise.
    noise = set()
    for path, message in required:
        for suggested_path, suggestion in suggested:
            if suggested_path == path and f"`{suggestion}`" in message:
                noise.add(message + _json_path(path))
    seen = set()
    ordered = []
    for _, issue in sorted(issues, key=lambda item: item[0]):
        ident = (issue.line, issue.column, issue.message)
        if ident in seen or (issue.message + (issue.path or "")) in noise:
            continue
        seen.add(ident)
        ordered.append(issue)
    return ordered


def _describe(error: Any, doc: _Document) -> list[tuple[PathT, Issue, int, str | None]]:
    """Human issues for one jsonschema error: (object path, issue, rank, suggested key)."""
    path: PathT = tuple(error.absolute_path)
    validator = error.validator
    instance = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    in_names = "propertyNames" in error.absolute_schema_path
    rank = 1

    if validator == "additionalProperties" and isinstance(instance, dict):
        allowed = list(schema.get("properties", {}))
        out = []
        for key in instance:
            if key in allowed:
                continue
            suggestion = _closest(key, allowed)
            hint = (
                f"did you mean `{suggestion}`?"
                if suggestion
                else f"allowed here: {', '.join(allowed)}"
            )
            issue = doc.issue((*path, key), f"unknown key `{_shown(key)}`", hint, key=True)
            out.append((path, issue, rank, suggestion))
        return out

    if in_names:
        if path and path[-1] == "preset_vars":
            message, hint = f"invalid variable name `{_shown(instance)}`", "use lowercase names"
        elif path not in (("providers",), ("secrets",)):
            message = f"invalid key `{_shown(instance)}`" if instance else "empty key"
            hint = None
        else:
            message = f"invalid name `{_shown(instance)}`"
            hint = (
                "names are lowercase letters, digits, `_` and `-`, start with a letter or "
                "digit, and are at most 63 characters"
            )
            if isinstance(instance, str) and _NAME.fullmatch(instance.lower()):
                hint = f"did you mean `{instance.lower()}`? " + hint
        return [(path, doc.issue((*path, str(instance)), message, hint, key=True), rank, None)]

    if validator == "required":
        missing = [p for p in error.validator_value if p not in instance]
        out = []
        for name in missing:
            hint = None
            if name == "version":
                hint = "add `version: 1` at the top of the file"
            elif name == "client_id":
                hint = "the client ID of the OAuth app you registered at the provider"
            elif name == "value":
                hint = f"where the secret's value comes from: {_REFERENCE_HINT}"
            elif name == "webhook":
                hint = "the https:// URL that receives notifications"
            issue = doc.issue(path, f"missing required key `{name}`", hint, key=True)
            out.append((path, issue, rank, None))
        return out

    if validator == "dependentRequired":
        out = []
        for key, needs in error.validator_value.items():
            if key in instance:
                for need in needs:
                    if need not in instance:
                        issue = doc.issue(
                            (*path, key),
                            f"`{key}` needs `{need}`",
                            f"add `{need}: <name>` or remove `{key}`",
                            key=True,
                        )
                        out.append((path, issue, rank, None))
        return out

    if validator == "const" and path == ("version",):
        issue = doc.issue(
            path,
            f"unsupported version `{_shown(instance)}`",
            "this reconciler reads `version: 1`",
        )
        return [(path, issue, 0, None)]

    if validator == "type":
        expected = error.validator_value
        expected = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_EXPECTED.get(e, e) for e in expected if e != "null")
        hint = None
        if "string" in expected and isinstance(instance, bool | int | float):
            hint = "quote the value to make it a string"
        elif "array" in expected and isinstance(instance, str):
            hint = "write a list, e.g. [a, b]"
        elif instance is None and "object" in expected:
            hint = "give it entries, or remove the key"
        elif not path:
            hint = "a providers.yaml is a mapping starting with `version: 1`"
        issue = doc.issue(path, f"expected {wanted}, got {_type_name(instance)}", hint)
        return [(path, issue, rank, None)]

    if validator == "enum":
        options = [str(o) for o in error.validator_value]
        suggestion = _closest(instance, options)
        if path and path[-1] == "preset":
            message = f"unknown preset `{_shown(instance)}`"
            hint = (f"did you mean `{suggestion}`? " if suggestion else "") + (
                f"known presets: {', '.join(options)}"
            )
        else:
            message = f"`{_shown(instance)}` is not one of: {', '.join(options)}"
            hint = f"did you mean `{suggestion}`?" if suggestion else None
        return [(path, doc.issue(path, message, hint), rank, None)]

    if validator == "pattern":
        hint = schema.get("patternErrorMessage")
        if _is_reference(path):
            message = "not a secret reference (the value is not shown)"
            hint = (
                "never put the secret itself here: keep it in the environment, a file or "
                f"a SOPS file and reference it; {_REFERENCE_HINT}"
            )
        elif schema.get("$ref") == "#/$defs/url" or (hint and "https" in hint):
            message = f"`{_shown(instance)}` is not an allowed URL"
            hint = _URL_HINT
        elif path and path[-1] in ("refresh_before", "keepalive"):
            message = f"invalid duration `{_shown(instance)}`"
            hint = "use a number and a unit s, m, h, d or w, e.g. 30s, 5m, 2h, 7d, 1h30m"
        else:
            message = f"invalid value `{_shown(instance)}`"
            if hint:
                hint = hint[0].lower() + hint[1:].rstrip(".")
        return [(path, doc.issue(path, message, hint), rank, None)]

    if validator == "minLength":
        return [(path, doc.issue(path, "must not be empty"), rank, None)]
    if validator == "maxLength":
        message = f"is too long (at most {error.validator_value} characters)"
        return [(path, doc.issue(path, message), rank, None)]
    if validator == "minItems":
        message = f"needs at least {error.validator_value} item(s)"
        return [(path, doc.issue(path, message), rank, None)]
    if validator == "uniqueItems":
        return [(path, doc.issue(path, "has duplicate items", "list each item once"), rank, None)]
    # Anything else: jsonschema's wording, minus the instance for secret fields.
    message = f"fails the `{validator}` check"
    if not _is_reference(path):
        message = _shown(error.message, 200)
    return [(path, doc.issue(path, message), rank, None)]


# --------------------------------------------------------------------------- references


def _expand(raw: str, base_dir: Path, environ: Mapping[str, str]) -> Path:
    if raw == "~" or raw.startswith("~/"):
        home = environ.get("HOME") or os.path.expanduser("~")
        path = Path(home) / raw[2:] if raw != "~" else Path(home)
    else:
        path = Path(os.path.expanduser(raw))
    return path if path.is_absolute() else Path(base_dir) / path


def _parse_reference(ref: object, owner: str) -> tuple[str, str, str | None]:
    """``(kind, target, key)`` of a reference, or ConfigError without echoing it."""
    if isinstance(ref, str):
        if ref == "prompt":
            return "prompt", "", None
        scheme, _, rest = ref.partition(":")
        if scheme == "env" and _ENV_NAME.fullmatch(rest):
            return "env", rest, None
        if scheme == "file" and rest:
            return "file", rest, None
        if scheme == "sops":
            target, _, key = rest.rpartition("#")
            if target and _DOTTED_KEY.fullmatch(key):
                return "sops", target, key
    raise ConfigError(
        Issue(
            f"{owner}: not a secret reference (the value is not shown)",
            hint=_REFERENCE_HINT,
        )
    )


def resolve_reference(
    ref: str,
    *,
    base_dir: Path,
    owner: str,
    environ: Mapping[str, str],
    identities: list | None = None,
) -> Secret:
    """Read the value a secret reference points at.

    ``owner`` names what the reference belongs to in error messages, e.g. ``"secret
    `openai`"``. ``file:`` and ``sops:`` paths are relative to ``base_dir`` (the config's
    folder), with ``~`` expanded. Raises :class:`ConfigError` naming the owner and the
    reference (never the value) when it can't be resolved or is empty, and
    :class:`PromptRequired` for ``prompt``.
    """
    kind, target, key = _parse_reference(ref, owner)
    where = f"reference `{ref}`"  # never the value
    if kind == "prompt":
        raise PromptRequired(
            Issue(
                f"{owner}: `prompt` has no stored value",
                hint="it is asked for interactively or written over HTTP",
            )
        )
    if kind == "env":
        value = environ.get(target)
        if value is None:
            raise ConfigError(
                Issue(
                    f"{owner}: {where}: environment variable {target} is not set",
                    hint=f"export {target}=..., or change the reference",
                )
            )
        if not value:
            raise ConfigError(
                Issue(
                    f"{owner}: {where}: environment variable {target} is empty",
                    hint="set it to the secret's value",
                )
            )
        return Secret(value)
    path = _expand(target, base_dir, environ)
    if kind == "file":
        return Secret(_read_secret_file(path, owner, where))
    return Secret(_read_sops_value(path, key or "", owner, where, identities))


def _read_secret_file(path: Path, owner: str, where: str) -> str:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SECRET_FILE + 1)
    except FileNotFoundError:
        raise ConfigError(
            Issue(
                f"{owner}: {where}: file {path} does not exist",
                hint="create it holding just the value, or fix the path; relative paths "
                "start at the config file's folder",
            )
        ) from None
    except IsADirectoryError:
        raise ConfigError(Issue(f"{owner}: {where}: {path} is a folder, not a file")) from None
    except ValueError:  # e.g. a NUL byte in the path
        raise ConfigError(Issue(f"{owner}: {where}: not a usable file path")) from None
    except OSError as error:
        raise ConfigError(
            Issue(
                f"{owner}: {where}: cannot read {path}: {error.strerror or type(error).__name__}",
                hint="check the file's permissions",
            )
        ) from None
    if len(raw) > MAX_SECRET_FILE:
        raise ConfigError(
            Issue(
                f"{owner}: {where}: {path} is larger than 1 MiB",
                hint="a secret file holds just the value",
            )
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(Issue(f"{owner}: {where}: {path} is not UTF-8 text")) from None
    text = text.rstrip("\r\n")
    if not text:
        raise ConfigError(
            Issue(
                f"{owner}: {where}: file {path} is empty",
                hint="write the secret's value into it",
            )
        )
    return text


def _read_sops_value(path: Path, key: str, owner: str, where: str, identities: list | None) -> str:
    if not path.is_file():
        raise ConfigError(
            Issue(
                f"{owner}: {where}: SOPS file {path} does not exist",
                hint="fix the path; relative paths start at the config file's folder",
            )
        )
    try:
        from .vault.store import decrypt_file
    except ImportError as error:  # pragma: no cover - the vault ships with the package
        raise ConfigError(
            Issue(f"{owner}: {where}: cannot read SOPS files here ({error})")
        ) from None
    try:
        document = decrypt_file(path, identities)
    except ConfigError:
        raise
    except Exception as error:
        detail = _shown(str(error), 200) or type(error).__name__
        raise ConfigError(
            Issue(
                f"{owner}: {where}: cannot decrypt {path}: {detail}",
                hint="make sure an age identity for it is available: SOPS_AGE_KEY, "
                "SOPS_AGE_KEY_FILE or ~/.config/sops/age/keys.txt",
            )
        ) from None
    node: object = document
    walked: list[str] = []
    for part in key.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            at = ".".join(walked) or "the top level"
            hint = None
            if isinstance(node, Mapping):
                keys = [str(k) for k in node if k != "sops"]
                suggestion = _closest(part, keys)
                hint = (f"did you mean `{suggestion}`? " if suggestion else "") + (
                    f"keys at {at}: {', '.join(keys[:12]) or 'none'}"
                )
            raise ConfigError(Issue(f"{owner}: {where}: {path} has no key `{key}`", hint=hint))
        walked.append(part)
    if isinstance(node, Secret):
        node = node.reveal()
    if isinstance(node, bool) or node is None or isinstance(node, Mapping | list):
        kind = "nothing" if node is None else _type_name(node)
        raise ConfigError(
            Issue(
                f"{owner}: {where}: `{key}` in {path} is {kind}, not a value",
                hint="point the reference at a single string value",
            )
        )
    value = node if isinstance(node, str) else str(node)
    if not value:
        raise ConfigError(Issue(f"{owner}: {where}: `{key}` in {path} is empty"))
    return value


# --------------------------------------------------------------------------- building Desired


def parse_duration(text: str) -> timedelta:
    """``30s``, ``5m``, ``2h``, ``7d``, ``1w``, or combined like ``1h30m``."""
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 2h, 7d)")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def _param_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _merge_params(preset: Mapping | None, explicit: Mapping | None) -> dict[str, str]:
    merged: dict[str, str] = {k: _param_value(v) for k, v in (preset or {}).items()}
    for key, value in (explicit or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _param_value(value)
    return merged


def _provider(name: str, entry: dict, doc: _Document, issues: list[Issue]) -> Provider | None:
    from .catalog import UnknownPreset, load_preset

    here = ("providers", name)
    preset: dict = {}
    preset_name = entry.get("preset")
    if preset_name is not None:
        try:
            preset = load_preset(preset_name)
        except UnknownPreset as error:
            hint = (f"did you mean `{error.suggestion}`? " if error.suggestion else "") + (
                f"known presets: {', '.join(error.known)}"
            )
            issues.append(doc.issue((*here, "preset"), f"unknown preset `{preset_name}`", hint))
            return None

    variables: dict[str, str] = dict(preset.get("vars") or {})
    ok = True
    for var, value in (entry.get("preset_vars") or {}).items():
        if var not in variables:
            known = list(variables)
            suggestion = _closest(var, known)
            if suggestion:
                hint = f"did you mean `{suggestion}`?"
            elif known:
                hint = f"its variables: {', '.join(known)}"
            else:
                hint = "it has no variables; remove preset_vars"
            issues.append(
                doc.issue(
                    (*here, "preset_vars", var),
                    f"preset `{preset_name}` has no variable `{var}`",
                    hint,
                    key=True,
                )
            )
            ok = False
        else:
            variables[var] = value

    def fill(text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: variables.get(m[1], m[0]), text)

    endpoints: dict[str, str | None] = {}
    for field in _ENDPOINTS:
        explicit = field in entry
        value = entry.get(field) if explicit else preset.get(field)
        if value is None:
            endpoints[field] = None
            continue
        value = fill(value)
        where = (*here, field) if explicit else (*here, "preset")
        leftover = _PLACEHOLDER.search(value)
        if leftover:
            issues.append(
                doc.issue(
                    where,
                    f"{field} has an unfilled placeholder `{leftover[0]}`",
                    f"set preset_vars: {{{leftover[1]}: ...}}"
                    if preset
                    else f"replace `{leftover[0]}` with the actual value",
                )
            )
            ok = False
        elif not _URL.fullmatch(value):
            shown = f"`{_shown(value)}`" if explicit else f"{field} `{_shown(value)}`"
            issues.append(doc.issue(where, f"{shown} is not an allowed URL", _URL_HINT))
            ok = False
        endpoints[field] = value

    client_secret = entry.get("client_secret")
    if client_secret is not None:
        try:
            _parse_reference(client_secret, f"provider `{name}` client_secret")
        except ConfigError as error:
            issues.append(
                doc.issue((*here, "client_secret"), error.issues[0].message, _REFERENCE_HINT)
            )
            ok = False

    flow = entry.get("flow", "authorization_code")
    if "token_endpoint_auth_method" in entry:
        method = entry["token_endpoint_auth_method"]
    elif client_secret is not None:
        preset_method = preset.get("token_endpoint_auth_method")
        method = preset_method if preset_method in _SECRET_METHODS else "client_secret_basic"
    else:
        method = "none"

    if method in _SECRET_METHODS and client_secret is None:
        issues.append(
            doc.issue(
                (*here, "token_endpoint_auth_method"),
                f"token_endpoint_auth_method `{method}` needs a client_secret",
                "add client_secret: env:NAME, file:PATH or sops:PATH#key, or use `none` "
                "for a public client",
                key=True,
            )
        )
        ok = False
    if flow == "client_credentials" and client_secret is None:
        issues.append(
            doc.issue(
                (*here, "flow"),
                "flow `client_credentials` needs a client_secret",
                "add client_secret: env:NAME, file:PATH or sops:PATH#key",
            )
        )
        ok = False

    issuer = endpoints["issuer"]
    how = "add it, or an issuer for discovery" + ("" if preset else ", or use a preset")
    if endpoints["token_endpoint"] is None and issuer is None:
        issues.append(doc.issue(here, "no token_endpoint", how, key=True))
        ok = False
    if flow == "authorization_code" and endpoints["authorization_endpoint"] is None and not issuer:
        issues.append(
            doc.issue(
                here, "flow `authorization_code` needs an authorization_endpoint", how, key=True
            )
        )
        ok = False
    if flow == "device_code" and endpoints["device_authorization_endpoint"] is None and not issuer:
        hint = (
            f"preset `{preset_name}` has no device flow; use flow: authorization_code"
            if preset
            else "add device_authorization_endpoint, or an issuer for discovery"
        )
        issues.append(
            doc.issue(
                (*here, "flow"), "flow `device_code` needs a device_authorization_endpoint", hint
            )
        )
        ok = False
    if not ok:
        return None

    scopes = entry["scopes"] if "scopes" in entry else preset.get("default_scopes") or ()
    extras = {
        key: fill(value) if isinstance(value, str) else value
        for key, value in (preset.get("extras") or {}).items()
    }
    return Provider(
        name=name,
        client_id=entry["client_id"],
        flow=flow,
        scopes=tuple(scopes),
        client_secret_ref=client_secret,
        preset=preset_name,
        issuer=issuer,
        authorization_endpoint=endpoints["authorization_endpoint"],
        token_endpoint=endpoints["token_endpoint"],
        device_authorization_endpoint=endpoints["device_authorization_endpoint"],
        revocation_endpoint=endpoints["revocation_endpoint"],
        token_endpoint_auth_method=method,
        scope_separator=entry.get("scope_separator", preset.get("scope_separator", " ")),
        pkce=entry.get("pkce", preset.get("pkce", True)),
        authorization_params=_merge_params(
            preset.get("authorization_params"), entry.get("authorization_params")
        ),
        token_params=_merge_params(preset.get("token_params"), entry.get("token_params")),
        redirect_uri=endpoints["redirect_uri"],
        quirks=tuple(preset.get("quirks") or ()),
        extras=extras,
    )


def _recipients(
    names: list[str],
    store: Mapping,
    store_dir: Path,
    doc: _Document,
    issues: list[Issue],
) -> dict[str, tuple[str, ...]]:
    if not names:
        return {}
    if store.get("recipients"):
        declared = tuple(store["recipients"])
        return {name: declared for name in names}
    try:
        from .vault import keys

        creation_rule_recipients = getattr(keys, "creation_rule_recipients", None) or (
            keys.rule_recipients
        )
    except (ImportError, AttributeError) as error:
        issues.append(
            doc.issue(
                ("store",),
                f"no store.recipients, and .sops.yaml rules cannot be read here ({error})",
                "add store.recipients: [age1...]",
                key=True,
            )
        )
        return {}
    result: dict[str, tuple[str, ...]] = {}
    missing: list[str] = []
    for name in names:
        target = store_dir / f"{name}.sops.yaml"
        try:
            found = creation_rule_recipients(target)
        except ConfigError as error:
            issues.extend(error.issues)
            return result
        except Exception as error:
            issues.append(
                doc.issue(
                    ("store",),
                    f"cannot read the .sops.yaml creation rules for {target}: "
                    f"{_shown(str(error), 200) or type(error).__name__}",
                    "fix .sops.yaml, or add store.recipients",
                    key=True,
                )
            )
            return result
        if found:
            result[name] = tuple(found)
        else:
            missing.append(name)
    if missing:
        first = missing[0]
        section = "providers" if (("providers", first)) in doc.keys else "secrets"
        listed = ", ".join(f"`{n}`" for n in missing)
        relative = store.get("dir", DEFAULT_STORE_DIR)
        issues.append(
            doc.issue(
                (section, first),
                f"no recipients to encrypt {listed} to: store.recipients is not set and no "
                f".sops.yaml creation rule matches {relative}/{first}.sops.yaml",
                "add store.recipients: [age1...] to this file, or a .sops.yaml creation_rules "
                "entry whose path_regex matches the grant files; `reconcile init` writes one",
                key=True,
            )
        )
    return result


def _duration(
    doc: _Document, defaults: Mapping, key: str, default: timedelta, issues: list
) -> timedelta:
    if key not in defaults:
        return default
    try:
        value = parse_duration(defaults[key])
    except ValueError:
        issues.append(
            doc.issue(
                ("defaults", key),
                f"invalid duration `{_shown(defaults[key])}`",
                "use a number and a unit s, m, h, d or w, e.g. 30s, 5m, 2h, 7d",
            )
        )
        return default
    if key == "keepalive" and value <= timedelta(0):
        issues.append(doc.issue(("defaults", key), "keepalive must be longer than 0s"))
    return value


def _store_dir(config_path: Path, store: Mapping) -> Path:
    raw = store.get("dir", DEFAULT_STORE_DIR)
    folder = Path(os.path.expanduser(raw))
    base = Path(os.path.abspath(config_path)).parent
    return Path(os.path.normpath(base / folder))


def _raise(issues: list[Issue], file: str) -> None:
    if not issues:
        return
    shown = issues[:MAX_ISSUES]
    if len(issues) > MAX_ISSUES:
        more = len(issues) - MAX_ISSUES
        shown.append(Issue(f"and {more} more problem(s); fix these first", file))
    raise ConfigError(shown)


def load(
    path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    resolve_values: bool = True,
    identities: list | None = None,
) -> Desired:
    """Read, validate and resolve ``providers.yaml``.

    With ``resolve_values``, each ``secrets.<name>.value`` reference is read (``prompt``
    gives ``None``; nobody is asked here). Client secrets and the notify secret stay
    references. Raises :class:`ConfigError` for anything the user must fix.
    """
    path = Path(path)
    environ = os.environ if environ is None else environ
    text, file = _read(path)
    doc = _parse(text, file)
    if doc.data is None:
        raise ConfigError(Issue("the file is empty", file, 1, 1, "$", "start it with `version: 1`"))
    _raise(_schema_issues(doc), file)

    data: dict = doc.data
    issues: list[Issue] = []
    store = data.get("store") or {}
    defaults = data.get("defaults") or {}
    provider_entries: dict = data.get("providers") or {}
    secret_entries: dict = data.get("secrets") or {}
    base_dir = Path(os.path.abspath(path)).parent

    for section, entries in (("providers", provider_entries), ("secrets", secret_entries)):
        for name in entries:
            if not _NAME.fullmatch(name):
                issues.append(
                    doc.issue((section, name), f"invalid name `{_shown(name)}`", key=True)
                )
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
        provider = _provider(name, entry, doc, issues)
        if provider is not None:
            providers[name] = provider

    secrets: dict[str, SecretSpec] = {}
    for name, entry in secret_entries.items():
        ref = entry["value"]
        owner = f"secret `{name}`"
        value: Secret | None = None
        try:
            kind, _, _ = _parse_reference(ref, owner)
            if resolve_values and kind != "prompt":
                value = resolve_reference(
                    ref, base_dir=base_dir, owner=owner, environ=environ, identities=identities
                )
        except ConfigError as error:
            first = error.issues[0]
            issues.append(doc.issue(("secrets", name, "value"), first.message, first.hint))
            continue
        secrets[name] = SecretSpec(name=name, ref=ref, value=value)

    notify = None
    if "notify" in data:
        secret_ref = data["notify"].get("secret")
        if secret_ref is not None:
            try:
                _parse_reference(secret_ref, "notify secret")
            except ConfigError as error:
                issues.append(
                    doc.issue(("notify", "secret"), error.issues[0].message, _REFERENCE_HINT)
                )
        webhook = data["notify"]["webhook"]
        if not _URL.fullmatch(webhook):
            issues.append(
                doc.issue(
                    ("notify", "webhook"), f"`{_shown(webhook)}` is not an allowed URL", _URL_HINT
                )
            )
        notify = Notify(webhook=webhook, secret_ref=secret_ref)

    refresh_before = _duration(doc, defaults, "refresh_before", DEFAULT_REFRESH_BEFORE, issues)
    keepalive = _duration(doc, defaults, "keepalive", DEFAULT_KEEPALIVE, issues)
    store_dir = _store_dir(path, store)
    names = sorted({*provider_entries, *secret_entries})
    recipients = _recipients(names, store, store_dir, doc, issues) if not issues else {}
    _raise(issues, file)

    return Desired(
        path=Path(os.path.abspath(path)),
        store_dir=store_dir,
        recipients=recipients,
        refresh_before=refresh_before,
        keepalive=keepalive,
        providers=providers,
        secrets=secrets,
        notify=notify,
    )


def locate(path: Path) -> tuple[Path, list[str]]:
    """The store folder and the declared names, without schema validation or references.

    The fast path for ``reconcile token``: one YAML parse, no jsonschema, no vault.
    """
    path = Path(path)
    text, file = _read(path)
    data = _parse(text, file).data
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
        names.update(name for name in entries if _NAME.fullmatch(name))
    return _store_dir(path, store), sorted(names)
