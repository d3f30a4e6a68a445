"""Metadata discovery (RFC 8414 / OpenID) and its on-disk cache, against a loopback stub."""

from __future__ import annotations

import json

import pytest

from reconciler.model import Provider
from reconciler.oauth import discovery
from reconciler.oauth.errors import OAuthError, TransientError


def metadata(issuer: str, **extra) -> dict:
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/authorize",
        "token_endpoint": issuer + "/token",
        "revocation_endpoint": issuer + "/revoke",
        "response_types_supported": ["code"],
        **extra,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        (
            "https://as.example.com",
            [
                "https://as.example.com/.well-known/oauth-authorization-server",
                "https://as.example.com/.well-known/openid-configuration",
            ],
        ),
        (
            "https://as.example.com/tenant/one",
            [
                "https://as.example.com/.well-known/oauth-authorization-server/tenant/one",
                "https://as.example.com/tenant/one/.well-known/openid-configuration",
            ],
        ),
        (
            "https://as.example.com/tenant/",
            [
                "https://as.example.com/.well-known/oauth-authorization-server/tenant/",
                "https://as.example.com/tenant/.well-known/openid-configuration",
            ],
        ),
    ],
)
def test_metadata_urls(issuer, expected):
    assert discovery.metadata_urls(issuer) == expected


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert discovery.cache_dir() == tmp_path / "oauth-reconciler" / "discovery"


def test_discover_caches_for_the_ttl(stub, tmp_path):
    issuer = stub.base_url
    stub.reply("GET", "/.well-known/oauth-authorization-server", body=metadata(issuer))
    clock = Clock()
    first = discovery.discover(issuer, cache=tmp_path, clock=clock)
    second = discovery.discover(issuer, cache=tmp_path, clock=clock)
    assert first == second == metadata(issuer)
    assert len(stub.requests) == 1
    (entry,) = tmp_path.iterdir()
    assert json.loads(entry.read_text())["issuer"] == issuer
    clock.now += discovery.DEFAULT_TTL + 1
    discovery.discover(issuer, cache=tmp_path, clock=clock)
    assert len(stub.requests) == 2


def test_openid_fallback(stub, tmp_path):
    issuer = stub.base_url
    stub.reply("GET", "/.well-known/openid-configuration", body=metadata(issuer))
    assert discovery.discover(issuer, cache=tmp_path)["token_endpoint"] == issuer + "/token"
    assert [r.path for r in stub.requests] == [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ]


def test_nothing_found(stub, tmp_path):
    with pytest.raises(OAuthError) as info:
        discovery.discover(stub.base_url, name="acme", cache=tmp_path)
    assert info.value.error == "metadata_not_found" and "acme" in str(info.value)


def test_issuer_mismatch_is_rejected_and_not_cached(stub, tmp_path):
    issuer = stub.base_url
    stub.reply("GET", "/.well-known/oauth-authorization-server", body=metadata(issuer + "/"))
    with pytest.raises(OAuthError) as info:
        discovery.discover(issuer, cache=tmp_path)
    assert info.value.error == "issuer_mismatch"
    assert list(tmp_path.iterdir()) == []


def test_insecure_endpoint_in_metadata_is_rejected(stub, tmp_path):
    issuer = stub.base_url
    stub.reply(
        "GET",
        "/.well-known/oauth-authorization-server",
        body=metadata(issuer, token_endpoint="http://evil.example.com/token"),
    )
    with pytest.raises(OAuthError) as info:
        discovery.discover(issuer, cache=tmp_path)
    assert info.value.error == "invalid_metadata"


def test_stale_cache_is_used_when_the_server_is_down(stub, tmp_path):
    issuer = stub.base_url
    stub.reply("GET", "/.well-known/oauth-authorization-server", body=metadata(issuer))
    clock = Clock()
    discovery.discover(issuer, cache=tmp_path, clock=clock)
    stub.reply("GET", "/.well-known/oauth-authorization-server", 503, "down")
    clock.now += discovery.DEFAULT_TTL + 1
    assert discovery.discover(issuer, cache=tmp_path, clock=clock) == metadata(issuer)
    with pytest.raises(TransientError):
        discovery.discover(issuer, cache=tmp_path / "empty", clock=clock)


def test_corrupt_cache_is_ignored(stub, tmp_path):
    issuer = stub.base_url
    stub.reply("GET", "/.well-known/oauth-authorization-server", body=metadata(issuer))
    discovery.discover(issuer, cache=tmp_path)
    (entry,) = tmp_path.iterdir()
    entry.write_text("{not json")
    assert discovery.discover(issuer, cache=tmp_path) == metadata(issuer)
    assert len(stub.requests) == 2


def test_resolve_endpoints_explicit_fields_win(stub, tmp_path):
    issuer = stub.base_url
    stub.reply(
        "GET",
        "/.well-known/oauth-authorization-server",
        body=metadata(
            issuer,
            device_authorization_endpoint=issuer + "/device",
            token_endpoint_auth_methods_supported=["client_secret_post", "private_key_jwt"],
            authorization_response_iss_parameter_supported=True,
        ),
    )
    provider = Provider(
        name="acme",
        client_id="c",
        issuer=issuer,
        token_endpoint="https://explicit.example.com/token",
        client_secret_ref="env:SECRET",
    )
    resolved = discovery.resolve_endpoints(provider, cache=tmp_path)
    assert resolved.token_endpoint == "https://explicit.example.com/token"
    assert resolved.authorization_endpoint == issuer + "/authorize"
    assert resolved.device_authorization_endpoint == issuer + "/device"
    assert resolved.revocation_endpoint == issuer + "/revoke"
    assert resolved.token_endpoint_auth_method == "client_secret_post"
    assert resolved.extras["authorization_response_iss_parameter_supported"] is True


def test_resolve_endpoints_without_issuer_or_when_complete_does_nothing(stub, tmp_path):
    bare = Provider(name="acme", client_id="c", token_endpoint="https://x.example.com/t")
    assert discovery.resolve_endpoints(bare, cache=tmp_path) is bare
    complete = Provider(
        name="acme",
        client_id="c",
        issuer=stub.base_url,
        authorization_endpoint="https://x.example.com/a",
        token_endpoint="https://x.example.com/t",
        device_authorization_endpoint="https://x.example.com/d",
        revocation_endpoint="https://x.example.com/r",
    )
    assert discovery.resolve_endpoints(complete, cache=tmp_path) is complete
    assert stub.requests == []
