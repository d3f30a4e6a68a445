"""Grant files this machine has verified and that hold no secret: what they showed, by
fingerprint, so that an unchanged file is not opened again.

Reading a grant file with a key costs an age decryption (its data key), the MAC and the YAML.
A file that holds no secret at all (an attached grant's, SPEC §7: its live state is in the
engine) gives nothing for that but its plaintext, and every command on a machine with a
thousand attached grants would pay it a thousand times. So the plaintext a verified file
showed is kept here, in ``$XDG_CACHE_HOME/oauth-reconciler/verified/`` (one file per store
folder and set of identities), under the file's fingerprint taken before it was read. While
the fingerprint (inode, size, mtime, ctime) is the same, the file is the one verified; any
change (a pull, a checkout, an edit) gives a new fingerprint, and the file is read and
verified again. A file with a secret, or that fails, is never kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from ..model import Grant
from ..secret import Secret
from .cache import _hash, cache_dir
from .files import replace_cache_file
from .fingerprint import Fingerprint

FORMAT = 1
_TIMES = ("expires_at", "obtained_at", "modified")
_TUPLES = ("scopes", "granted_scopes", "recipients")


class Verified:
    """The verified files of one store folder, for one set of identities."""

    def __init__(
        self,
        path: str,
        key: str,
        files: dict[str, tuple[Fingerprint, Grant]],
        now: Mapping[str, Fingerprint],
    ) -> None:
        self.path = path
        self._key = key
        self._files = files
        #: Each file's fingerprint, taken before the files were read.
        self._now = now
        self._changed = False

    @classmethod
    def load(
        cls,
        store_dir: Path,
        recipients: Iterable[str],
        environ: Mapping[str, str],
        now: Mapping[str, Fingerprint],
    ) -> Verified:
        key = f"{os.path.realpath(store_dir)}\0{','.join(sorted(recipients))}"
        folder = os.path.join(os.path.dirname(cache_dir(environ)), "verified")
        path = os.path.join(folder, f"{_hash(key)}.json")
        files: dict[str, tuple[Fingerprint, Grant]] = {}
        try:
            with open(path, "rb") as file:
                data = json.loads(file.read())
            if data.get("format") == FORMAT and data.get("key") == key:
                for name, entry in data["files"].items():
                    fingerprint = tuple(int(n) for n in entry["fingerprint"])
                    files[name] = (fingerprint, _grant(entry["grant"]))  # type: ignore[assignment]
        except (OSError, ValueError, KeyError, TypeError):
            files = {}  # none yet, or not ours: every file is read
        return cls(path, key, files, now)

    def get(self, name: str) -> Grant | None:
        """The grant of ``name`` as verified, if its file is still the one verified."""
        known = self._files.get(name)
        if known is None or known[0] != self._now.get(name):
            return None
        return known[1]

    def keep(self, name: str, grant: Grant) -> None:
        """``grant``, just read from its file with a key: kept if the file holds no secret."""
        fingerprint = self._now.get(name)
        if fingerprint is None or not grant.decrypted or grant.sealed or _secrets(grant):
            self.forget(name)
            return
        if self._files.get(name) != (fingerprint, grant):
            self._files[name] = (fingerprint, grant)
            self._changed = True

    def forget(self, name: str) -> None:
        if self._files.pop(name, None) is not None:
            self._changed = True

    def only(self, names: Iterable[str]) -> None:
        """Forget the files not among ``names`` (gone from the store)."""
        for name in set(self._files) - set(names):
            self.forget(name)

    def save(self) -> None:
        """Written when something changed; a cache: a failure to write costs a re-read."""
        if not self._changed:
            return
        data = {
            "format": FORMAT,
            "key": self._key,
            "files": {
                name: {"fingerprint": list(print_), "grant": _record(grant)}
                for name, (print_, grant) in sorted(self._files.items())
            },
        }
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            replace_cache_file(Path(self.path), json.dumps(data).encode("utf-8"))
        except OSError:
            return
        self._changed = False


def _secrets(grant: Grant) -> bool:
    return any(isinstance(getattr(grant, f.name), Secret) for f in fields(Grant))


def _record(grant: Grant) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for field in fields(Grant):
        value = getattr(grant, field.name)
        if field.name in _TIMES:
            value = value.isoformat() if value is not None else None
        elif field.name in _TUPLES or field.name == "sealed":
            value = sorted(value) if field.name == "sealed" else list(value)
        elif field.name == "extra":
            value = dict(value)
        record[field.name] = value
    return record


def _grant(record: Mapping[str, Any]) -> Grant:
    values: dict[str, Any] = {}
    for field in fields(Grant):
        if field.name not in record:
            continue
        value = record[field.name]
        if field.name in _TIMES:
            value = datetime.fromisoformat(value) if value is not None else None
        elif field.name in _TUPLES:
            value = tuple(value)
        elif field.name == "sealed":
            value = frozenset(value)
        elif field.name == "extra":
            value = dict(value)
        values[field.name] = value
    return Grant(**values)


__all__ = ["Verified"]
