"""A config found valid is not validated again until its content or the schema changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import config
from reconciler.config import schema

RECIPIENT = "age1" + "q" * 58
TEXT = (
    "version: 1\n"
    f"store:\n  dir: secrets\n  recipients: [{RECIPIENT}]\n"
    "secrets:\n  api:\n    value: env:API_KEY\n"
)


def test_a_valid_config_is_validated_once(tmp_path: Path, monkeypatch):
    path = tmp_path / "providers.yaml"
    path.write_text(TEXT)
    config.load(path, environ={"API_KEY": "x"})

    def no_validation():
        raise AssertionError("validated again")

    monkeypatch.setattr(schema, "_validator", no_validation)
    config.load(path, environ={"API_KEY": "x"})  # the remembered verdict is used


def test_an_edit_is_validated_again(tmp_path: Path):
    path = tmp_path / "providers.yaml"
    path.write_text(TEXT)
    config.load(path, environ={"API_KEY": "x"})
    path.write_text(TEXT.replace("value: env:API_KEY", "valeu: env:API_KEY"))
    with pytest.raises(config.ConfigError) as raised:
        config.load(path, environ={"API_KEY": "x"})
    assert "value" in str(raised.value)
