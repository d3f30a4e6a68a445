"""Provider responses shared by the OAuth tests."""

from __future__ import annotations

SLACK_V2 = {
    # https://api.slack.com/methods/oauth.v2.access (user token install)
    "ok": True,
    "app_id": "A0KRD7HC3",
    "authed_user": {
        "id": "U1234",
        "scope": "chat:write,channels:history",
        "access_token": "xoxp-1234",
        "token_type": "user",
        "refresh_token": "xoxe-1-user",
        "expires_in": 43200,
    },
    "scope": "commands",
    "token_type": "bot",
    "access_token": "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy",
    "bot_user_id": "U0KRQLJ9H",
    "team": {"name": "Slack Softball Team", "id": "T9TK3CUKW"},
    "enterprise": None,
    "is_enterprise_install": False,
}
