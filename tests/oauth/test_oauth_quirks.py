"""Each quirk hook against a loopback server answering in the provider's documented format."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from reconciler.model import Secret
from reconciler.oauth import quirks, revocation, tokens, transport
from reconciler.oauth.authorize import build_authorization_url
from reconciler.oauth.errors import InvalidGrant, OAuthError, TransientError
from reconciler.oauth.tokens import grant_from_result

from .support import SLACK_V2

NOW = datetime(2025, 3, 1, tzinfo=UTC)
SECRET = Secret("app-secret")
REDIRECT = "http://127.0.0.1:8400/oauth/link/callback"


def exchange(provider, secret=SECRET):
    return tokens.exchange_code(provider, secret, "code-1", REDIRECT, "v" * 43, now=NOW)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_vocabulary_is_the_catalogs():
    assert {
        "form_encoded_token_response",
        "slack_authed_user",
        "json_token_request",
        "salesforce_instance_url",
        "github_grant_deletion",
        "incremental_consent",
    } == quirks.KNOWN_QUIRKS


def test_unknown_quirk_is_an_error(make_provider):
    with pytest.raises(ValueError, match="unknown quirk"):
        exchange(make_provider(quirks=("github_form",)))


# --- GitHub --------------------------------------------------------------------------------


def test_github_form_encoded_token_response(stub, make_provider):
    # https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps
    stub.reply(
        "POST",
        "/token",
        body="access_token=gho_16C7e42F292c6912E7710c838347Ae178B4a&scope=repo%2Cgist"
        "&token_type=bearer",
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    provider = make_provider(quirks=("form_encoded_token_response",), scopes=("repo", "gist"))
    result = exchange(provider)
    assert result.access_token.reveal().startswith("gho_")
    assert result.granted_scopes == ("repo", "gist")
    assert result.token_type == "Bearer" and result.expires_at is None


def test_github_error_in_a_200_form_response(stub, make_provider):
    stub.reply(
        "POST",
        "/token",
        body="error=bad_verification_code&error_description=The+code+passed+is+incorrect"
        "+or+expired.&error_uri=https%3A%2F%2Fdocs.github.com",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    with pytest.raises(InvalidGrant) as info:
        exchange(make_provider(quirks=("form_encoded_token_response",)))
    assert "incorrect or expired" in info.value.description


def test_without_the_quirk_a_text_plain_form_body_is_refused(stub, make_provider):
    stub.reply(
        "POST",
        "/token",
        body="access_token=gho_x&token_type=bearer",
        headers={"Content-Type": "text/plain"},
    )
    with pytest.raises(OAuthError, match="neither JSON nor form-encoded"):
        exchange(make_provider())


def test_github_grant_deletion(stub, make_provider):
    stub.reply("DELETE", "/applications/Iv1.abc/grant", 204, "")
    provider = make_provider(
        client_id="Iv1.abc",
        quirks=("form_encoded_token_response", "github_grant_deletion"),
        extras={"api_base": stub.base_url},
        revocation_endpoint=None,
    )
    revocation.revoke(provider, SECRET, Secret("gho_token"), "access_token")
    (request,) = stub.hits("/applications/Iv1.abc/grant")
    assert request.method == "DELETE"
    assert request.headers["authorization"] == basic("Iv1.abc", "app-secret")
    assert request.json == {"access_token": "gho_token"}
    assert request.headers["accept"] == "application/vnd.github+json"


def test_github_grant_deletion_errors(stub, make_provider):
    provider = make_provider(quirks=("github_grant_deletion",), extras={"api_base": stub.base_url})
    stub.reply("DELETE", "/applications/client-1/grant", 422, {"message": "Validation Failed"})
    revocation.revoke(provider, SECRET, Secret("gone"))  # already gone: nothing left to revoke
    stub.reply("DELETE", "/applications/client-1/grant", 401, {"message": "Bad credentials"})
    with pytest.raises(OAuthError, match="Bad credentials") as info:
        revocation.revoke(provider, SECRET, Secret("t"))
    assert info.value.error == "invalid_client"
    with pytest.raises(OAuthError, match="client secret"):
        revocation.revoke(provider, None, Secret("t"))


def test_github_default_api_base_is_github(make_provider, monkeypatch):
    seen = []

    def fake_send(provider, method, url, **kwargs):
        seen.append((method, url))
        raise OAuthError("stop")

    monkeypatch.setattr(transport, "send", fake_send)
    provider = make_provider(client_id="Iv1.abc", quirks=("github_grant_deletion",))
    with pytest.raises(OAuthError):
        revocation.revoke(provider, SECRET, Secret("t"))
    assert seen == [("DELETE", "https://api.github.com/applications/Iv1.abc/grant")]


# --- Slack ---------------------------------------------------------------------------------


def test_slack_user_token_under_authed_user(stub, make_provider):
    stub.reply("POST", "/token", body=SLACK_V2)
    provider = make_provider(
        quirks=("slack_authed_user",), scopes=("chat:write", "channels:history")
    )
    result = exchange(provider)
    assert result.access_token.reveal() == "xoxp-1234"
    assert result.refresh_token.reveal() == "xoxe-1-user"
    assert result.granted_scopes == ("chat:write", "channels:history")
    assert result.token_type == "Bearer"
    # The bot token that came with it is kept too, as the secondary token.
    assert result.secondary_token.reveal() == SLACK_V2["access_token"]
    assert result.extra == {
        "slack_user_id": "U1234",
        "slack_team_id": "T9TK3CUKW",
        "slack_app_id": "A0KRD7HC3",
        "secondary_token_kind": "bot",
        "secondary_granted_scopes": "commands",
    }
    assert "xox" not in repr(result)


def test_slack_bot_scopes_with_an_explicit_user_scope_keep_both_tokens(stub, make_provider):
    """Bot scopes declared, user scopes in authorization_params.user_scope: the grant is the bot
    token (what the declared scopes were asked for), the user token is the secondary one."""
    stub.reply("POST", "/token", body=SLACK_V2)
    provider = make_provider(
        quirks=("slack_authed_user",),
        scopes=("commands",),
        authorization_params={"user_scope": "chat:write,channels:history"},
    )
    result = exchange(provider)
    assert result.access_token.reveal() == SLACK_V2["access_token"]
    assert result.refresh_token is None  # the bot token of SLACK_V2 does not rotate
    assert result.granted_scopes == ("commands",)
    assert result.token_type == "Bearer"
    assert result.secondary_token.reveal() == "xoxp-1234"
    assert result.extra["secondary_token_kind"] == "user"
    assert result.extra["secondary_granted_scopes"] == "chat:write,channels:history"


def test_slack_ok_false_is_an_error(stub, make_provider):
    stub.reply("POST", "/token", body={"ok": False, "error": "invalid_refresh_token"})
    with pytest.raises(InvalidGrant, match="invalid_refresh_token"):
        tokens.refresh(
            make_provider(quirks=("slack_authed_user",)), SECRET, Secret("xoxe-1"), now=NOW
        )
    stub.reply("POST", "/token", body={"ok": False})
    with pytest.raises(OAuthError, match="slack_error"):
        exchange(make_provider(quirks=("slack_authed_user",)))


def test_slack_refresh_answer_at_top_level(stub, make_provider):
    stub.reply(
        "POST",
        "/token",
        body={
            "ok": True,
            "access_token": "xoxe.xoxp-2",
            "refresh_token": "xoxe-1-new",
            "token_type": "user",
            "expires_in": 43200,
            "scope": "chat:write",
        },
    )
    result = tokens.refresh(
        make_provider(quirks=("slack_authed_user",)), SECRET, Secret("xoxe-1-old"), now=NOW
    )
    assert result.access_token.reveal() == "xoxe.xoxp-2"
    assert result.granted_scopes == ("chat:write",)


def test_slack_requests_user_scope(make_provider):
    provider = make_provider(quirks=("slack_authed_user",))
    url = build_authorization_url(provider, ["chat:write", "users:read"], REDIRECT, "st", "c" * 43)
    params = query(url)
    assert params["user_scope"] == "chat:write,users:read"
    assert "scope" not in params


def test_slack_explicit_user_scope_wins(make_provider):
    provider = make_provider(
        quirks=("slack_authed_user",),
        authorization_params={"user_scope": "search:read"},
        pkce=False,
    )
    params = query(build_authorization_url(provider, ["commands"], REDIRECT, "st", None))
    assert params["user_scope"] == "search:read" and params["scope"] == "commands"


def test_slack_auth_revoke_answers(stub, make_provider):
    # https://api.slack.com/methods/auth.revoke: HTTP 200 whatever happened, `ok` tells.
    provider = make_provider(quirks=("slack_authed_user",))
    stub.reply("POST", "/revoke", body={"ok": True, "revoked": True})
    revocation.revoke(provider, SECRET, Secret("xoxp-1"))
    assert stub.hits("/revoke")[0].form["token"] == "xoxp-1"
    stub.reply("POST", "/revoke", body={"ok": False, "error": "invalid_auth"})
    revocation.revoke(provider, SECRET, Secret("xoxp-1"))  # already invalid: nothing to revoke
    stub.reply("POST", "/revoke", body={"ok": False, "error": "ratelimited"})
    with pytest.raises(TransientError):
        revocation.revoke(provider, SECRET, Secret("xoxp-1"))
    stub.reply("POST", "/revoke", body={"ok": False, "error": "missing_scope"})
    with pytest.raises(OAuthError, match="missing_scope"):
        revocation.revoke(provider, SECRET, Secret("xoxp-1"))


# --- Notion --------------------------------------------------------------------------------


def test_notion_json_token_request(stub, make_provider):
    # https://developers.notion.com/docs/authorization#step-4
    stub.reply(
        "POST",
        "/token",
        body={
            "access_token": "secret_notion",
            "token_type": "bearer",
            "bot_id": "b-1",
            "workspace_id": "w-1",
            "workspace_name": "Acme",
            "owner": {"type": "user", "user": {"object": "user", "id": "u-1"}},
            "duplicated_template_id": None,
            "request_id": "r-1",
        },
    )
    provider = make_provider(
        quirks=("json_token_request",),
        scopes=(),
        token_endpoint_auth_method="client_secret_basic",
    )
    result = exchange(provider)
    (request,) = stub.hits("/token")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == basic("client-1", "app-secret")
    assert request.json == {
        "grant_type": "authorization_code",
        "code": "code-1",
        "redirect_uri": REDIRECT,
        "code_verifier": "v" * 43,
    }
    assert result.access_token.reveal() == "secret_notion" and result.granted_scopes is None
    assert grant_from_result(provider, result, now=NOW).granted_scopes == ()


def test_notion_json_request_uses_basic_even_if_post_is_configured(stub, make_provider):
    stub.reply("POST", "/token", body={"access_token": "secret_notion"})
    provider = make_provider(
        quirks=("json_token_request",), token_endpoint_auth_method="client_secret_post"
    )
    exchange(provider)
    (request,) = stub.hits("/token")
    assert request.headers["authorization"] == basic("client-1", "app-secret")
    assert "client_secret" not in request.json


def test_notion_json_revocation(stub, make_provider):
    # https://developers.notion.com/reference/revoke-token
    stub.reply("POST", "/revoke", body={})
    provider = make_provider(
        quirks=("json_token_request",), token_endpoint_auth_method="client_secret_basic"
    )
    revocation.revoke(provider, SECRET, Secret("secret_notion"))
    (request,) = stub.hits("/revoke")
    assert request.json == {"token": "secret_notion"}
    assert request.headers["authorization"] == basic("client-1", "app-secret")


# --- Salesforce ----------------------------------------------------------------------------


def test_salesforce_instance_url(stub, make_provider):
    # https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_web_server_flow.htm
    stub.reply(
        "POST",
        "/token",
        body={
            "access_token": "00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog",
            "signature": "ywcZvXhEXN/0l4Vz5+KT4fEIZhZK1ZXQyo2Kw9R4B3M=",
            "scope": "refresh_token api",
            "instance_url": "https://yourInstance.salesforce.com",
            "id": "https://login.salesforce.com/id/00Dx0000000BV7z/005x00000012Q9P",
            "token_type": "Bearer",
            "issued_at": "1278448101416",
            "refresh_token": "5Aep8614iLM.Dq661ePDmPEgaAW9Oh_L3JKkDpB4xReb54_pZebnUG0h6Sb4KUVDpNt"
            "WEofWM39yg==",
        },
    )
    provider = make_provider(quirks=("salesforce_instance_url",), scopes=("api", "refresh_token"))
    result = exchange(provider)
    assert result.expires_at is None
    assert result.extra == {
        "instance_url": "https://yourInstance.salesforce.com",
        "identity_url": "https://login.salesforce.com/id/00Dx0000000BV7z/005x00000012Q9P",
    }
    grant = grant_from_result(provider, result, now=NOW)
    assert grant.extra["instance_url"] == "https://yourInstance.salesforce.com"
    assert grant.granted_scopes == ("refresh_token", "api")


def test_salesforce_insecure_instance_url_is_refused(stub, make_provider):
    stub.reply(
        "POST", "/token", body={"access_token": "x", "instance_url": "http://evil.example.com"}
    )
    with pytest.raises(OAuthError, match="instance_url"):
        exchange(make_provider(quirks=("salesforce_instance_url",)))


# --- Google --------------------------------------------------------------------------------


def test_incremental_consent(make_provider):
    provider = make_provider(
        quirks=("incremental_consent",),
        authorization_params={"access_type": "offline", "prompt": "consent"},
    )
    params = query(build_authorization_url(provider, None, REDIRECT, "st", "c" * 43))
    assert params["include_granted_scopes"] == "true"
    assert params["access_type"] == "offline" and params["scope"] == "read write"
    plain = query(build_authorization_url(make_provider(), None, REDIRECT, "st", "c" * 43))
    assert "include_granted_scopes" not in plain
