"""The two gates of `reconcile serve`, never mixed (SPEC §5).

- The **local gate** guards the single-user data plane (``/v1/*``): the peer must be on a
  loopback address, the ``Host`` header must name this server on a loopback host (a DNS
  rebinding page has its own host name there), and ``Authorization: Bearer`` must carry the
  local secret.
- The **control-plane gate** guards ``/internal/*``: header ``x-control-plane-secret`` must
  carry ``$RECONCILER_CONTROL_PLANE_SECRET``. Without that variable (or with one shorter than
  32 characters, or made of fewer than 8 different characters) the routes are not mounted.

Secrets are compared in constant time and never appear in a message.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..model import Secret
from ..operations import UserError
from ..vault.files import atomic_write

LOCAL_SECRET_ENV = "RECONCILER_SERVE_TOKEN"
CONTROL_PLANE_ENV = "RECONCILER_CONTROL_PLANE_SECRET"
CONTROL_PLANE_HEADER = b"x-control-plane-secret"
MIN_CONTROL_PLANE_LENGTH = 32
#: A control-plane secret needs this many different characters (``"x" * 40`` is no secret).
MIN_CONTROL_PLANE_DISTINCT = 8
#: A local secret given in the environment must be at least this long (a generated one is 43).
MIN_LOCAL_SECRET_LENGTH = 16
TOKEN_FILE = Path("oauth-reconciler") / "serve.token"


@dataclass(frozen=True)
class LocalSecret:
    value: Secret
    #: Where it comes from, for the startup line: ``$RECONCILER_SERVE_TOKEN`` or the file path.
    source: str
    path: Path | None = None
    created: bool = False


@dataclass(frozen=True)
class Refusal:
    """Why a gate refused a request: the HTTP status and the JSON error body."""

    status: int
    error: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


# --- where the secrets come from -------------------------------------------------------------


def token_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/oauth-reconciler/serve.token`` (``~/.config`` when unset)."""
    base = environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):  # the XDG spec: a relative value is ignored
        home = environ.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".config")
    return Path(base) / TOKEN_FILE


def local_secret(environ: Mapping[str, str]) -> LocalSecret:
    """``$RECONCILER_SERVE_TOKEN`` if set, else the token file, created at first start (0600,
    atomically, never replacing one another process just wrote) and reused afterwards."""
    value = environ.get(LOCAL_SECRET_ENV, "")
    if value:
        if len(value) < MIN_LOCAL_SECRET_LENGTH or not value.isprintable() or " " in value:
            raise UserError(
                f"${LOCAL_SECRET_ENV} must be at least {MIN_LOCAL_SECRET_LENGTH} printable "
                "characters without spaces; unset it to use a generated secret file."
            )
        return LocalSecret(Secret(value), f"${LOCAL_SECRET_ENV}")
    path = token_path(environ)
    try:
        return LocalSecret(_read_token_file(path), str(path), path)
    except FileNotFoundError:
        pass

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        atomic_write(path, (secrets.token_urlsafe(32) + "\n").encode(), mode=0o600, overwrite=False)
        created = True
    except FileExistsError:  # another `reconcile serve` created it meanwhile: use that one
        created = False
    return LocalSecret(_read_token_file(path), str(path), path, created)


def _read_token_file(path: Path) -> Secret:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path} is not a regular file; remove it to generate a new secret.")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise UserError(f"{path} belongs to another user; remove it to generate a new secret.")
        if info.st_mode & 0o077:
            raise UserError(
                f"{path} is accessible by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run `chmod 600 {path}` or remove it to generate a new secret."
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        value = data.decode("ascii").strip()
    except UnicodeDecodeError:
        value = ""
    if len(value) < MIN_LOCAL_SECRET_LENGTH or not value.isprintable() or " " in value:
        raise UserError(
            f"{path} does not hold a usable secret (at least {MIN_LOCAL_SECRET_LENGTH} printable "
            "ASCII characters); remove it to generate a new one."
        )
    return Secret(value)


def control_plane_secret(environ: Mapping[str, str]) -> tuple[Secret | None, str | None]:
    """The control-plane secret, or None with a warning when it is set but too short or
    too repetitive to be a random value."""
    value = environ.get(CONTROL_PLANE_ENV, "")
    if not value:
        return None, None
    if len(value) < MIN_CONTROL_PLANE_LENGTH:
        return None, (
            f"${CONTROL_PLANE_ENV} is shorter than {MIN_CONTROL_PLANE_LENGTH} characters, so the "
            "/internal/* routes are not mounted"
        )
    if len(set(value)) < MIN_CONTROL_PLANE_DISTINCT:
        return None, (
            f"${CONTROL_PLANE_ENV} has fewer than {MIN_CONTROL_PLANE_DISTINCT} different "
            "characters, so it is not a random secret and the /internal/* routes are not "
            "mounted; set it to a random value (e.g. the output of `openssl rand -hex 32`)"
        )
    return Secret(value), None


# --- checks on an ASGI scope -----------------------------------------------------------------


def allowed_hosts(port: int) -> frozenset[str]:
    """The ``Host`` values a local client sends to this server."""
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    if port == 80:
        hosts |= {"127.0.0.1", "localhost", "[::1]"}
    return frozenset(hosts)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _header(scope: Mapping, name: bytes) -> bytes | None:
    """The single value of header ``name``; None when absent. A repeated header is refused
    by returning an empty value (which no check accepts)."""
    values = [value for key, value in scope.get("headers", ()) if key.lower() == name]
    if not values:
        return None
    return values[0] if len(values) == 1 else b""


def _matches(given: bytes, expected: Secret) -> bool:
    return hmac.compare_digest(given, expected.reveal().encode())


def check_local(scope: Mapping, secret: Secret, hosts: frozenset[str]) -> Refusal | None:
    client = scope.get("client")
    if not client or not is_loopback(client[0]):
        return Refusal(403, "forbidden", "this endpoint only answers clients on this machine")
    host = (_header(scope, b"host") or b"").decode("latin-1").lower()
    if host not in hosts:
        return Refusal(
            421,
            "misdirected_request",
            "the Host header does not name this server (127.0.0.1, localhost or [::1] with its "
            "port)",
        )
    authorization = _header(scope, b"authorization")
    challenge = {"WWW-Authenticate": 'Bearer realm="reconcile serve"'}
    if authorization is None:
        return Refusal(
            401, "unauthorized", "send `Authorization: Bearer <local secret>`", challenge
        )
    scheme, _, token = authorization.partition(b" ")
    if scheme.lower() != b"bearer" or not _matches(token.strip(), secret):
        return Refusal(
            401,
            "unauthorized",
            "the bearer token is not the local secret",
            {"WWW-Authenticate": 'Bearer realm="reconcile serve", error="invalid_token"'},
        )
    return None


def check_control_plane(scope: Mapping, secret: Secret) -> Refusal | None:
    given = _header(scope, CONTROL_PLANE_HEADER)
    if given is None:
        return Refusal(401, "unauthorized", "send the x-control-plane-secret header")
    if not _matches(given, secret):
        return Refusal(401, "unauthorized", "the x-control-plane-secret header is not valid")
    return None
