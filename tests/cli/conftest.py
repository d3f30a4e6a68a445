"""Fixtures for the CLI tests."""

from __future__ import annotations

import pytest

from .support import LOCAL, OPENAI, config


@pytest.fixture
def ready(project):
    project.write_config(config([project.recipient]))
    (project.root / "local.key").write_text(LOCAL + "\n")
    project.env["OPENAI_API_KEY"] = OPENAI
    return project
