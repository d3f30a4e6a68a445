"""`reconcile init`: an age identity, `.sops.yaml`, a starter `providers.yaml`, `.gitignore`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .model import ENCRYPTED_FIELDS

STARTER_CONFIG = """\
# Desired state for oauth-reconciler: the OAuth grants and API keys your scripts need.
# Run `reconcile plan` to see what would change and `reconcile apply` to make it so.
# Reference: the README and schemas/providers.schema.json of oauth-reconciler.
version: 1
store:
  dir: {store_dir}
  # Recipients come from the creation rule in .sops.yaml; list them here to override:
  # recipients: [age1...]
defaults:
  refresh_before: 5m
  keepalive: 7d
providers: {{}}
#  github:
#    preset: github
#    client_id: Iv1.0123456789abcdef
#    client_secret: env:GITHUB_CLIENT_SECRET
#    scopes: [repo, read:user]
#    flow: device_code
secrets: {{}}
#  openai:
#    value: env:OPENAI_API_KEY
#  anthropic:
#    value: prompt
"""

SOPS_CONFIG = """\
creation_rules:
  - path_regex: {path_regex}
    encrypted_regex: {encrypted_regex}
    age: {recipient}
"""

GITIGNORE_HEADER = "# oauth-reconciler: lock and temporary files beside the grant files"


def initialise(config_path: Path, environ: Mapping[str, str], store_dir: str = "secrets") -> dict:
    """Create the missing pieces of a project around ``config_path``; never overwrite."""
    from .vault.files import atomic_write
    from .vault.keys import generate_identity, load_identities

    folder = config_path.parent
    created: dict[Path, str] = {}
    identities = load_identities(environ)
    if identities:
        recipient = str(identities[0].to_public())
    else:
        key_file = default_key_file(environ)
        recipient = generate_identity(key_file)
        created[key_file] = "created age identity (keep it secret, back it up)"

    sops_yaml = folder / ".sops.yaml"
    if sops_yaml.exists():
        created[sops_yaml] = "kept existing"
    else:
        encrypted_regex = "^(" + "|".join(ENCRYPTED_FIELDS) + ")$"
        text = SOPS_CONFIG.format(
            path_regex=f"{store_dir}/.*\\.sops\\.yaml$",
            encrypted_regex=f"'{encrypted_regex}'",
            recipient=recipient,
        )
        atomic_write(sops_yaml, text.encode())
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
    return created


def ignored_patterns(store_dir: str) -> list[str]:
    from .vault.files import IGNORED_PATTERNS

    return [f"{store_dir}/{pattern}" for pattern in IGNORED_PATTERNS]


def default_key_file(environ: Mapping[str, str]) -> Path:
    """Where sops looks for an age identity file when none is configured."""
    if environ.get("SOPS_AGE_KEY_FILE"):
        return Path(environ["SOPS_AGE_KEY_FILE"]).expanduser()
    config_home = environ.get("XDG_CONFIG_HOME") or os.path.join(
        environ.get("HOME", str(Path.home())), ".config"
    )
    return Path(config_home) / "sops" / "age" / "keys.txt"
