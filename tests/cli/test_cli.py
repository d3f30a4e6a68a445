"""The `reconcile` command end to end, in separate processes, on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import new_identity, sops_binary

from .support import LOCAL, OPENAI, config


def test_plan_apply_then_nothing_to_do(ready):
    plan = ready.reconcile("plan", "--exit-code")
    assert plan.code == 2, plan.stderr
    assert "+ local" in plan.stdout and "+ openai" in plan.stdout
    assert "Plan: 2 to add, 0 to change, 0 to remove." in plan.stdout

    applied = ready.reconcile("apply")
    assert applied.code == 0, applied.stderr
    files = ready.snapshot()
    assert sorted(files) == ["local.sops.yaml", "openai.sops.yaml"]

    again = ready.reconcile()  # the bare command is apply
    assert again.code == 0, again.stderr
    assert ready.snapshot() == files, "a second apply must change no file"
    assert ready.reconcile("plan", "--exit-code").code == 0


def test_token_prints_the_secret_value(ready):
    assert ready.reconcile("apply").code == 0
    token = ready.reconcile("token", "openai")
    assert token.code == 0, token.stderr
    assert token.stdout == OPENAI + "\n"
    as_json = ready.reconcile("token", "local", "-o", "json")
    assert json.loads(as_json.stdout) == {"name": "local", "token": LOCAL}


#: What the cached `reconcile token` must not load: each costs a cold process more than the
#: whole cached read (bench/token_read.py).
SLOW_IMPORTS = ("yaml", "jsonschema", "cryptography", "argparse", "re", "json", "pathlib",
                "hashlib", "datetime", "reconciler.cli", "reconciler.model")  # fmt: skip


def test_a_repeated_token_read_is_served_from_the_cache_with_few_imports(ready):
    assert ready.reconcile("apply").code == 0
    assert ready.reconcile("token", "openai").stdout == OPENAI + "\n"  # seeds the cache
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"  # what the interpreter's start loaded (site, .pth files)
        "from reconciler.entry import main\n"
        "sys.argv = ['reconcile', 'token', 'openai']\n"
        "main()\n"
        f"print(sorted(m for m in {SLOW_IMPORTS!r} if m in set(sys.modules) - before))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ready.root, env=ready.env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout == OPENAI + "\n[]\n"
    # An edited config may point the name elsewhere: the cache is not trusted, the value is.
    ready.env["OPENAI_API_KEY"] = OPENAI + "-rotated"
    assert ready.reconcile("apply").code == 0
    assert ready.reconcile("token", "openai").stdout == OPENAI + "-rotated\n"


def test_token_for_an_undeclared_name_is_a_clear_error(ready):
    result = ready.reconcile("token", "nope")
    assert result.code == 1
    assert "'nope' is not declared" in result.stderr
    assert "Traceback" not in result.stderr


def test_changed_value_is_rewritten(ready):
    assert ready.reconcile("apply").code == 0
    before = ready.snapshot()
    ready.env["OPENAI_API_KEY"] = OPENAI + "-rotated"
    plan = ready.reconcile("plan", "-o", "json")
    assert json.loads(plan.stdout)["actions"] == [
        {"name": "openai", "action": "write-secret", "reason": "value changed"}
    ]
    assert ready.reconcile("apply").code == 0
    after = ready.snapshot()
    assert after["local.sops.yaml"] == before["local.sops.yaml"]
    assert after["openai.sops.yaml"] != before["openai.sops.yaml"]
    assert ready.reconcile("token", "openai").stdout.strip() == OPENAI + "-rotated"


def test_global_options_before_or_after_the_command(ready):
    before = ready.reconcile("-o", "json", "plan")
    after = ready.reconcile("plan", "-o", "json")
    assert before.code == after.code == 0
    assert json.loads(before.stdout) == json.loads(after.stdout)
    moved = ready.root / "elsewhere.yaml"
    ready.config.rename(moved)
    assert ready.reconcile("plan", "-f", str(moved)).code == 0
    assert ready.reconcile("-f", str(moved), "plan").code == 0


def test_rekey_to_a_new_recipient(ready, tmp_path):
    assert ready.reconcile("apply").code == 0
    second_key = tmp_path / "second.txt"
    second = new_identity(second_key)
    ready.write_config(config([ready.recipient, second]))
    plan = ready.reconcile("plan", "-o", "json")
    assert {a["action"] for a in json.loads(plan.stdout)["actions"]} == {"rekey"}
    assert ready.reconcile("apply").code == 0
    # The second identity alone now decrypts every file.
    token = ready.reconcile("token", "openai", env={"SOPS_AGE_KEY_FILE": str(second_key)})
    assert token.stdout.strip() == OPENAI
    assert ready.reconcile("plan", "--exit-code").code == 0


def test_removing_a_recipient_takes_its_access_away(ready, tmp_path):
    removed_key = tmp_path / "removed.txt"
    removed = new_identity(removed_key)
    ready.write_config(config([ready.recipient, removed]))
    assert ready.reconcile("apply").code == 0
    as_removed = {"SOPS_AGE_KEY_FILE": str(removed_key)}
    assert ready.reconcile("token", "openai", env=as_removed).stdout.strip() == OPENAI

    ready.write_config(config([ready.recipient]))
    plan = ready.reconcile("plan", "-o", "json")
    short = f"{removed[:12]}…{removed[-4:]}"
    assert json.loads(plan.stdout)["actions"] == [
        {"name": name, "action": "rekey", "reason": f"recipients changed: -{short}"}
        for name in ("local", "openai")
    ]
    assert ready.reconcile("apply").code == 0
    # The removed key opens nothing any more, through `reconcile` or through `sops`.
    denied = ready.reconcile("token", "openai", env=as_removed)
    assert denied.code == 1 and OPENAI not in denied.stdout + denied.stderr
    for name in ("local", "openai"):
        done = subprocess.run(
            [sops_binary(), "-d", str(ready.store / f"{name}.sops.yaml")],
            env={**ready.env, "SOPS_AGE_KEY_FILE": str(removed_key)},
            capture_output=True,
            text=True,
        )
        assert done.returncode != 0 and OPENAI not in done.stdout and LOCAL not in done.stdout
        assert removed not in (ready.store / f"{name}.sops.yaml").read_text()
    assert ready.reconcile("token", "openai").stdout.strip() == OPENAI
    assert ready.reconcile("plan", "--exit-code").code == 0


def test_prune_only_with_the_flag(ready):
    assert ready.reconcile("apply").code == 0
    ready.write_config(config([ready.recipient]).split("  local:")[0])
    plan = ready.reconcile("plan")
    assert plan.code == 0 and "--prune" in plan.stdout
    assert ready.reconcile("apply").code == 0
    assert "local.sops.yaml" in ready.snapshot()
    assert "- local" in ready.reconcile("plan", "--prune").stdout
    assert ready.reconcile("apply", "--prune").code == 0
    assert sorted(ready.snapshot()) == ["openai.sops.yaml"]


def test_plan_and_status_work_without_a_private_key(ready):
    assert ready.reconcile("apply").code == 0
    no_key = {"SOPS_AGE_KEY_FILE": str(ready.root / "absent.txt"), "OPENAI_API_KEY": ""}
    plan = ready.reconcile("plan", "--exit-code", env=no_key)
    assert plan.code == 0, plan.stderr
    assert "not compared" in plan.stdout
    status = ready.reconcile("status", "-o", "json", env=no_key)
    assert status.code == 0, status.stderr
    rows = {row["name"]: row for row in json.loads(status.stdout)["grants"]}
    assert rows["openai"]["status"] == "ok" and rows["openai"]["kind"] == "secret"


def test_status_lists_missing_grants(ready):
    status = ready.reconcile("status", "-o", "json")
    assert {row["status"] for row in json.loads(status.stdout)["grants"]} == {"missing"}


def test_oauth_actions_are_pending_with_no_link(ready):
    ready.write_config(
        config([ready.recipient])
        + "providers:\n  github:\n    preset: github\n    client_id: Iv1.abc\n"
        "    scopes: [repo]\n"
    )
    plan = ready.reconcile("plan", "-o", "json")
    assert {"name": "github", "action": "link", "reason": "not linked yet"} in json.loads(
        plan.stdout
    )["actions"]
    pending = ready.reconcile("apply", "--no-link")
    assert pending.code == 2, pending.stderr
    assert "github: link: pending" in pending.stderr
    assert sorted(ready.snapshot()) == ["local.sops.yaml", "openai.sops.yaml"]


def test_init_in_an_empty_folder_then_validate(project):
    key_file = project.root.parent / "home" / ".config" / "sops" / "age" / "keys.txt"
    env = {k: v for k, v in project.env.items() if k != "SOPS_AGE_KEY_FILE"}
    project.env = env
    init = project.reconcile("init")
    assert init.code == 0, init.stderr
    assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
    for name in ("providers.yaml", ".sops.yaml", ".gitignore"):
        assert (project.root / name).exists(), name
    validate = project.reconcile("validate")
    assert validate.code == 0, validate.stderr
    # Running init again keeps everything.
    before = {p: p.read_bytes() for p in project.root.iterdir() if p.is_file()}
    assert project.reconcile("init").code == 0
    assert {p: p.read_bytes() for p in project.root.iterdir() if p.is_file()} == before
    assert key_file.read_text().count("AGE-SECRET-KEY-") == 1


def test_files_written_decrypt_with_sops(ready):
    sops = sops_binary()
    assert ready.reconcile("apply").code == 0
    result = subprocess.run(
        [sops, "-d", "--extract", '["value"]', str(ready.store / "openai.sops.yaml")],
        env={**ready.env, "SOPS_AGE_KEY_FILE": str(ready.key_file)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == OPENAI


def test_no_secret_leaks_into_output_or_disk(ready):
    """Run everything with -v; only `token`'s stdout may show a value."""
    runs = [
        ready.reconcile("plan", "-v"),
        ready.reconcile("apply", "-v"),
        ready.reconcile("plan", "-v", "-o", "json"),
        ready.reconcile("status", "-v", "-o", "json"),
        ready.reconcile("validate", "-v"),
    ]
    ready.env["OPENAI_API_KEY"] = OPENAI + "X"
    runs.append(ready.reconcile("plan", "-v"))
    runs.append(ready.reconcile("apply", "-v"))
    token = ready.reconcile("token", "openai", "-v")
    assert token.stdout.strip() == OPENAI + "X"
    for run in runs:
        for text in (run.stdout, run.stderr):
            assert OPENAI not in text and LOCAL not in text
    assert OPENAI not in token.stderr
    # Nothing under the project or home holds the plaintext, except the file the user made.
    source = ready.root / "local.key"
    for base in (ready.root, ready.root.parent / "home"):
        for path in base.rglob("*"):
            if path.is_file() and path != source:
                data = path.read_bytes()
                assert OPENAI.encode() not in data, path
                assert LOCAL.encode() not in data, path


# --- bad input: exit 1, a message naming file+line or grant, no traceback, nothing changed ---


def _break_yaml(p):
    p.write_config(config([p.recipient]) + "  broken: [unclosed\n")


def _unknown_key(p):
    p.write_config(config([p.recipient]).replace("    value: env:", "    valeu: env:"))


def _wrong_type(p):
    p.write_config(config([p.recipient]).replace("  dir: secrets", "  dir: [secrets]"))


def _bad_name(p):
    p.write_config(config([p.recipient]).replace("  local:", "  Local_Key!:"))


def _bad_url(p):
    p.write_config(
        config([p.recipient]) + "providers:\n  custom:\n    client_id: x\n"
        "    authorization_endpoint: http://auth.example.com/authorize\n"
        "    token_endpoint: https://auth.example.com/token\n"
    )


def _version_two(p):
    p.write_config(config([p.recipient]).replace("version: 1", "version: 2"))


def _unknown_preset(p):
    p.write_config(
        config([p.recipient]) + "providers:\n  gh:\n    preset: githbu\n    client_id: x\n"
    )


def _missing_env(p):
    p.env.pop("OPENAI_API_KEY")


def _missing_file(p):
    (p.root / "local.key").unlink()


def _no_identity(p):
    p.env["SOPS_AGE_KEY_FILE"] = str(p.root / "nowhere.txt")
    p.env["XDG_CONFIG_HOME"] = str(p.root / "empty-config")


def _wrong_identity(p):
    other = p.root.parent / "other.txt"
    new_identity(other)
    p.env["SOPS_AGE_KEY_FILE"] = str(other)


def _tampered(p):
    path = p.store / "openai.sops.yaml"
    text = path.read_text()
    start = text.index("data:") + 5
    flipped = "A" if text[start] != "A" else "B"
    path.write_text(text[:start] + flipped + text[start + 1 :])


def _tampered_plaintext(p):
    path = p.store / "local.sops.yaml"
    text = path.read_text()
    assert "kind: secret" in text
    path.write_text(text.replace("kind: secret", "kind: oauth2", 1))


BAD_INPUTS = [
    ("broken yaml", _break_yaml, "plan", ["providers.yaml:"]),
    ("unknown key", _unknown_key, "plan", ["providers.yaml:", "value"]),
    ("wrong type", _wrong_type, "plan", ["providers.yaml:3"]),
    ("bad grant name", _bad_name, "plan", ["providers.yaml:", "Local_Key!"]),
    ("bad url", _bad_url, "plan", ["providers.yaml:", "authorization_endpoint"]),
    ("version 2", _version_two, "plan", ["providers.yaml:1"]),
    ("unknown preset", _unknown_preset, "plan", ["providers.yaml:", "githbu", "github"]),
    ("missing env var", _missing_env, "apply", ["openai", "OPENAI_API_KEY"]),
    ("missing file", _missing_file, "apply", ["local", "local.key"]),
    ("no identity", _no_identity, "token", ["identity"]),
    ("wrong identity", _wrong_identity, "token", ["openai.sops.yaml"]),
    ("tampered value", _tampered, "plan", ["openai.sops.yaml", "tamper"]),
    ("tampered plaintext", _tampered_plaintext, "apply", ["local.sops.yaml", "tamper"]),
]


@pytest.mark.parametrize(
    ("spoil", "command", "expected"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(ready, spoil, command, expected):
    assert ready.reconcile("apply").code == 0
    spoil(ready)
    before = ready.snapshot()
    args = [command, "openai"] if command == "token" else [command]
    result = ready.reconcile(*args)
    assert result.code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for part in expected:
        assert part.lower() in result.stderr.lower(), (part, result.stderr)
    assert ready.snapshot() == before
    assert not [n for n in os.listdir(ready.store) if n.startswith(".")], "temp files left"
