"""``runtime.Auth``: an httpx2 auth flow that sends the grant's bearer token and, on a 401,
forces one refresh and retries once. Kept apart from ``runtime`` so that importing the
runtime does not import httpx2.

The token comes from ``runtime.memory`` (its in-process cache, else ``operations``); the
refresh after a 401 is ``operations.reissue_rejected`` under the grant's lock,
skipped when another thread or process has already replaced the rejected token. Blocking
work (files, decryption, the token endpoint) runs in a worker thread under ``AsyncClient``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Generator

import httpx2
from anyio.to_thread import run_sync

from . import memory


class Auth(httpx2.Auth):
    """``httpx2.Client(auth=runtime.Auth("github"))``: ``Authorization: Bearer <token>`` on
    every request; a 401 forces one refresh and one retry, and a second 401 is returned as
    is. A static secret is sent the same way, and a 401 for it is returned at once (there is
    nothing to refresh). A 403 ``insufficient_scope`` challenge (an MCP server asking for more
    scopes) marks the grant for a relink that asks for them and raises ``NeedsRelinkError``
    naming them. Errors are ``runtime.RuntimeTokenError``."""

    # The body is read before the first send, so that the retry can send it again.
    requires_request_body = True

    def __init__(self, name: str, config: str | os.PathLike[str] | None = None) -> None:
        self.name = name
        self._key = (memory.resolve_config(config), name)

    def __repr__(self) -> str:
        return f"Auth({self.name!r}, config={self._key[0]!r})"

    def sync_auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.read()
        token = memory.get(self._key)
        response = yield _with_bearer(request, token)
        if _under_scoped(response):
            error = memory.after_insufficient_scope(self._key, _challenge(response))
            if error is not None:
                raise error
        if response.status_code != 401:
            return
        fresh = memory.after_rejection(self._key, token)
        if fresh is not None:
            yield _with_bearer(request, fresh)

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        await request.aread()
        token = memory.peek(self._key)  # a few os.stat calls: fine on the event loop
        if token is None:
            token = await run_sync(memory.get, self._key)
        response = yield _with_bearer(request, token)
        if _under_scoped(response):
            challenge = _challenge(response)
            error = await run_sync(memory.after_insufficient_scope, self._key, challenge)
            if error is not None:
                raise error
        if response.status_code != 401:
            return
        fresh = await run_sync(memory.after_rejection, self._key, token)
        if fresh is not None:
            yield _with_bearer(request, fresh)


def _challenge(response: httpx2.Response) -> str:
    return ", ".join(response.headers.get_list("www-authenticate"))


def _under_scoped(response: httpx2.Response) -> bool:
    """A 403 whose challenge says ``insufficient_scope`` (RFC 6750 §3.1): cheap to tell."""
    return response.status_code == 403 and "insufficient_scope" in _challenge(response)


def _with_bearer(request: httpx2.Request, token) -> httpx2.Request:
    request.headers["Authorization"] = f"Bearer {token.reveal()}"
    return request
