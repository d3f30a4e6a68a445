"""A project with two applied-ready secrets, shared by the CLI tests."""

from __future__ import annotations

import pytest

OPENAI = "sk-test-9f8e7d6c5b4a39281706"
LOCAL = "local-key-0a1b2c3d4e5f60718293"


def config(recipients: list[str], *, extra: str = "") -> str:
    return (
        "version: 1\n"
        "store:\n"
        "  dir: secrets\n"
        f"  recipients: [{', '.join(recipients)}]\n"
        "secrets:\n"
        "  openai:\n"
        "    value: env:OPENAI_API_KEY\n"
        "  local:\n"
        "    value: file:local.key\n" + extra
    )


@pytest.fixture
def ready(project):
    project.write_config(config([project.recipient]))
    (project.root / "local.key").write_text(LOCAL + "\n")
    project.env["OPENAI_API_KEY"] = OPENAI
    return project
