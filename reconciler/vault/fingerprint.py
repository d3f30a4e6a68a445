"""Which version of a file is on disk, without reading it.

A fingerprint is (inode, size, mtime, ctime) in nanoseconds: an atomic rename gives a new
inode, an in-place write a new ctime. Import-free beyond ``os``: the token fast path uses it.
"""

from __future__ import annotations

import os

Fingerprint = tuple[int, int, int, int]


def of_file(path: str | os.PathLike[str]) -> Fingerprint | None:
    """The file's fingerprint now; None when it cannot be stat'ed (missing, or no access)."""
    try:
        return of_stat(os.stat(path))
    except OSError:
        return None


def of_stat(info: os.stat_result) -> Fingerprint:
    """The fingerprint in a ``stat`` result (e.g. from ``os.scandir``)."""
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
