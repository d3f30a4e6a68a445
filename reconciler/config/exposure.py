"""Plaintext that git would commit: a `file:` reference whose file sits inside a git work tree
and is not ignored. The grant files are encrypted; the source of a secret often is not."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..model import Desired
from .references import parse_reference


def file_references(desired: Desired) -> list[tuple[str, Path]]:
    """(owner, path) of every `file:` reference in the config: relative to the config's
    folder, ``~`` expanded."""

    refs = [(f"secret {spec.name!r}", spec.ref) for spec in desired.secrets.values()]
    refs += [
        (f"provider {provider.name!r} client_secret", provider.client_secret_ref)
        for provider in desired.providers.values()
        if provider.client_secret_ref
    ]
    found = []
    for owner, ref in refs:
        kind, target, _ = parse_reference(ref, owner)
        if kind == "file":
            found.append((owner, desired.path.parent / os.path.expanduser(target)))
    return found


def committable(path: Path) -> bool:
    """``path`` exists inside a git work tree and git does not ignore it (a tracked file
    counts: it is committed already). False when git is missing or the folder is no repo."""
    if not path.is_file():
        return False
    try:
        done = subprocess.run(
            ["git", "check-ignore", "-q", "--", path.name],
            cwd=path.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 1  # 0: ignored; 128: not in a work tree


def warnings(desired: Desired) -> list[str]:
    """One warning per `file:` reference whose plaintext git would commit."""
    return [
        f"{desired.path}: {owner} reads {path}, which is inside a git repository and not "
        f"ignored, so git would commit the plaintext. Add it to .gitignore (or `git rm "
        f"--cached` it if it is committed already), or move it out of the repository."
        for owner, path in file_references(desired)
        if committable(path)
    ]
