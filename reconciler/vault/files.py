"""Atomic, durable file writes and an exclusive lock for single-flight work.

``atomic_write`` puts bytes that are already final (for grant files: already encrypted) in a
temporary file in the same folder, fsyncs it, renames it over the target and fsyncs the
folder. A failure at any step removes the temporary file and leaves the old file as it was.

``file_lock`` serialises writers of one file across threads and processes with ``flock`` on
a ``<file>.lock`` sidecar; where the file's folder cannot hold one (a read-only store), the lock
lives under the user's runtime folder instead, keyed by the file's resolved path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import Busy

#: Patterns (relative to the store folder) of files that must not be committed: the lock
#: sidecars and the temporary files of interrupted writes.
IGNORED_PATTERNS = ("*.lock", ".*.tmp")
LOCK_SUFFIX = ".lock"
TEMP_SUFFIX = ".tmp"


def temp_path_for(path: Path) -> Path:
    """A fresh hidden temporary name next to ``path`` (``.<name>.<random>.tmp``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    fd = os.open(folder, flags)
    try:
        os.fsync(fd)
    except OSError as error:  # some filesystems cannot fsync a directory
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write(
    path: Path, data: bytes, *, mode: int | None = None, overwrite: bool = True
) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    ``mode`` defaults to the existing file's mode, else to what a plain ``open()`` would
    give (0o666 minus the umask). With ``overwrite=False`` an existing ``path`` is never
    replaced (FileExistsError).
    """
    path = Path(path)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("atomic_write takes bytes")
    folder = path.parent if str(path.parent) else Path(".")
    if mode is None:
        with contextlib.suppress(FileNotFoundError):
            info = path.lstat()  # a symlink's target lends no mode to the file replacing it
            if not stat.S_ISLNK(info.st_mode):
                mode = info.st_mode & 0o7777
    temp = temp_path_for(path)
    # Created 0o600 at first (so nothing is ever readable by others while being written),
    # then set to the final mode.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, _default_mode() if mode is None else mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(temp, path)
        else:
            os.link(temp, path)  # fails with FileExistsError instead of replacing
            os.unlink(temp)
        fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def replace_cache_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Put ``data`` at ``path`` for a cache: never a torn file, but neither durable nor
    atomic. The old file is unlinked before the new one is renamed into place, so a reader
    may briefly find no file (a cache miss; callers fall back to the source of truth), and a
    crash may lose the entry. In return it is ~25x cheaper than ``atomic_write`` on ext4,
    whose rename over an existing file flushes the new file's data (``auto_da_alloc``)."""
    path = Path(path)
    temp = temp_path_for(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temp, flags, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.rename(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _default_mode() -> int:
    """0o666 minus the process umask (read without changing it where Linux allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


def durable_delete(path: Path, *, missing_ok: bool = True) -> bool:
    """Remove ``path`` and fsync its folder. Returns False if it did not exist."""
    path = Path(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        if not missing_ok:
            raise
        return False
    fsync_dir(path.parent if str(path.parent) else Path("."))
    return True


def lock_path_for(path: Path) -> Path:
    """The lock sidecar of ``path``: ``<path>.lock``."""
    path = Path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


def fallback_lock_path(path: Path) -> Path:
    """Where the lock of ``path`` lives when its folder is read-only:
    ``$XDG_RUNTIME_DIR/oauth-reconciler/locks/`` (else the same under ``$XDG_CACHE_HOME`` or
    ``~/.cache``), named by a hash of the resolved path so that every process finds the same
    file for the same grant."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if not os.path.isabs(base):
        base = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(base):
            base = os.path.join(os.environ.get("HOME") or os.path.expanduser("~"), ".cache")
    resolved = os.path.realpath(path).encode("utf-8", "surrogateescape")
    digest = hashlib.sha256(resolved).hexdigest()[:32]
    return Path(base) / "oauth-reconciler" / "locks" / f"{digest}{LOCK_SUFFIX}"


class LockTimeout(Busy, TimeoutError):
    """The lock was still held by someone else when the timeout ran out."""


#: Errors that mean "this folder cannot take a new file" (read-only mount, no permission).
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)
_OPEN_FLAGS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def _open_lock(lock: Path) -> int:
    """A descriptor of ``lock`` (created 0600 if need be), never through a symlink."""
    flags = os.O_RDWR | os.O_CREAT | _OPEN_FLAGS
    try:
        return os.open(lock, flags, 0o600)
    except FileNotFoundError:  # no folder yet (a first link): mkdir only then
        lock.parent.mkdir(parents=True, exist_ok=True)
        return os.open(lock, flags, 0o600)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OSError(
                errno.ELOOP, "is a symbolic link; lock files are never followed, remove it", lock
            ) from None
        raise


def _open_lock_for(path: Path) -> tuple[int, Path]:
    """The sidecar of ``path`` if it can be opened for writing (an existing one can, in a
    folder that only refuses new entries), else the fallback lock file. Processes of one user
    looking at the same folder make the same choice, so they share one lock."""
    lock = lock_path_for(path)
    try:
        return _open_lock(lock), lock
    except OSError as error:
        if error.errno not in _READ_ONLY:
            raise
    lock = fallback_lock_path(path)
    lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return _open_lock(lock), lock


@contextlib.contextmanager
def file_lock(
    path: Path, *, timeout: float | None = None, shared: bool = False, poll: float = 0.05
) -> Iterator[Path]:
    """Hold an exclusive (or shared) ``flock`` on the lock file of ``path`` for the ``with``
    block, and yield that lock file's path.

    The lock file is ``<path>.lock``, opened without following a symlink (ELOOP); when the
    folder of ``path`` is read-only, ``fallback_lock_path(path)``. Works across threads (each
    call opens its own descriptor) and processes. The lock file is left in place (removing it
    would race with other waiters). ``timeout=None`` waits for ever; otherwise LockTimeout is
    raised.
    """
    fd, lock = _open_lock_for(Path(path))
    try:
        operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if timeout is None:
            fcntl.flock(fd, operation)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, operation | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"{lock}: still locked after {timeout:g}s") from None
                    time.sleep(poll)
        try:
            yield lock
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


__all__ = [
    "IGNORED_PATTERNS",
    "LockTimeout",
    "atomic_write",
    "durable_delete",
    "fallback_lock_path",
    "file_lock",
    "fsync_dir",
    "lock_path_for",
    "temp_path_for",
]
