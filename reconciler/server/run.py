"""Start `reconcile serve`: check the bind address, load the secrets, bind the socket (so that
``--port 0`` knows its real port before the app is built), then run uvicorn on it.

``prepare`` does everything that can fail and returns what the CLI prints (it prints nothing
itself); ``Prepared.run`` blocks until the server is stopped (Ctrl-C, SIGTERM). Uvicorn runs
without an access log (a callback's query string holds the authorization code), without
trusting proxy headers (the local gate needs the real peer address), and with a deadline for
request heads (``protocol.py``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from .. import operations
from ..operations import UserError, utcnow
from . import gates, origins
from .app import Settings, create_app
from .pending import LINK_TTL
from .protocol import HEADER_TIMEOUT, with_header_deadline

if TYPE_CHECKING:
    from starlette.types import ASGIApp


@dataclass
class Prepared:
    app: ASGIApp
    sock: socket.socket = field(repr=False)
    #: The URL a local client uses, e.g. ``http://127.0.0.1:8765``.
    url: str
    port: int
    #: ``$RECONCILER_SERVE_TOKEN`` or the path of the secret file.
    secret_source: str
    secret_created: bool
    internal_mounted: bool
    allowed_origins: tuple[str, ...]
    warnings: list[str] = field(default_factory=list)
    header_timeout: float = HEADER_TIMEOUT
    server: uvicorn.Server | None = None

    def run(self) -> None:
        try:
            self._run()
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: a normal stop
            pass
        finally:
            self.sock.close()

    def _run(self) -> None:
        config = uvicorn.Config(
            self.app,
            http=with_header_deadline(self.header_timeout),
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.server.run(sockets=[self.sock])

    def stop(self) -> None:
        """Ask a running server to exit (for tests that run it in a thread)."""
        if self.server is not None:
            self.server.should_exit = True


def _addresses(host: str, port: int) -> list[tuple]:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise UserError(f"cannot listen on {host!r}: {error.strerror}") from None


def _is_loopback(address: str) -> bool:
    return gates.is_loopback(address)


def prepare(
    config_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    allow_remote: bool = False,
    allow_origins: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] = utcnow,
    link_ttl: timedelta = LINK_TTL,
    header_timeout: float = HEADER_TIMEOUT,
) -> Prepared:
    environ = os.environ if environ is None else environ
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a TCP port (0 picks a free one)")
    warnings: list[str] = []
    addresses = _addresses(host, port)
    remote = [a for a in addresses if not _is_loopback(a[4][0])]
    if remote and not allow_remote:
        raise UserError(
            f"--host {host} is not a loopback address, so other machines could reach this "
            "server; add --allow-remote if that is what you want (the /v1 routes still answer "
            "only this machine)"
        )
    if remote:
        warnings.append(
            f"{host} can be reached from other machines: they get only /internal/* (with the "
            "control-plane secret) and the browser callback; /v1/* answers this machine only"
        )
    try:
        extra = origins.parse_origins([*allow_origins, environ.get(origins.ORIGINS_ENV, "")])
    except origins.OriginError as error:
        raise UserError(str(error)) from None

    config_path = Path(os.path.abspath(config_path))
    operations.load_desired(config_path, environ)  # fail early on a bad file
    secret = gates.local_secret(environ)
    control, warning = gates.control_plane_secret(environ)
    if warning:
        warnings.append(warning)

    family, kind, proto, _, address = addresses[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.set_inheritable(False)
    except OSError as error:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    real_port = sock.getsockname()[1]

    bound = address[0]
    if _is_loopback(bound):
        shown = f"[{bound}]" if ":" in bound else bound
    elif bound in ("0.0.0.0", "::"):  # a wildcard: local clients still come in on loopback
        shown = "127.0.0.1"
    else:  # one outside address: /v1 is unreachable (it answers loopback peers only)
        shown = f"[{bound}]" if ":" in bound else bound
    url = f"http://{shown}:{real_port}"
    settings = Settings(
        config_path=config_path,
        port=real_port,
        local_secret=secret.value,
        control_plane_secret=control,
        allowed_origins=tuple(extra),
        environ=environ,
        clock=clock,
        link_ttl=link_ttl,
        base_url=url,
    )
    return Prepared(
        app=create_app(settings),
        sock=sock,
        url=url,
        port=real_port,
        secret_source=secret.source,
        secret_created=secret.created,
        internal_mounted=control is not None,
        allowed_origins=tuple(extra),
        warnings=warnings,
        header_timeout=header_timeout,
    )
