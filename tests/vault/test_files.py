"""Atomic durable writes and the exclusive lock."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from reconciler.vault import files
from reconciler.vault.files import (
    IGNORED_PATTERNS,
    LockTimeout,
    atomic_write,
    durable_delete,
    fallback_lock_path,
    file_lock,
    lock_path_for,
    replace_cache_file,
)
from tests.support import read_only_folder


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_creates_and_replaces(tmp_path):
    path = tmp_path / "a.sops.yaml"
    old_umask = os.umask(0o027)
    try:
        atomic_write(path, b"one")
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"one"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # like open(): 0o666 minus umask
    path.chmod(0o644)
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the existing mode is kept
    atomic_write(path, b"three", mode=0o640)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert listing(tmp_path) == ["a.sops.yaml"]


def test_a_symlinks_target_lends_no_mode_to_the_new_file(tmp_path):
    """A grant path that is a symlink (say to a world-readable file) is replaced by a regular
    file with the default mode, not the target's."""
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(b"public")
    target.chmod(0o644)
    path = tmp_path / "github.sops.yaml"
    path.symlink_to(target)
    old_umask = os.umask(0o077)
    try:
        atomic_write(path, b"secret grant")
    finally:
        os.umask(old_umask)
    assert not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert target.read_bytes() == b"public"


def test_atomic_write_fsyncs_the_file_then_the_folder(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(kind)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b)))
    atomic_write(tmp_path / "x", b"data")
    assert events == ["file", "rename", "dir"]


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "grant.sops.yaml"
    path.write_bytes(b"old content")

    def boom(*args, **kwargs):
        raise OSError(28, f"simulated failure in {fail_at}")

    monkeypatch.setattr(os, fail_at, boom)
    with pytest.raises(OSError, match="simulated"):
        atomic_write(path, b"new content")
    monkeypatch.undo()
    assert path.read_bytes() == b"old content"
    assert listing(tmp_path) == ["grant.sops.yaml"]


def test_an_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "grant.sops.yaml"
    path.write_bytes(b"old content")
    real_write = os.write

    def partial_then_interrupt(fd, data):
        real_write(fd, bytes(data[:3]))
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", partial_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, b"new content")
    monkeypatch.undo()
    assert path.read_bytes() == b"old content"
    assert listing(tmp_path) == ["grant.sops.yaml"]


def test_no_overwrite(tmp_path):
    path = tmp_path / "keys.txt"
    atomic_write(path, b"first", overwrite=False)
    with pytest.raises(FileExistsError):
        atomic_write(path, b"second", overwrite=False)
    assert path.read_bytes() == b"first"
    assert listing(tmp_path) == ["keys.txt"]


def test_atomic_write_takes_bytes_only(tmp_path):
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "x", "text")  # type: ignore[arg-type]


def test_temp_files_are_covered_by_the_ignore_patterns(tmp_path):
    import fnmatch

    temp = files.temp_path_for(tmp_path / "github.sops.yaml")
    lock = lock_path_for(tmp_path / "github.sops.yaml")
    assert temp.parent == tmp_path and lock.name == "github.sops.yaml.lock"
    assert any(fnmatch.fnmatch(temp.name, p) for p in IGNORED_PATTERNS)
    assert any(fnmatch.fnmatch(lock.name, p) for p in IGNORED_PATTERNS)
    assert not any(fnmatch.fnmatch("github.sops.yaml", p) for p in IGNORED_PATTERNS)


def test_durable_delete(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"x")
    assert durable_delete(path) is True
    assert durable_delete(path) is False
    with pytest.raises(FileNotFoundError):
        durable_delete(path, missing_ok=False)


# ---------------------------------------------------------------------------------------
# Locks.


def test_lock_is_exclusive_between_threads(tmp_path):
    target = tmp_path / "counter"
    target.write_text("0")
    inside = []

    def work():
        for _ in range(20):
            with file_lock(target):
                inside.append(1)
                assert len(inside) == 1
                value = int(target.read_text())
                time.sleep(0.0005)
                target.write_text(str(value + 1))
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text() == "80"


def _hold_lock(path: str, ready, release) -> None:
    with file_lock(Path(path)):
        ready.set()
        release.wait(10)


def test_lock_is_exclusive_between_processes(tmp_path):
    target = tmp_path / "grant.sops.yaml"
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(str(target), ready, release))
    child.start()
    try:
        assert ready.wait(20)
        started = time.monotonic()
        with pytest.raises(LockTimeout), file_lock(target, timeout=0.2):
            pass
        assert time.monotonic() - started >= 0.2
    finally:
        release.set()
        child.join(20)
    with file_lock(target, timeout=5):
        pass
    assert lock_path_for(target).exists()


def test_shared_locks_coexist_and_block_exclusive(tmp_path):
    target = tmp_path / "x"
    with (
        file_lock(target, shared=True),
        file_lock(target, shared=True, timeout=0.1),
        pytest.raises(LockTimeout),
        file_lock(target, timeout=0.1),
    ):
        pass


def test_replace_cache_file_replaces_privately_and_leaves_no_temp(tmp_path):
    target = tmp_path / "entry.age"
    replace_cache_file(target, b"first")
    replace_cache_file(target, b"second")
    assert target.read_bytes() == b"second"
    assert target.stat().st_mode & 0o777 == 0o600
    assert listing(tmp_path) == ["entry.age"]


def test_a_failed_cache_write_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "entry.age"
    target.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", boom)
    with pytest.raises(OSError):
        replace_cache_file(target, b"new")
    assert listing(tmp_path) == ["entry.age"]
    assert target.read_bytes() == b"old"  # the write failed before the old entry was dropped


def test_a_symlinked_lock_file_is_not_followed(tmp_path):
    target = tmp_path / "github.sops.yaml"
    victim = tmp_path / "outside" / "victim"
    victim.parent.mkdir()
    lock_path_for(target).symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link") as info, file_lock(target, timeout=1):
        pass
    assert str(lock_path_for(target)) in str(info.value)
    assert not victim.exists()


def test_a_read_only_folder_locks_under_the_runtime_dir(tmp_path, monkeypatch):
    runtime = tmp_path / "runtime"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    store = tmp_path / "store"
    store.mkdir()
    target = store / "github.sops.yaml"
    target.write_bytes(b"grant")
    with read_only_folder(store):
        with file_lock(target, timeout=1) as lock:
            assert lock == fallback_lock_path(target)
            assert lock.parent.parent.parent == runtime
        # Still single-flight across processes: a child holding the lock keeps us out.
        ctx = multiprocessing.get_context("spawn")
        ready, release = ctx.Event(), ctx.Event()
        child = ctx.Process(target=_hold_lock, args=(str(target), ready, release))
        child.start()
        try:
            assert ready.wait(20)
            with pytest.raises(LockTimeout), file_lock(target, timeout=0.2):
                pass
        finally:
            release.set()
            child.join(20)
    assert listing(store) == ["github.sops.yaml"]
    # The same file through another path (a symlinked folder) shares the lock.
    (tmp_path / "alias").symlink_to(store)
    assert fallback_lock_path(tmp_path / "alias" / "github.sops.yaml") == lock


def test_a_read_only_folder_uses_an_existing_sidecar(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "runtime"))
    target = tmp_path / "store" / "github.sops.yaml"
    target.parent.mkdir()
    with file_lock(target):  # creates the sidecar while the folder is writable
        pass
    with read_only_folder(target.parent), file_lock(target, timeout=1) as lock:
        assert lock == lock_path_for(target)
    assert not (tmp_path / "runtime").exists()
