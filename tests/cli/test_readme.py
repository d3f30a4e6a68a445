"""The README's quickstart, pasted into one shell in order, does what it says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support import sops_binary

ROOT = Path(__file__).resolve().parents[2]

#: `pip` and `python -m pytest` are not run here (no network, no suite inside the suite):
#: shell functions stand in for them and fail unless run from the repository's root.
AT_THE_ROOT = """\
pip() { test -f pyproject.toml || { echo "pip run outside the root: $PWD" >&2; return 1; }; }
python() { test -f pyproject.toml || { echo "python run outside the root: $PWD" >&2; return 1; }; }
"""


def quickstart_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_the_quickstart_runs_in_one_shell_in_order(project, tmp_path):
    sops_folder = str(Path(sops_binary()).parent)  # the README's `sops -d` runs by name
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "examples", root / "examples")
    shutil.copy(ROOT / "pyproject.toml", root)
    blocks = quickstart_blocks()
    assert len(blocks) == 2
    script = "set -e\n" + AT_THE_ROOT + "\n".join(blocks) + "test -f pyproject.toml\n"
    home = Path(project.env["HOME"])
    env = {
        **project.env,
        "PATH": os.pathsep.join(
            [str(Path(sys.executable).parent), sops_folder, project.env["PATH"]]
        ),
    }
    del env["SOPS_AGE_KEY_FILE"]  # `reconcile init` creates the identity where sops looks
    done = subprocess.run(
        ["sh", "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    value = (ROOT / "examples" / "demo-api-key.txt").read_text().strip()
    assert done.stdout.count(value) == 3  # `reconcile token`, `sops -d`, `sops -d --extract`
    assert (home / ".config" / "sops" / "age" / "keys.txt").exists()


def test_serve_needs_nothing_beyond_the_readme_install():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {re.split(r"[<>=\[ ]", spec, maxsplit=1)[0] for spec in project["dependencies"]}
    assert {"starlette", "uvicorn"} <= required


def test_the_readme_says_what_sops_cannot_detect_and_where_sops_comes_from():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### What SOPS cannot detect", 1)[1].split("\n#", 1)[0]
    assert "**Rollback.**" in section and "--force" in section
    assert "sops-binary" in readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
