"""Fixtures of the config tests. May import tests/config/support.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def sops_rules(monkeypatch: pytest.MonkeyPatch):
    """Stand-in for reconciler.vault.sopsconfig.rule_recipients: {file name: recipients}."""
    import reconciler.vault.sops.rules as keys

    rules: dict[str, tuple[str, ...] | None] = {}
    calls: list[Path] = []

    def rule_recipients(file_path: Path):
        calls.append(Path(file_path))
        return rules.get(Path(file_path).name, rules.get("*"))

    monkeypatch.setattr(keys, "rule_recipients", rule_recipients)
    rules["calls"] = calls  # type: ignore[assignment]
    return rules
