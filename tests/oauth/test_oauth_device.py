"""Device authorization grant (RFC 8628) against a loopback stub."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.model import Secret
from reconciler.oauth import device
from reconciler.oauth.errors import AccessDenied, LinkTimeout, OAuthError
from reconciler.oauth.tokens import DEVICE_CODE_GRANT_TYPE

NOW = datetime(2025, 3, 1, tzinfo=UTC)
AUTHORIZATION = {
    "device_code": "GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS",
    "user_code": "WDJB-MJHT",
    "verification_uri": "https://example.com/device",
    "verification_uri_complete": "https://example.com/device?user_code=WDJB-MJHT",
    "expires_in": 1800,
    "interval": 2,
}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_start_device_flow(stub, make_provider):
    stub.reply("POST", "/device", body=AUTHORIZATION)
    auth = device.start_device_flow(make_provider(), None, ["read"])
    assert auth.device_code.reveal() == AUTHORIZATION["device_code"]
    assert AUTHORIZATION["device_code"] not in repr(auth)
    assert (auth.user_code, auth.expires_in, auth.interval) == ("WDJB-MJHT", 1800, 2)
    assert auth.verification_uri_complete.endswith("user_code=WDJB-MJHT")
    (request,) = stub.hits("/device")
    assert request.form == {"scope": "read", "client_id": "client-1"}


def test_start_device_flow_defaults_and_legacy_spelling(stub, make_provider):
    body = {k: v for k, v in AUTHORIZATION.items() if k not in ("interval", "verification_uri")}
    body["verification_url"] = "https://www.google.com/device"
    stub.reply("POST", "/device", body=body)
    auth = device.start_device_flow(make_provider(), Secret("s"))
    assert auth.interval == 5 and auth.verification_uri == "https://www.google.com/device"
    assert stub.hits("/device")[0].headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    "change",
    [
        {"user_code": ""},
        {"device_code": None},
        {"verification_uri": "http://phish.example.com/device"},
        {"expires_in": "soon"},
        {"expires_in": 10**15, "interval": 10**15},
        {"interval": -1},
    ],
)
def test_start_device_flow_rejects_bad_answers(stub, make_provider, change):
    stub.reply("POST", "/device", body={**AUTHORIZATION, **change})
    with pytest.raises(OAuthError) as info:
        device.start_device_flow(make_provider(), None)
    assert info.value.error == "invalid_device_response"


def test_start_device_flow_error(stub, make_provider):
    stub.reply("POST", "/device", 400, {"error": "unauthorized_client"})
    with pytest.raises(OAuthError, match="unauthorized_client"):
        device.start_device_flow(make_provider(), None)


def test_poll_once_statuses(stub, make_provider):
    stub.replies(
        "POST",
        "/token",
        (400, {}, {"error": "authorization_pending"}),
        (400, {}, {"error": "slow_down"}),
        (400, {}, {"error": "access_denied"}),
        (200, {}, {"access_token": "at", "refresh_token": "rt"}),
    )
    provider = make_provider(flow="device_code")
    code = Secret(AUTHORIZATION["device_code"])
    assert device.poll_once(provider, None, code, now=NOW).status == "authorization_pending"
    assert device.poll_once(provider, None, code, now=NOW).status == "slow_down"
    denied = device.poll_once(provider, None, code, now=NOW)
    assert denied.status == "error" and isinstance(denied.error, AccessDenied)
    done = device.poll_once(provider, None, code, now=NOW)
    assert done.status == "completed" and done.token.access_token.reveal() == "at"
    assert stub.hits("/token")[0].form == {
        "grant_type": DEVICE_CODE_GRANT_TYPE,
        "device_code": AUTHORIZATION["device_code"],
        "client_id": "client-1",
    }


def test_run_device_flow_adds_five_seconds_on_every_slow_down(stub, make_provider):
    stub.reply("POST", "/device", body=AUTHORIZATION)
    stub.replies(
        "POST",
        "/token",
        (400, {}, {"error": "authorization_pending"}),
        (400, {}, {"error": "slow_down"}),
        (400, {}, {"error": "authorization_pending"}),
        (400, {}, {"error": "slow_down"}),
        (200, {}, {"access_token": "at"}),
    )
    clock, announced = Clock(), []
    result = device.run_device_flow(
        make_provider(flow="device_code"),
        None,
        announce=announced.append,
        sleep=clock.sleep,
        clock=clock.time,
        now=NOW,
    )
    assert result.access_token.reveal() == "at"
    assert clock.sleeps == [2, 2, 7, 7, 12]
    assert [a.user_code for a in announced] == ["WDJB-MJHT"]


@pytest.mark.parametrize(
    ("error", "exception"), [("access_denied", AccessDenied), ("expired_token", LinkTimeout)]
)
def test_run_device_flow_stops_on_denial_and_expiry(stub, make_provider, error, exception):
    stub.reply("POST", "/device", body=AUTHORIZATION)
    stub.replies(
        "POST",
        "/token",
        (400, {}, {"error": "authorization_pending"}),
        (400, {}, {"error": error}),
    )
    clock = Clock()
    with pytest.raises(exception) as info:
        device.run_device_flow(
            make_provider(), None, announce=lambda a: None, sleep=clock.sleep, clock=clock.time
        )
    assert "acme" in str(info.value)
    assert len(stub.hits("/token")) == 2


def test_run_device_flow_gives_up_at_expiry_on_its_own(stub, make_provider):
    stub.reply("POST", "/device", body={**AUTHORIZATION, "expires_in": 7})
    stub.reply("POST", "/token", 400, {"error": "authorization_pending"})
    clock = Clock()
    with pytest.raises(LinkTimeout):
        device.run_device_flow(
            make_provider(), None, announce=lambda a: None, sleep=clock.sleep, clock=clock.time
        )
    assert clock.sleeps == [2, 2, 2]
    assert len(stub.hits("/token")) == 3


def test_run_device_flow_backs_off_on_transient_errors(stub, make_provider):
    stub.reply("POST", "/device", body=AUTHORIZATION)
    stub.replies(
        "POST",
        "/token",
        (503, {}, "down"),
        (429, {"Retry-After": "30"}, ""),
        (200, {}, {"access_token": "at"}),
    )
    clock = Clock()
    result = device.run_device_flow(
        make_provider(), None, announce=lambda a: None, sleep=clock.sleep, clock=clock.time
    )
    assert result.access_token.reveal() == "at"
    assert clock.sleeps == [2, 4, 30]
