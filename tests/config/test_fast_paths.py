"""``reconciler.config``: what stays cheap: locating the config file, importing the package,
the cached schema validator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.config import ConfigError, locate, schema

from .support import ROOT, minimal, write


def test_locate_is_the_fast_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "version: 1\nstore: {dir: out}\nproviders:\n  b: {oops: 1}\nsecrets:\n  a: {value: x}\n",
    )
    store_dir, names = locate(path)
    assert store_dir == tmp_path / "out"
    assert names == ["a", "b"]
    with pytest.raises(ConfigError):
        locate(write(tmp_path, "- 1\n"))
    assert locate(write(tmp_path, "version: 1\n")) == (tmp_path / "secrets", [])


def test_validator_is_cached() -> None:
    assert schema._validator() is schema._validator()


def test_importing_config_is_cheap() -> None:
    code = (
        "import sys, reconciler.config\n"
        "heavy = [m for m in ('jsonschema', 'httpx2', 'authlib', 'pyrage') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"


def test_locate_does_not_import_jsonschema(tmp_path: Path) -> None:
    path = write(tmp_path, minimal("secrets:\n  a: {value: prompt}\n"))
    code = (
        "import sys, pathlib, reconciler.config as c\n"
        f"c.locate(pathlib.Path({str(path)!r}))\n"
        "print('jsonschema' in sys.modules)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "False"
