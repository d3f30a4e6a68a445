"""What `reconcile --watch` watches: the inputs of a reconcile, and their fingerprint.

The inputs are ``providers.yaml``; the ``.sops.yaml`` that governs the store (and any closer
one that appears); the files that ``file:`` and ``sops:`` references name (secret values,
client secrets, the notify secret); and the grant files. ``Surveyor`` finds them with a plain
YAML parse (it must work on an invalid config too) and hashes each one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..vault.sops.rules import find_sops_config

#: Largest file hashed whole; bigger ones are fingerprinted by size and mtime.
_MAX_HASHED = 1 << 20
_GRANT_SUFFIX = ".sops.yaml"
_SOPS_CONFIG = ".sops.yaml"


@dataclass(frozen=True)
class Inputs:
    """A fingerprint of everything a reconcile reads, and the folders to watch for it."""

    config_path: Path
    store_dir: Path
    config: str | None
    #: ``.sops.yaml`` candidates and referenced files, with their digests (None: missing).
    files: tuple[tuple[str, str | None], ...]
    #: Grant name → digest of its file.
    grants: tuple[tuple[str, str | None], ...]
    folders: frozenset[str]

    @property
    def config_key(self) -> tuple:
        return (self.config, self.files)

    def grant(self, name: str) -> str | None:
        return dict(self.grants).get(name)

    def same(self, other: Inputs | None) -> bool:
        return other is not None and (self.config_key, self.grants) == (
            other.config_key,
            other.grants,
        )

    def changed(self, other: Inputs | None, base: Path) -> list[str]:
        """What differs from ``other``, as paths relative to ``base`` where possible."""
        before = {} if other is None else _flat(other)
        after = _flat(self)
        names = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        return [relative(Path(name), base) for name in names]


def _flat(inputs: Inputs) -> dict[str, str | None]:
    flat = {str(inputs.config_path): inputs.config}
    flat.update(inputs.files)
    flat.update(
        (str(inputs.store_dir / f"{name}{_GRANT_SUFFIX}"), digest) for name, digest in inputs.grants
    )
    return flat


def relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _digest(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_HASHED + 1)
            if len(data) > _MAX_HASHED:
                stat = os.fstat(handle.fileno())
                return f"size:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return "folder"
    except OSError as error:
        return f"error:{error.errno}"
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _existing(folder: Path) -> Path:
    """``folder`` or its nearest ancestor that exists (a watch needs an existing folder)."""
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            return candidate
    return Path("/")


def _reference_path(target: str, base: Path, environ: Mapping[str, str]) -> Path:
    # As config resolves `file:`/`sops:` paths: `~` expanded, relative to the config's folder.
    if target == "~" or target.startswith("~/"):
        home = environ.get("HOME") or os.path.expanduser("~")
        path = Path(home) / target[2:]
    else:
        path = Path(os.path.expanduser(target))
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _references(data: object) -> Iterator[str]:
    """Every ``file:``/``sops:`` reference in a parsed providers.yaml, best effort."""
    if not isinstance(data, dict):
        return
    sections = (("secrets", "value"), ("providers", "client_secret"))
    for section, key in sections:
        entries = data.get(section)
        if isinstance(entries, dict):
            for entry in entries.values():
                if isinstance(entry, dict) and isinstance(entry.get(key), str):
                    yield entry[key]
    notify = data.get("notify")
    if isinstance(notify, dict) and isinstance(notify.get("secret"), str):
        yield notify["secret"]


@dataclass(frozen=True)
class _Layout:
    store_dir: Path
    files: tuple[Path, ...]


def _layout(config_path: Path, text: bytes | None, environ, previous: _Layout | None) -> _Layout:
    """Where the inputs are, from a plain YAML parse (it must work on invalid configs too)."""
    base = config_path.parent
    try:
        loader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
        data = yaml.load(text, Loader=loader) if text else None
    except Exception:
        data = None
    if not isinstance(data, dict):
        if previous is not None:
            return previous
        data = {}
    store = data.get("store")
    raw = store.get("dir") if isinstance(store, dict) else None
    raw = raw if isinstance(raw, str) else "secrets"
    store_dir = Path(os.path.normpath(base / os.path.expanduser(raw)))
    files: list[Path] = list(_sops_candidates(store_dir, base))
    for ref in _references(data):
        scheme, _, rest = ref.partition(":")
        if scheme == "file" and rest:
            files.append(_reference_path(rest, base, environ))
        elif scheme == "sops" and "#" in rest:
            files.append(_reference_path(rest.rpartition("#")[0], base, environ))
    return _Layout(store_dir, tuple(dict.fromkeys(files)))


def _sops_candidates(store_dir: Path, base: Path) -> Iterator[Path]:
    """The ``.sops.yaml`` that governs the grant files, and any closer one that could appear."""

    governing = find_sops_config(store_dir)
    if governing is not None:
        top = governing.parent
    elif base == store_dir or base in store_dir.parents:
        top = base
    else:
        top = store_dir.parent
    for folder in (store_dir, *store_dir.parents):
        yield folder / _SOPS_CONFIG
        if folder == top or folder.parent == folder:
            break


class Surveyor:
    """Takes the fingerprint of the inputs (``Inputs``) of the config at ``config_path``."""

    def __init__(self, config_path: Path, environ: Mapping[str, str]) -> None:
        self.config_path = config_path
        self.environ = environ
        self._layout: _Layout | None = None

    def __call__(self) -> Inputs:
        try:
            text = self.config_path.read_bytes()
        except OSError:
            text = None
        try:
            layout = _layout(self.config_path, text, self.environ, self._layout)
        except Exception:  # the survey must never stop the watcher; keep what was known
            layout = self._layout or _Layout(self.config_path.parent / "secrets", ())
        self._layout = layout
        config = None if text is None else hashlib.blake2b(text, digest_size=16).hexdigest()
        files = tuple((str(path), _digest(path)) for path in layout.files)
        grants: list[tuple[str, str | None]] = []
        try:
            with os.scandir(layout.store_dir) as entries:
                names = sorted(
                    e.name
                    for e in entries
                    if e.name.endswith(_GRANT_SUFFIX) and not e.name.startswith(".")
                )
        except OSError:
            names = []
        for filename in names:
            grants.append((filename[: -len(_GRANT_SUFFIX)], _digest(layout.store_dir / filename)))
        folders = {str(_existing(self.config_path.parent)), str(_existing(layout.store_dir))}
        folders.update(str(_existing(path.parent)) for path in layout.files)
        return Inputs(
            self.config_path, layout.store_dir, config, files, tuple(grants), frozenset(folders)
        )


def ignored(change, path: str) -> bool:
    """Our own lock sidecars and temporary files (``<name>.lock``, ``.<name>.<rand>.tmp``)."""
    name = os.path.basename(path)
    return name.endswith(".lock") or (name.startswith(".") and name.endswith(".tmp"))
