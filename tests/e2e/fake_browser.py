"""A stand-in for the user's browser in CLI link flows: ``$BROWSER`` points at it.

Python's ``webbrowser`` runs ``$BROWSER URL`` and waits for it to exit; the reconciler calls it
from a background thread, so this script may take its time without blocking the loopback
callback server. Standard library only (it starts in a few milliseconds).

It GETs the authorization URL and follows redirects as a browser would, ending on the
reconciler's loopback callback page. Environment:

- ``E2E_BROWSER_MODE``: ``follow`` (default) plays the user; ``ignore`` records the URL and
  never visits it (a user who closed the tab).
- ``E2E_BROWSER_LOG``: a file to append one JSON line per invocation to: the mode, the path of
  each hop with its HTTP status, the final status and the page title. Query strings are never
  recorded (the redirect to the callback carries the authorization code).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import sys
from urllib.parse import urljoin, urlsplit

REDIRECTS = {301, 302, 303, 307, 308}


def _get(url: str) -> tuple[int, str | None, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"refusing to visit {parts.scheme}://{parts.hostname} in a test")
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", target, headers={"Accept": "text/html"})
        response = connection.getresponse()
        body = response.read().decode("utf-8", "replace")
        return response.status, response.getheader("Location"), body
    finally:
        connection.close()


def _title(body: str) -> str:
    found = re.search(r"<title>(.*?)</title>", body, re.S)
    return (found.group(1) if found else body[:80]).strip()


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else ""
    mode = os.environ.get("E2E_BROWSER_MODE", "follow")
    record: dict[str, object] = {"mode": mode, "opened": urlsplit(url).path, "hops": []}
    try:
        if mode == "follow":
            for _ in range(10):
                status, location, body = _get(url)
                record["hops"].append([urlsplit(url).path, status])  # type: ignore[union-attr]
                if status in REDIRECTS and location:
                    url = urljoin(url, location)
                    continue
                record["status"] = status
                record["title"] = _title(body)
                break
    except Exception as error:  # recorded for the test; a browser never crashes the CLI
        record["error"] = f"{type(error).__name__}: {error}"
    log = os.environ.get("E2E_BROWSER_LOG")
    if log:
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
