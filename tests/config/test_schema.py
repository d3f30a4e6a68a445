"""The published JSON Schemas: well-formed, strict, and saying what SPEC §1 says."""

from __future__ import annotations

import re

import pytest
import yaml
from jsonschema import Draft202012Validator

from reconciler.catalog import preset_names
from reconciler.config import load_schema

RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"

# SPEC §1's example, with a real-looking recipient in place of `age1...`.
SPEC_EXAMPLE = f"""
version: 1
store:
  dir: secrets
  recipients:
    - {RECIPIENT}
defaults:
  refresh_before: 5m
  keepalive: 7d
providers:
  github:
    preset: github
    client_id: Iv1.0123456789abcdef
    client_secret: env:GITHUB_CLIENT_SECRET
    scopes: [repo, read:user]
    flow: device_code
  internal-api:
    issuer: https://auth.example.com
    client_id: reconciler
    client_secret: file:~/.config/internal-api/secret
    flow: client_credentials
    scopes: [api.read]
  custom:
    authorization_endpoint: https://example.com/oauth/authorize
    token_endpoint: https://example.com/oauth/token
    revocation_endpoint: https://example.com/oauth/revoke
    token_endpoint_auth_method: client_secret_basic
    authorization_params: {{audience: api.example.com}}
    client_id: abc
    scopes: [read]
secrets:
  openai:
    value: env:OPENAI_API_KEY
  anthropic:
    value: prompt
notify:
  webhook: https://hooks.example.com/reconciler
  secret: env:NOTIFY_HMAC_KEY
"""

QUIRKS = {
    "form_encoded_token_response",
    "slack_authed_user",
    "json_token_request",
    "salesforce_instance_url",
    "github_grant_deletion",
    "incremental_consent",
}


@pytest.fixture(scope="module")
def schema() -> dict:
    return load_schema("providers")


@pytest.fixture(scope="module")
def validator(schema: dict) -> Draft202012Validator:
    return Draft202012Validator(schema)


def _errors(validator: Draft202012Validator, document: object) -> list:
    return list(validator.iter_errors(document))


def _subschemas(node: object):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _subschemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _subschemas(value)


@pytest.mark.parametrize("name", ["providers", "catalog"])
def test_schemas_are_valid_2020_12(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", ["providers", "catalog"])
def test_every_object_with_properties_rejects_unknown_keys(name: str) -> None:
    for node in _subschemas(load_schema(name)):
        if "properties" in node and isinstance(node["properties"], dict):
            assert node.get("additionalProperties") is False, sorted(node["properties"])


def test_every_property_has_help_for_editors(schema: dict) -> None:
    """Each providers.yaml key shows a description in editors (directly or via its $ref)."""
    defs = schema["$defs"]
    for node in _subschemas(schema):
        for key, prop in (
            node.get("properties", {}).items() if isinstance(node.get("properties"), dict) else []
        ):
            target = prop
            if "$ref" in prop and "description" not in prop:
                target = defs[prop["$ref"].rsplit("/", 1)[-1]]
            assert "description" in target, key


def test_spec_example_validates(validator: Draft202012Validator) -> None:
    assert _errors(validator, yaml.safe_load(SPEC_EXAMPLE)) == []


def test_provider_fields_are_the_spec_list_plus_preset_vars(schema: dict) -> None:
    fields = set(schema["$defs"]["provider"]["properties"])
    assert fields == {
        "preset",
        "preset_vars",
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "device_authorization_endpoint",
        "revocation_endpoint",
        "client_id",
        "client_secret",
        "token_endpoint_auth_method",
        "scopes",
        "scope_separator",
        "flow",
        "pkce",
        "authorization_params",
        "token_params",
        "redirect_uri",
        "mcp",
        "client_metadata_url",
        "rotation_grace",  # SPEC §7
        "rotates_refresh_tokens",  # with coordination: which grants may refresh without it
    }


def test_preset_enum_is_the_catalog(schema: dict) -> None:
    assert schema["$defs"]["provider"]["properties"]["preset"]["enum"] == preset_names()


def test_catalog_quirk_vocabulary() -> None:
    catalog = load_schema("catalog")
    assert set(catalog["properties"]["quirks"]["items"]["enum"]) == QUIRKS


def test_version_must_be_1(validator: Draft202012Validator) -> None:
    assert _errors(validator, {"version": 1}) == []
    for bad in (2, "1", 0, None, True):
        assert _errors(validator, {"version": bad}), bad
    assert _errors(validator, {})  # required


def _pattern(schema: dict, name: str) -> re.Pattern:
    return re.compile(schema["$defs"][name]["pattern"])


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",
        "https://example.com/oauth/token",
        "https://example.com:8443/a?b=c#d",
        "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        "http://127.0.0.1/cb",
        "http://127.0.0.1:8765/oauth/link/callback",
        "http://[::1]:9000/token",
        "http://localhost",
        "http://localhost:3000/oauth",
    ],
)
def test_url_accepted(schema: dict, url: str) -> None:
    assert _pattern(schema, "url").search(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/token",
        "http://localhost.evil.com/token",
        "http://127.0.0.1.nip.io/token",
        "http://127.0.0.1@evil.com/",
        "http://localhost:80@evil.com/",
        "https://user@example.com/",
        "https://",
        "ftp://example.com",
        "example.com/token",
        "https://exa mple.com",
        "HTTP://localhost/",
        "http://[::2]/",
    ],
)
def test_url_rejected(schema: dict, url: str) -> None:
    assert not _pattern(schema, "url").search(url)


@pytest.mark.parametrize(
    "ref",
    [
        "env:OPENAI_API_KEY",
        "env:_x1",
        "file:secret.txt",
        "file:~/.config/x/secret",
        "file:/abs/path with space",
        "sops:../team.sops.yaml#services.shared.token",
        "sops:x.yaml#key",
        "prompt",
    ],
)
def test_reference_accepted(schema: dict, ref: str) -> None:
    assert _pattern(schema, "secretRef").search(ref)


@pytest.mark.parametrize(
    "ref",
    [
        "sk-live-abcdef",
        "env:",
        "env:1ABC",
        "env:A-B",
        "file:",
        "sops:x.yaml",
        "sops:x.yaml#",
        "sops:x.yaml#a..b",
        "sops:#key",
        "Prompt",
        "",
    ],
)
def test_reference_rejected(schema: dict, ref: str) -> None:
    assert not _pattern(schema, "secretRef").search(ref)


@pytest.mark.parametrize("value", ["30s", "5m", "2h", "7d", "1w", "1h30m", "0s"])
def test_duration_accepted(schema: dict, value: str) -> None:
    assert _pattern(schema, "duration").search(value)


@pytest.mark.parametrize("value", ["5", "5 m", "m", "5min", "-5m", "1.5h", ""])
def test_duration_rejected(schema: dict, value: str) -> None:
    assert not _pattern(schema, "duration").search(value)


@pytest.mark.parametrize("name", ["github", "a", "0", "internal-api", "my_api2", "a" * 63])
def test_name_accepted(schema: dict, name: str) -> None:
    assert _pattern(schema, "name").search(name)


@pytest.mark.parametrize("name", ["GitHub", "-x", "_x", "a.b", "a b", "", "a" * 64, "é"])
def test_name_rejected(schema: dict, name: str) -> None:
    assert not _pattern(schema, "name").search(name)


@pytest.mark.parametrize(
    "recipient",
    [
        RECIPIENT,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host",
    ],
)
def test_recipient_accepted(schema: dict, recipient: str) -> None:
    assert _pattern(schema, "recipient").search(recipient)


@pytest.mark.parametrize("recipient", ["age1...", "AGE1QL3Z", "ssh-rsa AAAAB3Nza", "x"])
def test_recipient_rejected(schema: dict, recipient: str) -> None:
    assert not _pattern(schema, "recipient").search(recipient)


def test_unknown_keys_rejected_at_every_level(validator: Draft202012Validator) -> None:
    base = yaml.safe_load(SPEC_EXAMPLE)
    for where in (
        base,
        base["store"],
        base["defaults"],
        base["providers"]["github"],
        base["secrets"]["openai"],
        base["notify"],
    ):
        where["surprise"] = 1
        assert _errors(validator, base)
        del where["surprise"]
    assert _errors(validator, base) == []


def test_preset_vars_need_a_preset(validator: Draft202012Validator) -> None:
    document = {
        "version": 1,
        "providers": {"x": {"client_id": "a", "preset_vars": {"tenant": "t"}}},
    }
    assert _errors(validator, document)
    document["providers"]["x"]["preset"] = "microsoft"
    assert _errors(validator, document) == []


def test_param_values_are_scalars(validator: Draft202012Validator) -> None:
    document = {
        "version": 1,
        "providers": {
            "x": {
                "preset": "google",
                "client_id": "a",
                "authorization_params": {"a": "b", "n": 1, "t": True, "drop": None},
            }
        },
    }
    assert _errors(validator, document) == []
    document["providers"]["x"]["authorization_params"]["bad"] = ["list"]
    assert _errors(validator, document)
