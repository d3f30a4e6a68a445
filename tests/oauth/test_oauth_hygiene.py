"""Output hygiene: what a provider echoes of the secrets it was sent never comes back out, in
any encoding; provider-supplied strings reach no terminal with a control character in them."""

from __future__ import annotations

import pytest

from reconciler.model import Secret
from reconciler.oauth import device, tokens
from reconciler.oauth.errors import InvalidGrant, InvalidTokenResponse

from .support import STUB_CLIENT_SECRET, STUB_REFRESH, echo, every_form


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_echoed_secrets_are_scrubbed_in_every_encoding(stub, make_provider, method):
    stub.route("POST", "/token", echo)
    provider = make_provider(token_endpoint_auth_method=method)
    with pytest.raises(InvalidGrant) as raised:
        tokens.refresh(provider, Secret(STUB_CLIENT_SECRET), Secret(STUB_REFRESH), now=None)
    (request,) = stub.hits("/token")
    assert request.form["refresh_token"] == STUB_REFRESH  # the secrets were indeed sent
    error = raised.value
    assert "bad request" in error.description and "***" in error.description
    for form in every_form("client-1", STUB_CLIENT_SECRET, STUB_REFRESH):
        for text in (str(error), repr(error), error.description):
            assert form not in text, form


def test_control_characters_from_the_provider_are_escaped(stub, make_provider):
    stub.reply(
        "POST",
        "/token",
        body={
            "access_token": "at-plain-0123",
            "token_type": "mac\x1b]0;owned\x07",
            "scope": "read write\x1b[2J\u202e",
        },
    )
    result = tokens.refresh(make_provider(), None, Secret("rt-abcdef"), now=None)
    assert result.token_type == "mac\\x1b]0;owned\\x07"
    assert result.granted_scopes == ("read", "write\\x1b[2J\\u202e")


def test_an_error_description_shows_its_control_characters_escaped(stub, make_provider):
    description = "revoked\x1b[2J\x1b]0;pwned\x07\nby admin"
    stub.reply("POST", "/token", 400, {"error": "invalid_grant", "error_description": description})
    with pytest.raises(InvalidGrant) as raised:
        tokens.refresh(make_provider(), None, Secret("rt-abcdef"), now=None)
    assert raised.value.description == "revoked\\x1b[2J\\x1b]0;pwned\\x07\\nby admin"
    assert "\x1b" not in str(raised.value)


@pytest.mark.parametrize("key", ["access_token", "refresh_token", "id_token"])
def test_a_token_with_a_control_character_is_refused(stub, make_provider, key):
    body = {"access_token": "at-plain-0123", key: "tok\x1b[31mred"}
    stub.reply("POST", "/token", body=body)
    with pytest.raises(InvalidTokenResponse) as raised:
        tokens.refresh(make_provider(), None, Secret("rt-abcdef"), now=None)
    assert f"`{key}` contains control characters" in str(raised.value)
    assert "tok" not in str(raised.value).replace("token", "")


def test_a_device_user_code_is_shown_escaped_and_a_controlled_uri_refused(stub, make_provider):
    answer = {
        "device_code": "dc-0123456789",
        "user_code": "WDJB\x1b[2J-MJHT",
        "verification_uri": stub.url("/device"),
        "expires_in": 600,
    }
    stub.reply("POST", "/device", body=answer)
    started = device.start_device_flow(make_provider(flow="device_code"), None)
    assert started.user_code == "WDJB\\x1b[2J-MJHT"

    stub.reply("POST", "/device", body={**answer, "verification_uri": stub.url("/d\x1b[2J")})
    with pytest.raises(Exception, match="verification page that is not an https URL"):
        device.start_device_flow(make_provider(flow="device_code"), None)
