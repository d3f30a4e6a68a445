"""The published JSON Schemas, and jsonschema's errors retold as located :class:`Issue` s.

jsonschema is imported on first validation, never at import.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..catalog import preset_names
from .document import Document, NodePath, json_path
from .errors import Issue
from .references import REFERENCE_HINT
from .syntax import NAME, URL_HINT
from .wording import closest, did_you_mean, shown, type_name

_EXPECTED = {
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a number",
    "null": "nothing",
}


def load_schema(name: str = "providers") -> dict:
    """The published JSON Schema ``schemas/<name>.schema.json`` (a fresh copy)."""
    return copy.deepcopy(_schema(name))


def _schema_text(name: str) -> str:
    # Installed, the schemas are package data (reconciler/schemas/); in a source checkout,
    # which packaging maps that way and git does not, they are at the top (schemas/).
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "schemas", package.parent / "schemas"):
        if (folder / name).is_file():
            return (folder / name).read_text(encoding="utf-8")
    raise FileNotFoundError(f"{name}: not in {package / 'schemas'} (a broken installation)")


@lru_cache(maxsize=4)
def _schema(name: str) -> dict:
    """The schema as validated: for providers.yaml, with the preset names read from the
    catalog, so that adding a preset is adding its YAML file."""
    import json  # not for config.locate (runtime's static read)

    schema = json.loads(_schema_text(f"{name}.schema.json"))
    if name == "providers":
        schema["$defs"]["provider"]["properties"]["preset"]["enum"] = preset_names()
    return schema


@lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator  # ~40 ms: only when a document is not known valid

    return Draft202012Validator(_schema("providers"))


def schema_issues(doc: Document) -> list[Issue]:
    """Everything ``providers.schema.json`` rejects in ``doc``, most relevant first.

    A document already found valid (same content, same schema) is not validated again: the
    verdict is remembered under ``$XDG_CACHE_HOME``, which spares short commands the cost of
    loading jsonschema."""
    marker = _valid_marker(doc)
    if marker is not None and os.path.exists(marker):
        return []
    errors = list(_validator().iter_errors(doc.data))
    if not errors:
        _remember_valid(marker)
        return []
    issues: list[tuple[tuple, Issue]] = []
    suggested: set[tuple[NodePath, str]] = set()
    required: list[tuple[NodePath, str]] = []
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
                noise.add(message + json_path(path))
    seen = set()
    ordered = []
    for _, issue in sorted(issues, key=lambda item: item[0]):
        ident = (issue.line, issue.column, issue.message)
        if ident in seen or (issue.message + (issue.path or "")) in noise:
            continue
        seen.add(ident)
        ordered.append(issue)
    return ordered


def _is_reference(path: Sequence[str | int]) -> bool:
    """True for fields that hold secret references: never echo what the user put there."""
    if not path:
        return False
    last = path[-1]
    return last in ("client_secret", "secret") or (last == "value" and path[0] == "secrets")


def _describe(error: Any, doc: Document) -> list[tuple[NodePath, Issue, int, str | None]]:
    """Human issues for one jsonschema error: (object path, issue, rank, suggested key)."""
    path: NodePath = tuple(error.absolute_path)
    validator = error.validator
    instance = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    in_names = "propertyNames" in error.absolute_schema_path
    rank = 1
    hint: str | None

    if validator == "additionalProperties" and isinstance(instance, dict):
        allowed = list(schema.get("properties", {}))
        out = []
        for key in instance:
            if key in allowed:
                continue
            suggestion = closest(key, allowed)
            hint = did_you_mean(suggestion) or f"allowed here: {', '.join(allowed)}"
            issue = doc.issue((*path, key), f"unknown key `{shown(key)}`", hint, key=True)
            out.append((path, issue, rank, suggestion))
        return out

    if in_names:
        if path and path[-1] == "preset_vars":
            message, hint = f"invalid variable name `{shown(instance)}`", "use lowercase names"
        elif path not in (("providers",), ("secrets",)):
            message = f"invalid key `{shown(instance)}`" if instance else "empty key"
            hint = None
        else:
            message = f"invalid name `{shown(instance)}`"
            hint = (
                "names are lowercase letters, digits, `_` and `-`, start with a letter or "
                "digit, and are at most 63 characters"
            )
            if isinstance(instance, str) and NAME.fullmatch(instance.lower()):
                hint = did_you_mean(instance.lower(), hint)
        return [(path, doc.issue((*path, str(instance)), message, hint, key=True), rank, None)]

    if validator == "required":
        missing = [p for p in error.validator_value if p not in instance]
        out = []
        for name in missing:
            hint = None
            if name == "version":
                hint = "add `version: 1` at the top of the file"
            elif name == "client_id":
                hint = (
                    "the client ID of the OAuth app you registered at the provider (an `mcp` "
                    "server needs none)"
                )
            elif name == "value":
                hint = f"where the secret's value comes from: {REFERENCE_HINT}"
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
            f"unsupported version `{shown(instance)}`",
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
        issue = doc.issue(path, f"expected {wanted}, got {type_name(instance)}", hint)
        return [(path, issue, rank, None)]

    if validator == "enum":
        options = [str(o) for o in error.validator_value]
        suggestion = closest(instance, options)
        if path and path[-1] == "preset":
            message = f"unknown preset `{shown(instance)}`"
            hint = did_you_mean(suggestion, f"known presets: {', '.join(options)}")
        else:
            message = f"`{shown(instance)}` is not one of: {', '.join(options)}"
            hint = did_you_mean(suggestion)
        return [(path, doc.issue(path, message, hint), rank, None)]

    if validator == "pattern":
        hint = schema.get("patternErrorMessage")
        if _is_reference(path):
            message = "not a secret reference (the value is not shown)"
            hint = (
                "never put the secret itself here: keep it in the environment, a file or "
                f"a SOPS file and reference it; {REFERENCE_HINT}"
            )
        elif schema.get("$ref") == "#/$defs/url" or (hint and "https" in hint):
            message = f"`{shown(instance)}` is not an allowed URL"
            hint = URL_HINT
        elif path and path[-1] in ("refresh_before", "keepalive", "request_deadline"):
            message = f"invalid duration `{shown(instance)}`"
            hint = "use a number and a unit s, m, h, d or w, e.g. 30s, 5m, 2h, 7d, 1h30m"
        else:
            message = f"invalid value `{shown(instance)}`"
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
        message = shown(error.message, 200)
    return [(path, doc.issue(path, message), rank, None)]


def _valid_marker(doc: Document) -> str | None:
    """A file named after the document's content and the schema's: it exists once they were
    found to agree."""
    import json  # not for config.locate (runtime's static read)

    try:
        content = json.dumps(doc.data, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return None
    schema = _schema_text("providers.schema.json") + "\0" + " ".join(preset_names())
    digest = hashlib.sha256(schema.encode() + b"\0" + content.encode())
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "oauth-reconciler", "valid", digest.hexdigest())


def _remember_valid(marker: str | None) -> None:
    if marker is None:
        return
    try:
        os.makedirs(os.path.dirname(marker), mode=0o700, exist_ok=True)
        with open(marker, "a"):
            pass
    except OSError:
        pass  # only a speed-up: validation simply runs again next time
