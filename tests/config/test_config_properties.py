"""Property tests: whatever YAML a user writes, ``load`` returns a Desired or raises
ConfigError with a located message; never another exception."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.catalog import preset_names
from reconciler.config import ConfigError, load
from reconciler.model import Desired

RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
ENVIRON = {"HOME": "/nonexistent-home", "TOKEN": "t0k", "EMPTY": ""}

TOP_KEYS = ["version", "store", "defaults", "providers", "secrets", "notify"]
PROVIDER_KEYS = [
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
]
OTHER_KEYS = ["dir", "recipients", "refresh_before", "keepalive", "value", "webhook", "secret"]
INTERESTING = [
    1,
    2,
    "1",
    "secrets",
    "5m",
    "7d",
    "0s",
    RECIPIENT,
    "github",
    "google",
    "microsoft",
    "githb",
    "https://example.com/token",
    "http://127.0.0.1:9/t",
    "http://example.com/t",
    "https://e.com/{tenant}/x",
    "env:TOKEN",
    "env:EMPTY",
    "env:MISSING",
    "file:k.txt",
    "file:missing.txt",
    "file:~/x",
    "file:.",
    "file:/dev/null",
    "sops:missing.sops.yaml#a.b",
    "prompt",
    "device_code",
    "client_credentials",
    "authorization_code",
    "client_secret_basic",
    "none",
    "common",
    "",
    " ",
    "\x00",
    "{x}",
]

keys = st.one_of(
    st.sampled_from(TOP_KEYS + PROVIDER_KEYS + OTHER_KEYS),
    st.sampled_from(["gh", "a", "openai", "internal-api", "Bad Name", "-x", "tenant"]),
    st.text(max_size=8),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(INTERESTING),
    st.text(max_size=20),
    st.dates(),
    st.datetimes(),
    st.binary(max_size=8),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=6),
    ),
    max_leaves=40,
)


def _valid_base() -> dict:
    return {
        "version": 1,
        "store": {"dir": "out", "recipients": [RECIPIENT]},
        "defaults": {"refresh_before": "5m", "keepalive": "7d"},
        "providers": {
            "gh": {"preset": "github", "client_id": "c", "client_secret": "env:TOKEN"},
            "ms": {"preset": "microsoft", "client_id": "c", "preset_vars": {"tenant": "t"}},
            "api": {
                "issuer": "https://auth.example.com",
                "client_id": "c",
                "client_secret": "file:k.txt",
                "flow": "client_credentials",
            },
        },
        "secrets": {"a": {"value": "env:TOKEN"}, "b": {"value": "prompt"}},
        "notify": {"webhook": "https://hooks.example.com/x", "secret": "env:TOKEN"},
    }


@st.composite
def mutated(draw) -> dict:
    """The valid base with one subtree replaced, removed or added."""
    document = _valid_base()
    node = document
    path = []
    while isinstance(node, dict) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node)))
        path.append(key)
        if not isinstance(node[key], dict):
            break
        node = node[key]
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if path and action == "replace":
        parent[path[-1]] = draw(documents)
    elif path and action == "delete":
        del parent[path[-1]]
    elif isinstance(node, dict):
        node[draw(keys)] = draw(documents)
    return document


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("props")
    (folder / "k.txt").write_text("file-secret\n")
    return folder


@pytest.fixture(scope="module", autouse=True)
def no_sops_yaml():
    """Recipients without a .sops.yaml: every name gets one, except `norecipient`."""
    import reconciler.vault.sops.rules as vault_keys

    def rule_recipients(file_path: Path):
        return None if Path(file_path).name.startswith("norecipient") else (RECIPIENT,)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vault_keys, "rule_recipients", rule_recipients)
        yield


def _check(workdir: Path, text: str) -> Desired | ConfigError:
    path = workdir / "providers.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        return load(path, environ=ENVIRON)
    except ConfigError as error:
        message = str(error)
        assert message.startswith(str(path)), message
        assert "\n\n" not in message
        assert "file-secret" not in message and "t0k" not in message
        return error


def _dump(document: object) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(documents)
def test_arbitrary_structures(workdir: Path, document: object) -> None:
    _check(workdir, _dump(document))


@SETTINGS
@given(st.dictionaries(st.sampled_from(TOP_KEYS), documents, max_size=6))
def test_arbitrary_top_level_mappings(workdir: Path, document: dict) -> None:
    _check(workdir, _dump(document))


@SETTINGS
@given(mutated())
def test_mutations_of_a_valid_config(workdir: Path, document: dict) -> None:
    _check(workdir, _dump(document))


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text(workdir: Path, text: str) -> None:
    _check(workdir, text)


yaml_alphabet = st.sampled_from(list(":-[]{}#&*!|>'\"%@`,?\n\t ") + list(string.ascii_lowercase))


@SETTINGS
@given(st.text(alphabet=yaml_alphabet, max_size=200))
def test_yaml_punctuation_soup(workdir: Path, text: str) -> None:
    _check(workdir, "version: 1\n" + text)


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes(workdir: Path, data: bytes) -> None:
    path = workdir / "providers.yaml"
    path.write_bytes(data)
    try:
        load(path, environ=ENVIRON)
    except ConfigError as error:
        assert str(error).startswith(str(path))


names = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,20}\Z")


@SETTINGS
@given(
    providers=st.dictionaries(
        names,
        st.fixed_dictionaries(
            {
                "preset": st.sampled_from(preset_names()),
                "client_id": st.text(
                    alphabet=st.characters(blacklist_categories=("C", "Z")), min_size=1
                ),
            },
            optional={
                "scopes": st.lists(st.from_regex(r"\A[!-~]{1,12}\Z"), unique=True, max_size=4),
                "pkce": st.booleans(),
                "client_secret": st.sampled_from(["env:TOKEN", "file:k.txt", "prompt"]),
                "authorization_params": st.dictionaries(
                    st.text(min_size=1, max_size=5),
                    st.one_of(st.text(max_size=5), st.booleans(), st.integers(), st.none()),
                    max_size=3,
                ),
            },
        ),
        max_size=4,
    ),
    secrets=st.dictionaries(
        names, st.sampled_from(["env:TOKEN", "file:k.txt", "prompt"]), max_size=4
    ),
)
def test_valid_configs_always_load(workdir: Path, providers: dict, secrets: dict) -> None:
    secrets = {k: {"value": v} for k, v in secrets.items() if k not in providers}
    document = {"version": 1, "providers": providers, "secrets": secrets}
    result = _check(workdir, _dump(document))
    assert isinstance(result, Desired), str(result)
    assert set(result.providers) == set(providers)
    assert set(result.secrets) == set(secrets)
    assert set(result.recipients) == set(providers) | set(secrets)
    for name, entry in providers.items():
        provider = result.providers[name]
        assert provider.client_id == entry["client_id"]
        assert provider.preset == entry["preset"]
        if "scopes" in entry:
            assert provider.scopes == tuple(entry["scopes"])
        assert provider.token_endpoint and provider.token_endpoint.startswith("https://")
    for name, spec in result.secrets.items():
        assert (spec.value is None) == (secrets[name]["value"] == "prompt")
