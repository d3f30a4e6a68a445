"""A scripted browser that plays the user in link flows.

``ScriptedBrowser`` is usable as the ``open_browser`` callable of ``run_loopback_flow``: it GETs
the authorization URL with httpx2 and follows redirects as a browser would, including the
authorization server's redirect to the loopback callback, and keeps every hop and the final
page. ``tamper`` rewrites a redirect target before it is followed, to play an attacker who
injects a forged authorization response (wrong ``state``, foreign ``iss``...).
``visit_device`` is usable as the ``announce`` callable of ``run_device_flow``: it opens the
verification page, where the test authorization server records the user's decision.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from functools import cache
from urllib.parse import urljoin

import httpx2


@cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()  # built once: loading CA certificates is slow


def http_client(**kwargs) -> httpx2.Client:
    """A plain httpx2 client for tests (the TLS context is shared)."""
    return httpx2.Client(verify=_tls(), **kwargs)


class ScriptedBrowser:
    def __init__(self, *, tamper: Callable[[str], str] | None = None, max_hops: int = 10) -> None:
        self.tamper = tamper
        self.max_hops = max_hops
        self.visited: list[str] = []
        self.pages: list[httpx2.Response] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.announced: list[object] = []

    @property
    def final(self) -> httpx2.Response | None:
        return self.pages[-1] if self.pages else None

    def __call__(self, url: str) -> None:
        try:
            self.open(url)
        except BaseException as exc:  # recorded for the test to inspect
            self.error = exc
            raise
        finally:
            self.done.set()

    def open(self, url: str) -> httpx2.Response:
        with http_client(follow_redirects=False, timeout=30.0) as client:
            for _ in range(self.max_hops):
                self.visited.append(url)
                response = client.get(url)
                self.pages.append(response)
                if not response.is_redirect:
                    return response
                target = urljoin(url, response.headers["location"])
                url = self.tamper(target) if self.tamper else target
        raise RuntimeError("too many redirects")

    def visit_device(self, authorization) -> None:
        """Open ``verification_uri_complete`` as the user would after reading the code."""
        self.announced.append(authorization)
        url = authorization.verification_uri_complete or authorization.verification_uri
        self.open(url)
