"""When a grant is due for a refresh: the one rule (SPEC §3) that plan, apply, status, watch,
the token cache and the runtime all follow.

An access token is refreshed once the time left is under ``min(refresh_before, half the
lifetime the provider granted)``. The half keeps a token that lives no longer than
``refresh_before`` (Keycloak's 300 s against the default 5m) from being refreshed on every
read: a token just obtained is never due. An idle refresh token is refreshed once it has
waited ``keepalive``, so that providers that expire unused refresh tokens do not drop it.

Pure: values in, values out; the caller passes ``now``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..model import Grant


def access_deadline(
    expires_at: datetime | None, obtained_at: datetime | None, refresh_before: timedelta
) -> datetime | None:
    """The moment the access token becomes due, or None when it does not expire."""
    if expires_at is None:
        return None
    margin = refresh_before
    if obtained_at is not None:
        lifetime = max(expires_at - obtained_at, timedelta(0))
        margin = min(margin, lifetime / 2)
    return expires_at - margin


def holds_refresh_token(grant: Grant) -> bool:
    """The grant has a refresh token (decrypted, or seen sealed in the file's plaintext)."""
    return grant.refresh_token is not None or "refresh_token" in grant.sealed


def keepalive_deadline(grant: Grant, keepalive: timedelta) -> datetime | None:
    """When an idle refresh token must be used, or None when the grant has none (a
    client-credentials grant is fetched again on expiry; it has nothing to keep alive)."""
    if grant.obtained_at is None or grant.flow == "client_credentials":
        return None
    if not holds_refresh_token(grant):
        return None
    return grant.obtained_at + keepalive


def next_refresh(grant: Grant, refresh_before: timedelta, keepalive: timedelta) -> datetime | None:
    """The earliest moment ``grant`` is due, or None when it never is."""
    deadlines = [
        moment
        for moment in (
            access_deadline(grant.expires_at, grant.obtained_at, refresh_before),
            keepalive_deadline(grant, keepalive),
        )
        if moment is not None
    ]
    return min(deadlines, default=None)


def refresh_reason(
    grant: Grant, refresh_before: timedelta, keepalive: timedelta, now: datetime
) -> str | None:
    """Why ``grant`` is due at ``now`` ("access token expires in 2m"), or None if it is not."""
    if grant.expires_at is not None:
        left = grant.expires_at - now
        if left <= timedelta(0):
            return f"access token expired {human(-left)} ago"
        deadline = access_deadline(grant.expires_at, grant.obtained_at, refresh_before)
        if deadline is not None and now >= deadline:
            return f"access token expires in {human(left)}"
    deadline = keepalive_deadline(grant, keepalive)
    if deadline is not None and now >= deadline:
        assert grant.obtained_at is not None
        return f"refresh token idle for {human(now - grant.obtained_at)} (keepalive)"
    return None


def is_due(grant: Grant, refresh_before: timedelta, keepalive: timedelta, now: datetime) -> bool:
    return refresh_reason(grant, refresh_before, keepalive, now) is not None


def human(delta: timedelta) -> str:
    """``90s`` → ``1m``: the largest whole unit, for reasons and notes."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
