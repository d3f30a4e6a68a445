"""Every exchange with a provider has an overall deadline and a cap on the answer's size, and
the grant's lock is free again when the deadline passes."""

from __future__ import annotations

import threading
import time
import tracemalloc

import pytest

from reconciler.model import Secret
from reconciler.oauth import tokens
from reconciler.oauth.errors import OAuthError, TransientError
from reconciler.oauth.transport import MAX_RESPONSE_BYTES
from reconciler.vault.files import file_lock

JSON = {"Content-Type": "application/json"}


def drip(seconds: float, every: float = 0.1):
    """A body that trickles in: one byte every ``every`` seconds for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield b" "
        time.sleep(every)


def test_a_token_endpoint_that_drips_its_body_is_cut_off_at_the_deadline(stub, make_provider):
    stub.route("POST", "/token", lambda r: (200, {**JSON, "Content-Length": "9999"}, drip(20)))
    provider = make_provider(request_deadline=1.0)
    started = time.monotonic()
    with pytest.raises(TransientError) as raised:
        tokens.refresh(provider, None, Secret("rt-abcdef"), now=None)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, elapsed
    assert raised.value.provider == "acme"
    assert "did not complete within 1 s" in str(raised.value)


def test_a_token_endpoint_that_never_sends_its_headers_is_cut_off_at_the_deadline(
    stub, make_provider
):
    def silent(request):
        time.sleep(20)
        return 200, JSON, "{}"

    stub.route("POST", "/token", silent)
    started = time.monotonic()
    with pytest.raises(TransientError):
        tokens.refresh(make_provider(request_deadline=0.5), None, Secret("rt-abcdef"), now=None)
    assert time.monotonic() - started < 1.5


def test_an_answer_over_the_size_cap_is_refused_without_holding_it(stub, make_provider):
    """32 MiB, chunked (no Content-Length to refuse up front): read at most 1 MiB of it."""
    chunk = b"x" * 65536
    big = (chunk for _ in range(512))
    stub.replies("POST", "/token", (200, {}, {"access_token": "at-small"}), (200, JSON, big))
    # A first, small exchange: imports and the connection are not part of the measurement.
    tokens.refresh(make_provider(), None, Secret("rt-abcdef"), now=None)
    tracemalloc.start()
    try:
        with pytest.raises(OAuthError) as raised:
            tokens.refresh(make_provider(), None, Secret("rt-abcdef"), now=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raised.value.error == "response_too_large"
    assert "more than 1 MiB" in str(raised.value)
    assert peak < 3 * MAX_RESPONSE_BYTES, peak


def test_a_declared_length_over_the_cap_is_refused_before_reading(stub, make_provider):
    huge = {**JSON, "Content-Length": str(300 * 2**20)}
    stub.route("POST", "/token", lambda r: (200, huge, drip(20)))
    started = time.monotonic()
    with pytest.raises(OAuthError) as raised:
        tokens.refresh(make_provider(), None, Secret("rt-abcdef"), now=None)
    assert raised.value.error == "response_too_large"
    assert time.monotonic() - started < 1.0


def test_a_small_answer_still_reads_whole(stub, make_provider):
    body = {"access_token": "at-" + "y" * 2000, "token_type": "bearer", "expires_in": 60}
    stub.reply("POST", "/token", 200, body)
    result = tokens.refresh(make_provider(), None, Secret("rt-abcdef"), now=None)
    assert result.access_token.reveal() == body["access_token"]


def test_the_grant_lock_is_free_once_the_deadline_passes(stub_project, stub, project):
    """`reconcile token` against a dripping endpoint (defaults.request_deadline: 1s): the
    refresh gives up after the deadline, the lock is free, the grant file untouched."""
    stub.route("POST", "/token", lambda r: (200, {**JSON, "Content-Length": "9999"}, drip(30)))
    before = stub_project.read_bytes()
    ran: list = []
    runner = threading.Thread(target=lambda: ran.append(project.reconcile("token", "api")))
    runner.start()
    deadline = time.monotonic() + 20
    while not stub.hits("/token") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stub.hits("/token"), "the refresh never reached the token endpoint"
    started = time.monotonic()
    with file_lock(stub_project, timeout=10):
        waited = time.monotonic() - started
    runner.join(30)
    assert waited < 2.5, waited
    (run,) = ran
    assert run.code == 1, run
    assert "api:" in run.stderr and "within 1 s" in run.stderr
    assert "`defaults.request_deadline`" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""
    assert stub_project.read_bytes() == before


def test_a_request_deadline_must_be_a_positive_duration(project):
    project.write_config("version: 1\ndefaults:\n  request_deadline: 0s\nproviders: {}\n")
    ran = project.reconcile("validate")
    assert ran.code == 1, ran
    assert "request_deadline must be longer than 0s" in ran.stderr
    assert "providers.yaml" in ran.stderr and "Traceback" not in ran.stderr
