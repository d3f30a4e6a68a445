"""The ``store:`` section: where grant files are kept and whom they are encrypted to."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .document import Document
from .errors import ConfigError, Issue
from .wording import shown

DEFAULT_STORE_DIR = "secrets"


def resolve_store_dir(config_path: Path, store: Mapping) -> Path:
    """The grant files' folder: ``store.dir``, relative to the config file's folder."""
    raw = store.get("dir", DEFAULT_STORE_DIR)
    folder = Path(os.path.expanduser(raw))
    base = Path(os.path.abspath(config_path)).parent
    return Path(os.path.normpath(base / folder))


def resolve_recipients(
    names: list[str],
    store: Mapping,
    store_dir: Path,
    doc: Document,
    issues: list[Issue],
) -> dict[str, tuple[str, ...]]:
    """The age recipients of each grant file: ``store.recipients`` or the ``.sops.yaml``
    creation rule that matches it. Problems go to ``issues``."""
    if not names:
        return {}
    if store.get("recipients"):
        declared = tuple(store["recipients"])
        return {name: declared for name in names}
    # The SOPS stack (cryptography) loads only when recipients come from .sops.yaml.
    from ..vault.sops import rules
    from ..vault.store import VaultError

    result: dict[str, tuple[str, ...]] = {}
    missing: list[str] = []
    for name in names:
        target = store_dir / f"{name}.sops.yaml"
        try:
            found = rules.rule_recipients(target)
        except ConfigError as error:
            issues.extend(error.issues)
            return result
        except (VaultError, OSError) as error:
            issues.append(
                doc.issue(
                    ("store",),
                    f"cannot read the .sops.yaml creation rules for {target}: "
                    f"{shown(str(error), 200) or type(error).__name__}",
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
        section = "providers" if ("providers", first) in doc.keys else "secrets"
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
