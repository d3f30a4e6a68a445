"""The built-in presets: valid data, merged into valid providers, with the right quirks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from reconciler.catalog import UnknownPreset, load_preset, preset_names
from reconciler.config import ConfigError, load, load_schema

RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
ROOT = Path(__file__).resolve().parents[2]
PRESETS = [
    "asana",
    "atlassian",
    "dropbox",
    "figma",
    "github",
    "gitlab",
    "google",
    "hubspot",
    "linear",
    "microsoft",
    "notion",
    "salesforce",
    "slack",
    "x",
    "zoom",
]
WITH_DEVICE_FLOW = {"github", "google", "microsoft", "gitlab", "zoom"}
URL = re.compile(load_schema("providers")["$defs"]["url"]["pattern"])


def _load_one(tmp_path: Path, body: str, environ: dict | None = None):
    path = tmp_path / "providers.yaml"
    path.write_text(f"version: 1\nstore:\n  recipients: [{RECIPIENT}]\nproviders:\n  p:\n{body}")
    return load(path, environ=environ or {})


def test_preset_names() -> None:
    assert preset_names() == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_validates_against_catalog_schema(name: str) -> None:
    validator = Draft202012Validator(load_schema("catalog"))
    errors = [e.message for e in validator.iter_errors(load_preset(name))]
    assert errors == []


@pytest.mark.parametrize("name", PRESETS)
def test_preset_merges_into_a_valid_provider(tmp_path: Path, name: str) -> None:
    preset = load_preset(name)
    desired = _load_one(
        tmp_path,
        f"    preset: {name}\n    client_id: cid\n    client_secret: env:SECRET\n",
    )
    provider = desired.providers["p"]
    assert provider.preset == name
    assert provider.client_secret_ref == "env:SECRET"
    assert provider.flow == "authorization_code"
    for field in ("authorization_endpoint", "token_endpoint"):
        value = getattr(provider, field)
        assert value and URL.fullmatch(value) and "{" not in value, (field, value)
    for field in ("device_authorization_endpoint", "revocation_endpoint", "issuer"):
        value = getattr(provider, field)
        assert (value is None) == (field not in preset)
        assert value is None or (URL.fullmatch(value) and "{" not in value)
    assert provider.scopes == tuple(preset.get("default_scopes", ()))
    assert provider.pkce is preset["pkce"]
    assert provider.scope_separator == preset["scope_separator"]
    assert provider.quirks == tuple(preset.get("quirks", ()))
    expected_method = preset["token_endpoint_auth_method"]
    if expected_method == "none":
        expected_method = "client_secret_basic"
    assert provider.token_endpoint_auth_method == expected_method
    assert dict(provider.authorization_params) == preset.get("authorization_params", {})


@pytest.mark.parametrize("name", PRESETS)
def test_public_client_gets_auth_method_none(tmp_path: Path, name: str) -> None:
    desired = _load_one(tmp_path, f"    preset: {name}\n    client_id: cid\n")
    assert desired.providers["p"].token_endpoint_auth_method == "none"


@pytest.mark.parametrize("name", PRESETS)
def test_device_flow_only_where_the_provider_has_one(tmp_path: Path, name: str) -> None:
    body = f"    preset: {name}\n    client_id: cid\n    flow: device_code\n"
    if name in WITH_DEVICE_FLOW:
        provider = _load_one(tmp_path, body).providers["p"]
        assert provider.device_authorization_endpoint
    else:
        with pytest.raises(ConfigError, match="device"):
            _load_one(tmp_path, body)


def test_quirks_per_provider() -> None:
    quirks = {name: set(load_preset(name).get("quirks", ())) for name in PRESETS}
    assert quirks["github"] == {"form_encoded_token_response", "github_grant_deletion"}
    assert quirks["slack"] == {"slack_authed_user"}
    assert quirks["notion"] == {"json_token_request"}
    assert quirks["salesforce"] == {"salesforce_instance_url"}
    assert quirks["google"] == {"incremental_consent"}
    others = set(PRESETS) - {"github", "slack", "notion", "salesforce", "google"}
    assert all(not quirks[name] for name in others)


def test_provider_specific_parameters() -> None:
    google = load_preset("google")["authorization_params"]
    assert google == {
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
    }
    atlassian = load_preset("atlassian")["authorization_params"]
    assert atlassian == {"audience": "api.atlassian.com", "prompt": "consent"}
    assert load_preset("dropbox")["authorization_params"] == {"token_access_type": "offline"}
    assert load_preset("notion")["authorization_params"] == {"owner": "user"}
    microsoft = load_preset("microsoft")
    assert microsoft["vars"] == {"tenant": "common"}
    assert "{tenant}" in microsoft["token_endpoint"]
    assert load_preset("slack")["scope_separator"] == ","
    assert load_preset("notion")["token_endpoint_auth_method"] == "client_secret_basic"


def test_microsoft_tenant_defaults_to_common_and_can_be_set(tmp_path: Path) -> None:
    provider = _load_one(tmp_path, "    preset: microsoft\n    client_id: c\n").providers["p"]
    assert provider.token_endpoint == ("https://login.microsoftonline.com/common/oauth2/v2.0/token")
    provider = _load_one(
        tmp_path,
        "    preset: microsoft\n    client_id: c\n    preset_vars: {tenant: contoso.com}\n",
    ).providers["p"]
    assert provider.authorization_endpoint == (
        "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/authorize"
    )
    assert provider.device_authorization_endpoint == (
        "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/devicecode"
    )


def test_gitlab_self_managed_host(tmp_path: Path) -> None:
    provider = _load_one(
        tmp_path,
        "    preset: gitlab\n    client_id: c\n    preset_vars: {host: git.example.org}\n",
    ).providers["p"]
    assert provider.token_endpoint == "https://git.example.org/oauth/token"
    assert provider.issuer == "https://git.example.org"


def test_github_extras_for_grant_deletion(tmp_path: Path) -> None:
    provider = _load_one(tmp_path, "    preset: github\n    client_id: c\n").providers["p"]
    assert provider.extras["api_base"] == "https://api.github.com"
    assert provider.revocation_endpoint is None


def test_unknown_preset_is_a_key_error_with_suggestions() -> None:
    with pytest.raises(KeyError) as caught:
        load_preset("githib")
    error = caught.value
    assert isinstance(error, UnknownPreset)
    assert error.suggestion == "github"
    assert "did you mean `github`?" in str(error)
    assert "known presets: asana, atlassian" in str(error)


@pytest.mark.parametrize("name", ["../config", "GitHub", "", "github.yaml", "__init__"])
def test_odd_names_are_unknown(name: str) -> None:
    with pytest.raises(UnknownPreset):
        load_preset(name)


def test_load_preset_returns_a_copy() -> None:
    first = load_preset("google")
    first["authorization_params"]["prompt"] = "none"
    first["token_endpoint"] = "https://evil.example"
    again = load_preset("google")
    assert again["authorization_params"]["prompt"] == "consent"
    assert again["token_endpoint"] == "https://oauth2.googleapis.com/token"


def test_installed_layout_ships_presets_and_schemas(tmp_path: Path) -> None:
    """Built the way a wheel is (setuptools build_py, package-dir and package-data from
    pyproject.toml), the package finds its presets and schemas in its own folder, away
    from the source checkout. (setuptools is a test dependency.)"""
    source = tmp_path / "src"
    source.mkdir()
    for item in ("pyproject.toml", "reconciler", "schemas"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, source / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, source / item)
    (source / "README.md").write_text("x\n")
    out = tmp_path / "site"
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(out),
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert (out / "reconciler/schemas/providers.schema.json").is_file()
    assert (out / "reconciler/schemas/catalog.schema.json").is_file()
    for preset in PRESETS:
        assert (out / f"reconciler/catalog/{preset}.yaml").is_file()

    config = tmp_path / "elsewhere" / "providers.yaml"
    config.parent.mkdir()
    config.write_text(
        f"version: 1\nstore: {{recipients: [{RECIPIENT}]}}\n"
        "providers:\n  gh: {preset: github, client_id: c}\n"
    )
    probe = (
        "import reconciler.config as c, reconciler.catalog as k, pathlib\n"
        f"assert c.__file__.startswith({str(out)!r}), c.__file__\n"
        f"assert k.preset_names() == {PRESETS!r}\n"
        "assert c.load_schema('catalog')['title']\n"
        f"d = c.load(pathlib.Path({str(config)!r}), environ={{}})\n"
        "print(d.providers['gh'].token_endpoint)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=config.parent,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(out)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "https://github.com/login/oauth/access_token"
