"""The command line itself: --version, the bare command's options, exit codes, pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version

from .support import config, on_a_terminal

GITHUB = "providers:\n  github:\n    preset: github\n    client_id: Iv1.abc\n    scopes: [repo]\n"


def test_version_is_the_installed_package_version(project):
    ran = project.reconcile("--version")
    assert ran.code == 0, ran.stderr
    assert ran.stdout == f"reconcile {version('oauth-reconciler')}\n"


def test_the_bare_command_takes_every_apply_option(ready):
    ready.write_config(config([ready.recipient]) + GITHUB)
    pending = ready.reconcile("--no-link", "--link-timeout", "5")
    assert pending.code == 2, pending.stderr
    assert "github: link: pending" in pending.stderr
    assert sorted(ready.snapshot()) == ["local.sops.yaml", "openai.sops.yaml"]

    ready.write_config(config([ready.recipient]).split("  local:")[0] + GITHUB)
    pruned = ready.reconcile("--prune", "--no-link", "--device", "--no-browser")
    assert pruned.code == 2, pruned.stderr
    assert sorted(ready.snapshot()) == ["openai.sops.yaml"]

    watch = ready.reconcile("--watch", "--no-link", "--link-timeout", "5", "-f", "absent.yaml")
    assert watch.code == 1 and "absent.yaml does not exist" in watch.stderr, watch.stderr


def test_an_apply_option_with_another_command_is_a_usage_error(ready):
    wrong = ready.reconcile("--no-link", "status")
    assert wrong.code == 1
    assert "--no-link goes with apply, not status" in wrong.stderr
    # Exit 2 means "changes pending": a mistyped option must never look like that.
    typo = ready.reconcile("plan", "--exit-code", "--exit-cod3")
    assert typo.code == 1, typo.stderr
    assert "unrecognized arguments: --exit-cod3" in typo.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(ready):
    """`reconcile status | head -0`: the reader is gone before the table is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", "status"],
            cwd=ready.root,
            env=ready.env,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 141  # 128 + SIGPIPE, as a shell reports a command SIGPIPE ended


def test_presets_lists_the_catalog_without_a_config(project):
    from reconciler.catalog import load_preset, preset_names

    as_json = project.reconcile("presets", "-o", "json")
    assert as_json.code == 0, as_json.stderr
    presets = {p["name"]: p for p in json.loads(as_json.stdout)["presets"]}
    assert sorted(presets) == preset_names()
    github = presets["github"]
    assert github["title"] == load_preset("github")["title"] == "GitHub"
    assert github["flows"] == ["authorization_code", "device_code"]
    assert "device flow must be enabled" in github["notes"]
    assert presets["asana"]["flows"] == ["authorization_code"]
    assert presets["microsoft"]["vars"] == {"tenant": "common"}
    slack = " ".join(presets["slack"]["notes"].split())
    assert "`reconcile token` prints the bot token" in slack  # which token is printed,
    assert "secondary_token" in slack and "sops -d --extract" in slack  # and how to read the other

    text = project.reconcile("presets")
    assert text.code == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TITLE", "FLOWS"]
    assert any(line.startswith("github ") and "device_code" in line for line in lines)
    assert "device flow must be enabled" in " ".join(text.stdout.split())
    # MCP servers need no preset: the listing ends with how to declare one.
    assert "MCP servers need no preset" in text.stdout
    assert "      mcp: https://mcp.linear.app/mcp" in lines
    assert json.loads(as_json.stdout)["mcp"]["yaml"].endswith("mcp: https://mcp.linear.app/mcp\n")


def test_revoke_asks_on_a_terminal_unless_yes(ready):
    assert ready.reconcile("apply").code == 0
    grant = ready.store / "openai.sops.yaml"

    code, stderr = on_a_terminal(ready, "revoke", "openai", typed="n\n")
    assert code == 1
    assert "Revoke 'openai' at the provider and delete its grant file?" in stderr
    assert "openai: not revoked; nothing was changed" in stderr
    assert grant.exists()

    code, stderr = on_a_terminal(ready, "revoke", "openai", typed="y\n")
    assert code == 0, stderr
    assert not grant.exists()

    code, stderr = on_a_terminal(ready, "revoke", "local", "--yes", typed="")
    assert code == 0, stderr
    assert "[y/N]" not in stderr
    assert ready.snapshot() == {}
