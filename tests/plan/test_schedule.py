"""The one refresh rule: due once the time left is under min(refresh_before, half the lifetime
the provider granted); an idle refresh token every keepalive. Plain values only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.model import Grant, Secret
from reconciler.plan.schedule import (
    access_deadline,
    is_due,
    next_refresh,
    refresh_reason,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MARGIN = timedelta(minutes=5)
KEEPALIVE = timedelta(days=7)


def grant(lifetime: timedelta | None, age: timedelta, **overrides) -> Grant:
    """A grant obtained ``age`` ago whose access token lives ``lifetime``."""
    obtained = NOW - age
    values = dict(
        name="api",
        kind="oauth2",
        flow="authorization_code",
        obtained_at=obtained,
        expires_at=obtained + lifetime if lifetime is not None else None,
        sealed=frozenset({"access_token", "refresh_token"}),
    )
    values.update(overrides)
    return Grant(**values)


@pytest.mark.parametrize(
    ("lifetime", "margin_used"),
    [
        (timedelta(hours=1), MARGIN),  # a long-lived token: refresh_before
        (timedelta(minutes=10), MARGIN),  # exactly twice the margin: the same
        (timedelta(minutes=5), timedelta(minutes=2, seconds=30)),  # Keycloak's default
        (timedelta(seconds=60), timedelta(seconds=30)),
        (timedelta(seconds=1), timedelta(milliseconds=500)),
    ],
)
def test_the_margin_is_the_smaller_of_refresh_before_and_half_the_lifetime(lifetime, margin_used):
    obtained = NOW
    assert access_deadline(obtained + lifetime, obtained, MARGIN) == (
        obtained + lifetime - margin_used
    )


def test_without_obtained_at_the_margin_is_refresh_before():
    assert access_deadline(NOW + timedelta(minutes=2), None, MARGIN) == NOW - timedelta(minutes=3)


def test_a_token_that_does_not_expire_has_no_access_deadline():
    assert access_deadline(None, NOW, MARGIN) is None


@pytest.mark.parametrize("lifetime", [timedelta(seconds=60), timedelta(minutes=5)])
def test_a_fresh_short_lived_token_is_never_due(lifetime):
    """The refresh storm: a token that lives no longer than refresh_before was due at once."""
    fresh = grant(lifetime, timedelta(0))
    assert not is_due(fresh, MARGIN, KEEPALIVE, NOW)
    assert refresh_reason(fresh, MARGIN, KEEPALIVE, NOW) is None
    almost = grant(lifetime, lifetime / 2 - timedelta(seconds=1))
    assert not is_due(almost, MARGIN, KEEPALIVE, NOW)
    half = grant(lifetime, lifetime / 2)
    assert is_due(half, MARGIN, KEEPALIVE, NOW)


def test_a_token_issued_already_expired_is_due():
    assert is_due(grant(timedelta(0), timedelta(0)), MARGIN, KEEPALIVE, NOW)
    backwards = grant(timedelta(seconds=-30), timedelta(0))
    assert refresh_reason(backwards, MARGIN, KEEPALIVE, NOW) == "access token expired 30s ago"


def test_reasons_say_expired_expiring_or_idle():
    expired = grant(timedelta(hours=1), timedelta(hours=3))
    assert refresh_reason(expired, MARGIN, KEEPALIVE, NOW) == "access token expired 2h ago"
    expiring = grant(timedelta(hours=1), timedelta(minutes=57))
    assert refresh_reason(expiring, MARGIN, KEEPALIVE, NOW) == "access token expires in 3m"
    idle = grant(None, timedelta(days=8))
    assert refresh_reason(idle, MARGIN, KEEPALIVE, NOW) == "refresh token idle for 8d (keepalive)"


def test_keepalive_needs_a_refresh_token_and_not_client_credentials():
    assert not is_due(grant(None, timedelta(days=30), sealed=frozenset()), MARGIN, KEEPALIVE, NOW)
    decrypted = grant(None, timedelta(days=30), sealed=frozenset(), refresh_token=Secret("rt"))
    assert is_due(decrypted, MARGIN, KEEPALIVE, NOW)
    machine = grant(None, timedelta(days=30), flow="client_credentials")
    assert not is_due(machine, MARGIN, KEEPALIVE, NOW)


def test_next_refresh_is_the_earliest_deadline():
    short = grant(timedelta(seconds=60), timedelta(0))
    assert next_refresh(short, MARGIN, KEEPALIVE) == NOW + timedelta(seconds=30)
    long_lived = grant(timedelta(days=30), timedelta(0))
    assert next_refresh(long_lived, MARGIN, KEEPALIVE) == NOW + KEEPALIVE
    assert next_refresh(grant(None, timedelta(0), sealed=frozenset()), MARGIN, KEEPALIVE) is None


def test_due_exactly_when_the_next_refresh_comes():
    """plan, apply, status and watch read the same rule: is_due flips at next_refresh."""
    for lifetime in (timedelta(seconds=10), timedelta(minutes=7), timedelta(hours=2)):
        subject = grant(lifetime, timedelta(0))
        moment = next_refresh(subject, MARGIN, KEEPALIVE)
        assert moment is not None
        assert not is_due(subject, MARGIN, KEEPALIVE, moment - timedelta(microseconds=1))
        assert is_due(subject, MARGIN, KEEPALIVE, moment)
