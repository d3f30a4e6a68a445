"""``runtime.Auth`` with httpx2 against a loopback API: a bearer token on every request; a 401
forces exactly one refresh at the real authorization server and one retry."""

from __future__ import annotations

import asyncio
import threading

import httpx2
import pytest

from reconciler import runtime

from .support import STATIC_VALUE


def refreshes(project) -> int:
    return project.auth.token_calls["refresh_token"]


def test_bearer_token_on_every_request_without_refreshing(project, api_server):
    token = runtime.token("api", project.config)
    with httpx2.Client(auth=runtime.Auth("api", project.config)) as client:
        for _ in range(3):
            assert client.get(api_server.url + "/me").status_code == 200
    assert api_server.tokens() == [token] * 3
    assert refreshes(project) == 0


def test_a_401_refreshes_once_and_retries_once(project, api_server):
    first = runtime.token("api", project.config)
    api_server.reject = {first}  # e.g. revoked early, or the clocks disagree
    with httpx2.Client(auth=runtime.Auth("api", project.config)) as client:
        response = client.get(api_server.url + "/me")
        assert response.status_code == 200
        assert [r.status_code for r in response.history] == [401]
        assert refreshes(project) == 1
        (sent_first, sent_retry) = api_server.tokens()
        assert sent_first == first and sent_retry != first
        assert runtime.token("api", project.config) == sent_retry, "the new token is kept"
        assert client.get(api_server.url + "/me").status_code == 200
    assert api_server.tokens()[2:] == [sent_retry]
    assert refreshes(project) == 1


def test_a_permanent_401_is_returned_after_one_refresh_and_one_retry(project, api_server):
    api_server.always_401 = True
    with httpx2.Client(auth=runtime.Auth("api", project.config)) as client:
        response = client.get(api_server.url + "/me")
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token"}
    assert len(api_server.seen) == 2
    assert refreshes(project) == 1
    first, retry = api_server.tokens()
    assert first != retry


def test_the_retry_sends_the_body_again(project, api_server):
    api_server.reject = {runtime.token("api", project.config)}
    with httpx2.Client(auth=runtime.Auth("api", project.config)) as client:
        response = client.post(api_server.url + "/items", content=iter([b"pay", b"load"]))
    assert response.status_code == 200
    assert [seen.body for seen in api_server.seen] == [b"payload", b"payload"]


def test_concurrent_401s_cause_one_refresh(project, api_server):
    first = runtime.token("api", project.config)
    api_server.reject = {first}
    auth = runtime.Auth("api", project.config)
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def call() -> None:
        with httpx2.Client(auth=auth) as client:
            barrier.wait()
            statuses.append(client.get(api_server.url + "/me").status_code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    assert refreshes(project) == 1
    assert len(set(api_server.tokens())) == 2


def test_a_static_secret_is_sent_and_its_401_returned_at_once(project, api_server):
    with httpx2.Client(auth=runtime.Auth("static", project.config)) as client:
        response = client.get(api_server.url + "/me")
    assert response.status_code == 401  # the API does not know this key
    assert api_server.tokens() == [STATIC_VALUE]
    assert refreshes(project) == 0


def test_a_refresh_that_fails_raises_a_clear_error(project, api_server):
    first = runtime.token("api", project.config)
    api_server.reject = {first}
    (issued,) = project.auth.tokens
    issued.refresh_revoked = True
    with (
        httpx2.Client(auth=runtime.Auth("api", project.config)) as client,
        pytest.raises(runtime.NeedsRelinkError) as caught,
    ):
        client.get(api_server.url + "/me")
    assert "reconcile link api" in str(caught.value)
    assert first not in str(caught.value) and issued.refresh_token not in str(caught.value)
    assert refreshes(project) == 1
    assert len(api_server.seen) == 1


def test_repr_shows_no_token(project):
    auth = runtime.Auth("api", project.config)
    token = runtime.token("api", project.config)
    assert token not in repr(auth) and "api" in repr(auth)


# --- AsyncClient -----------------------------------------------------------------------------


def test_async_a_401_refreshes_once_and_retries_once(project, api_server):
    first = runtime.token("api", project.config)
    runtime.clear()  # the first async request then reads through a worker thread
    api_server.reject = {first}

    async def main() -> list[int]:
        async with httpx2.AsyncClient(auth=runtime.Auth("api", project.config)) as client:
            one = await client.get(api_server.url + "/me")
            two = await client.post(api_server.url + "/me", content=b"x")
            return [one.status_code, len(one.history), two.status_code]

    assert asyncio.run(main()) == [200, 1, 200]
    assert refreshes(project) == 1
    tokens = api_server.tokens()
    assert tokens[0] == first and tokens[1] != first and tokens[2] == tokens[1]


def test_async_a_permanent_401_is_returned(project, api_server):
    api_server.always_401 = True

    async def main() -> int:
        async with httpx2.AsyncClient(auth=runtime.Auth("api", project.config)) as client:
            return (await client.get(api_server.url + "/me")).status_code

    assert asyncio.run(main()) == 401
    assert len(api_server.seen) == 2
    assert refreshes(project) == 1


def test_async_concurrent_401s_cause_one_refresh(project, api_server):
    api_server.reject = {runtime.token("api", project.config)}

    async def main() -> list[int]:
        async with httpx2.AsyncClient(auth=runtime.Auth("api", project.config)) as client:
            responses = await asyncio.gather(
                *(client.get(api_server.url + "/me") for _ in range(8))
            )
        return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200] * 8
    assert refreshes(project) == 1
