"""The package's public surface: every name resolves, and importing the package is free."""

from __future__ import annotations

import subprocess
import sys

import pytest

import reconciler.oauth


@pytest.mark.parametrize("name", reconciler.oauth.__all__)
def test_every_public_name_resolves(name):
    assert getattr(reconciler.oauth, name) is not None


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        reconciler.oauth.no_such_name  # noqa: B018


def test_importing_the_package_loads_no_module_of_it():
    code = (
        "import sys, reconciler.oauth;"
        "loaded = [m for m in sys.modules if m.startswith('reconciler.oauth.')];"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
