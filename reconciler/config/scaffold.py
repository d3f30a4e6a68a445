"""`reconcile init`: an age identity, `.sops.yaml`, a starter `providers.yaml`, `.gitignore`."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..model import ENCRYPTED_FIELDS
from ..vault.files import IGNORED_PATTERNS, atomic_write
from ..vault.sops.keys import generate_identity, load_identities
from ..vault.sops.rules import creation_rule_for

STARTER_CONFIG = """\
# Desired state for oauth-reconciler: the OAuth grants and API keys your scripts need.
# Run `reconcile plan` to see what would change and `reconcile apply` to make it so.
# Reference: the README and schemas/providers.schema.json of oauth-reconciler;
# `reconcile presets` lists the built-in providers.
version: 1
store:
  dir: {store_dir}
  # Recipients come from the creation rule in .sops.yaml; list them here to override:
  # recipients: [age1...]
defaults:
  refresh_before: 5m
  keepalive: 7d
# Uncomment these examples (remove the leading "# ") and edit them:
# providers:
#   github:
#     preset: github
#     client_id: Iv1.0123456789abcdef  # your OAuth app's client ID
#     scopes: [repo, read:user]
#     flow: device_code                # a code to enter at github.com/login/device
#   linear-mcp:
#     mcp: https://mcp.linear.app/mcp  # a remote MCP server: its OAuth is discovered
# secrets:
#   openai:
#     value: prompt                    # asked for by `reconcile apply`; or env:OPENAI_API_KEY
"""

#: One creation rule, as a list item; SOPS_CONFIG indents it under ``creation_rules``.
SOPS_RULE = """\
- path_regex: {path_regex}
  encrypted_regex: {encrypted_regex}
  age: {recipient}
"""
SOPS_CONFIG = "creation_rules:\n" + textwrap.indent(SOPS_RULE, "  ")

GITIGNORE_HEADER = "# oauth-reconciler: lock and temporary files beside the grant files"


@dataclass
class Initialised:
    """What `reconcile init` did, file by file, and what it left for the user to do."""

    files: dict[Path, str] = field(default_factory=dict)
    todo: list[str] = field(default_factory=list)


def initialise(
    config_path: Path, environ: Mapping[str, str], store_dir: str = "secrets"
) -> Initialised:
    """Create the missing pieces of a project around ``config_path``; never overwrite, but add
    a creation rule for the grant files to an existing ``.sops.yaml`` that has none."""

    folder = config_path.parent
    done = Initialised()
    created = done.files
    identities = load_identities(environ)
    if identities:
        recipient = str(identities[0].to_public())
    else:
        key_file = default_key_file(environ)
        recipient = generate_identity(key_file)
        created[key_file] = "created age identity (keep it secret, back it up)"

    sops_yaml = folder / ".sops.yaml"
    if sops_yaml.exists():
        created[sops_yaml], todo = _ensure_rule(sops_yaml, store_dir, recipient)
        done.todo += todo
    else:
        atomic_write(sops_yaml, SOPS_CONFIG.format(**_rule_fields(store_dir, recipient)).encode())
        created[sops_yaml] = f"created, encrypting to {recipient}"

    if config_path.exists():
        created[config_path] = "kept existing"
    else:
        atomic_write(config_path, STARTER_CONFIG.format(store_dir=store_dir).encode())
        created[config_path] = "created"

    gitignore = folder / ".gitignore"
    existing = gitignore.read_text().splitlines() if gitignore.exists() else []
    missing = [line for line in ignored_patterns(store_dir) if line not in existing]
    if missing:
        header = [] if GITIGNORE_HEADER in existing else [GITIGNORE_HEADER]
        text = "\n".join([*existing, *header, *missing]) + "\n"
        atomic_write(gitignore, text.encode())
        created[gitignore] = "updated" if existing else "created"
    return done


def _rule_fields(store_dir: str, recipient: str) -> dict[str, str]:
    """SOPS_RULE's fields, as YAML scalars."""
    return {
        "path_regex": f"{store_dir}/.*\\.sops\\.yaml$",
        "encrypted_regex": "'^(" + "|".join(ENCRYPTED_FIELDS) + ")$'",
        "recipient": recipient,
    }


def _ensure_rule(sops_yaml: Path, store_dir: str, recipient: str) -> tuple[str, list[str]]:
    """Keep an existing ``.sops.yaml``; when none of its creation rules covers the grant files,
    append one, provided the result parses to exactly the old rules plus the new one. Else
    (an unusual layout) leave the file alone and say which lines to add."""
    probe = sops_yaml.parent / store_dir / "grant.sops.yaml"
    rule = creation_rule_for(probe, sops_yaml)
    if rule is not None:
        return f"kept existing (creation rule {rule.index + 1} covers {store_dir}/)", []
    fields = _rule_fields(store_dir, recipient)
    new_rule = yaml.safe_load(SOPS_RULE.format(**fields))
    text = sops_yaml.read_text()
    loaded = yaml.safe_load(text) or {}
    if isinstance(loaded, dict):
        rules = loaded.get("creation_rules")
        if "creation_rules" not in loaded:
            addition = SOPS_CONFIG.format(**fields)
        else:
            addition = textwrap.indent(SOPS_RULE.format(**fields), _item_indent(text))
        updated = text + ("" if text.endswith("\n") or not text else "\n") + addition
        expected = {**loaded, "creation_rules": [*(rules or []), *new_rule]}
        if _parses_to(updated, expected):
            atomic_write(sops_yaml, updated.encode())
            return f"added a creation rule for {store_dir}/, encrypting to {recipient}", []
    lines = textwrap.indent(SOPS_RULE.format(**fields), "  ")
    return "kept existing, unchanged", [
        f"{sops_yaml} has no creation rule for the grant files in {store_dir}/, and its layout "
        f"is not one reconcile edits. Add these lines under `creation_rules:`, first or last:\n"
        f"{lines}"
    ]


def _item_indent(text: str) -> str:
    """The indentation of the list items under a block ``creation_rules:``."""
    lines = text.splitlines()
    for at, line in enumerate(lines):
        if line.startswith("creation_rules:"):
            for item in lines[at + 1 :]:
                if item.lstrip().startswith("- "):
                    return item[: len(item) - len(item.lstrip())]
    return "  "


def _parses_to(text: str, expected: object) -> bool:
    try:
        return yaml.safe_load(text) == expected
    except yaml.YAMLError:
        return False


def ignored_patterns(store_dir: str) -> list[str]:

    return [f"{store_dir}/{pattern}" for pattern in IGNORED_PATTERNS]


def default_key_file(environ: Mapping[str, str]) -> Path:
    """Where sops looks for an age identity file when none is configured."""
    if environ.get("SOPS_AGE_KEY_FILE"):
        return Path(environ["SOPS_AGE_KEY_FILE"]).expanduser()
    config_home = environ.get("XDG_CONFIG_HOME") or os.path.join(
        environ.get("HOME", str(Path.home())), ".config"
    )
    return Path(config_home) / "sops" / "age" / "keys.txt"
