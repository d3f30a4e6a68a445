"""The real `reconcile` command against a token endpoint (the stub) that answers badly."""

from __future__ import annotations

import pytest

from .conftest import STUB_ACCESS, STUB_REFRESH


def test_an_absurd_expires_in_is_clamped_not_a_crash(stub_project, stub, project):
    stub.reply("POST", "/token", body={"access_token": "at-new-0123456789", "expires_in": 1e15})
    ran = project.reconcile("token", "api")
    assert ran.code == 0, ran
    assert ran.stdout.strip() == "at-new-0123456789"
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize("value", [-60, "an hour"])
def test_an_invalid_expires_in_fails_the_refresh_clearly(stub_project, stub, project, value):
    stub.reply("POST", "/token", body={"access_token": "at-new-0123456789", "expires_in": value})
    before = stub_project.read_bytes()
    ran = project.reconcile("token", "api")
    assert ran.code == 1, ran
    assert ran.stderr.startswith("error: api: the token response has an invalid `expires_in`"), ran
    assert "Traceback" not in ran.stderr
    assert stub_project.read_bytes() == before
    for secret in (STUB_ACCESS, STUB_REFRESH, "at-new-0123456789"):
        assert secret not in ran.stderr
