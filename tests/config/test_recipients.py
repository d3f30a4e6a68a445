"""``reconciler.config``: whom grant files are encrypted to: store recipients, .sops.yaml
rules, and the keys reconcile cannot write to."""

from __future__ import annotations

from pathlib import Path

from reconciler.config import load

from .support import OTHER, RECIPIENT, assert_located, error_of, minimal, write


def test_recipients_from_sops_rules(tmp_path: Path, sops_rules: dict) -> None:
    sops_rules["*"] = (RECIPIENT,)
    sops_rules["b.sops.yaml"] = (OTHER,)
    path = write(
        tmp_path,
        minimal(
            "store: {dir: out}\nproviders:\n  a: {preset: github, client_id: x}\n"
            "secrets:\n  b: {value: prompt}\n",
            recipients=False,
        ),
    )
    desired = load(path, environ={})
    assert desired.recipients == {"a": (RECIPIENT,), "b": (OTHER,)}
    assert sorted(sops_rules["calls"]) == [
        tmp_path / "out/a.sops.yaml",
        tmp_path / "out/b.sops.yaml",
    ]


def test_store_recipients_win_over_sops_rules(tmp_path: Path, sops_rules: dict) -> None:
    sops_rules["*"] = (OTHER,)
    path = write(tmp_path, minimal("secrets:\n  b: {value: prompt}\n"))
    assert load(path, environ={}).recipients == {"b": (RECIPIENT,)}
    assert sops_rules["calls"] == []


def test_no_recipients_anywhere(tmp_path: Path, sops_rules: dict) -> None:
    sops_rules["*"] = None
    path = write(
        tmp_path,
        minimal("secrets:\n  b:\n    value: prompt\n  c: {value: prompt}\n", recipients=False),
    )
    message = assert_located(error_of(path), path, 3)
    assert "`b`, `c`" in message
    assert "store.recipients" in message and ".sops.yaml" in message


def test_recipients_from_a_real_sops_yaml(tmp_path: Path) -> None:
    (tmp_path / ".sops.yaml").write_text(
        "creation_rules:\n"
        f"  - path_regex: ^secrets/special\\.sops\\.yaml$\n    age: {OTHER}\n"
        f"  - path_regex: ^secrets/.*\\.sops\\.yaml$\n    age: {RECIPIENT}\n"
    )
    path = write(
        tmp_path,
        minimal(
            "secrets:\n  special: {value: prompt}\n  plain: {value: prompt}\n", recipients=False
        ),
    )
    desired = load(path, environ={})
    assert desired.recipients == {"special": (OTHER,), "plain": (RECIPIENT,)}


def test_broken_sops_yaml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / ".sops.yaml").write_text("creation_rules: 5\n")
    path = write(tmp_path, minimal("secrets:\n  k: {value: prompt}\n", recipients=False))
    message = str(error_of(path))
    assert ".sops.yaml" in message


def test_a_sops_rule_with_keys_reconcile_cannot_write_is_an_error(project) -> None:
    """Never silently reduced to its age keys: the CLI exits 1 naming .sops.yaml."""
    rules = project.root / ".sops.yaml"
    rules.write_text(
        f"creation_rules:\n  - path_regex: secrets/\n    age: {project.recipient}\n"
        "    pgp: FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4\n"
    )
    project.write_config("version: 1\nsecrets:\n  openai:\n    value: env:OPENAI_API_KEY\n")
    run = project.reconcile("plan", env={"OPENAI_API_KEY": "sk-1"})
    assert run.code == 1
    assert str(rules) in run.stderr and "pgp keys" in run.stderr
    assert "Traceback" not in run.stderr
    assert not project.store.exists()
