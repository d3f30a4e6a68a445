"""The operations behind the HTTP routes, one implementation for ``/v1`` and ``/internal``.

Each call re-reads ``providers.yaml`` (edits apply without a restart) and fulfils only what it
declares: a name that is not declared is refused (``UndeclaredError``), never created. The
grant is written through ``lifecycle.store_link`` (the same path as the CLI's link flows), which
holds the grant's file lock so that it cannot interleave with a refresh. Everything here blocks
(config, vault, the provider's endpoints): the app runs it in a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

from .. import operations
from ..errors import Busy, ReconcilerError, UndeclaredError, UserError
from ..model import Provider, Secret
from ..oauth.endpoints import CALLBACK_PATH, LOOPBACK_HOSTS
from ..operations import LinkRequest
from . import origins
from .pending import DeviceFlow, DeviceStore, LinkStore, cookie_name

START_PATH = "/oauth/link/start"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
#: RFC 6749 §3.3 scope-token characters (printable ASCII but space, ``"`` and ``\``).
SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,256}")
MAX_SCOPES = 64
MAX_SECRET_LENGTH = 64 * 1024
#: How long a callback or device poll waits for the grant's file lock.
LOCK_TIMEOUT = 30.0


class BadRequest(UserError):
    """The request itself is wrong (HTTP 400); ``error`` is the JSON error code."""

    def __init__(self, message: str, error: str = "invalid_request") -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class LinkStart:
    authorize_url: str
    state: str


@dataclass(frozen=True)
class FirstHop:
    """What the browser gets at ``/oauth/link/start``: a cookie and the provider's URL."""

    authorization_url: str
    cookie_name: str
    cookie_value: str
    max_age: int
    secure: bool


@dataclass(frozen=True)
class LinkOutcome:
    ok: bool
    name: str | None
    message: str
    return_url: str | None
    status: int = 200


def check_name(name: object, what: str = "name") -> str:
    """A grant name from a request; anything else cannot be declared (404)."""
    if not isinstance(name, str):
        raise BadRequest(f"`{what}` must be a string")
    if not NAME.fullmatch(name):
        raise UndeclaredError(f"{what} is not a valid grant name, so it is not declared")
    return name


class Service:
    def __init__(
        self,
        config_path: Path,
        *,
        base_url: str,
        allowed_origins: frozenset[str],
        environ: Mapping[str, str],
        clock: Callable[[], datetime],
        link_ttl: timedelta,
    ) -> None:
        self.config_path = Path(config_path)
        #: This server as a browser on this machine reaches it: ``http://127.0.0.1:PORT``.
        self.base_url = base_url.rstrip("/")
        self.allowed_origins = allowed_origins
        self.environ = environ
        self.clock = clock
        self.links = LinkStore(clock, link_ttl)
        self.devices = DeviceStore(clock)

    # --- shared steps ------------------------------------------------------------------------

    def _prepare(self, name: str, requested: object) -> LinkRequest:
        """The link request for ``name``: the declared scopes, those already granted, and
        any the request adds (it can widen the link, never ask for less than declared)."""
        request = operations.prepare_link(self.config_path, name, (), self.environ)
        if requested is None:
            return request
        if not isinstance(requested, list) or len(requested) > MAX_SCOPES:
            raise BadRequest(f"`scopes` must be a list of at most {MAX_SCOPES} strings")
        separator = (request.provider.scope_separator or " ").strip()
        for scope in requested:
            if not isinstance(scope, str) or not SCOPE.fullmatch(scope):
                raise BadRequest("each scope must be a non-empty string without spaces or quotes")
            if separator and separator in scope:
                raise BadRequest(f"a scope must not contain the separator {separator!r}")
        added = tuple(s for s in dict.fromkeys(requested) if s not in request.scopes)
        return replace(request, scopes=request.scopes + added)

    def redirect_uri(self, provider: Provider) -> str:
        """This server's callback, or the provider's configured ``redirect_uri`` (a loopback
        one without a port gets this server's port). It must lead to this server's callback."""
        own = self.base_url + CALLBACK_PATH
        configured = provider.redirect_uri
        if not configured:
            return own
        parts = urlsplit(configured)
        host = (parts.hostname or "").lower()
        port = urlsplit(self.base_url).port
        if parts.path != CALLBACK_PATH or parts.query or parts.fragment:
            raise BadRequest(
                f"{provider.name}: redirect_uri {configured} is not served by `reconcile serve`, "
                f"whose callback path is {CALLBACK_PATH}",
                "unsupported_redirect_uri",
            )
        if parts.scheme == "http" and host in LOOPBACK_HOSTS:
            if parts.port not in (None, port):
                raise BadRequest(
                    f"{provider.name}: redirect_uri {configured} names port {parts.port}, but "
                    f"this server listens on {port}; run `reconcile serve --port {parts.port}`",
                    "unsupported_redirect_uri",
                )
            netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            return urlunsplit(("http", netloc, CALLBACK_PATH, "", ""))
        return configured  # e.g. https behind a reverse proxy that forwards to this server

    # --- browser link ------------------------------------------------------------------------

    def start_link(self, name: object, scopes: object, return_url: object) -> LinkStart:
        name = check_name(name)
        if return_url is not None:
            try:
                return_url = origins.check_return_url(return_url, self.allowed_origins)
            except origins.OriginError as error:
                raise BadRequest(str(error), "invalid_return_url") from None
        request = self._prepare(name, scopes)
        provider = request.provider
        if provider.flow == "client_credentials":
            raise BadRequest(
                f"{name} uses the client_credentials flow, which needs no browser; "
                "run `reconcile apply`",
                "unsupported_flow",
            )
        redirect_uri = self.redirect_uri(provider)
        pending = operations.begin_browser_link(request, redirect_uri, self.clock)
        self.links.add(name, pending, return_url)
        parts = urlsplit(redirect_uri)
        start = urlunsplit(
            (parts.scheme, parts.netloc, START_PATH, urlencode({"state": pending.state}), "")
        )
        return LinkStart(start, pending.state)

    def first_hop(self, state: str) -> FirstHop | LinkOutcome:
        attempt, value = self.links.bind(state)
        if attempt is None:
            return LinkOutcome(
                False,
                None,
                "This link attempt is unknown or has expired; start it again.",
                None,
                400,
            )
        if value is None:
            return LinkOutcome(
                False,
                attempt.name,
                "This link attempt was already opened in a browser; start it again.",
                None,
                409,
            )
        pending = attempt.pending
        max_age = max(1, int((attempt.expires_at - self.clock()).total_seconds()))
        return FirstHop(
            pending.authorization_url,
            cookie_name(state),
            value,
            max_age,
            urlsplit(pending.redirect_uri).scheme == "https",
        )

    def finish_link(
        self, state: str, cookies: Mapping[str, str], params: Mapping[str, list[str]]
    ) -> LinkOutcome:
        """The callback: state, then the browser's cookie, then the provider's answer."""
        verdict, attempt = self.links.take(
            state, cookies.get(cookie_name(state)) if state else None
        )
        if attempt is None:
            message = (
                "This browser did not start this link attempt (its cookie is missing or "
                "different), so the answer was refused. Start the link again in this browser."
                if verdict == "foreign"
                else "This link attempt is unknown, was already used, or has expired; nothing "
                "was stored. Start the link again."
            )
            return LinkOutcome(False, None, message, None, 400)
        name, return_url = attempt.name, attempt.return_url
        if verdict == "expired":
            minutes = int(self.links.ttl.total_seconds() // 60)
            return LinkOutcome(
                False,
                name,
                f"{name}: the link attempt expired (after {minutes} minutes); nothing was "
                "stored. Start the link again.",
                return_url,
                400,
            )
        try:
            operations.complete_browser_link(
                self.config_path,
                name,
                attempt.pending,
                params,
                self.clock,
                environ=self.environ,
                lock_timeout=LOCK_TIMEOUT,
            )
        except Busy:
            return LinkOutcome(
                False, name, f"{name}: the grant file stayed locked; try again.", return_url, 503
            )
        except ReconcilerError as error:
            return LinkOutcome(False, name, str(error), return_url, 400)
        return LinkOutcome(True, name, f"Linked {name}.", return_url)

    # --- device flow -------------------------------------------------------------------------

    def start_device(self, name: object, scopes: object) -> dict[str, object]:
        name = check_name(name)
        request = self._prepare(name, scopes)
        authorization = operations.begin_device_link(request)
        now = self.clock()
        handle = self.devices.add(
            DeviceFlow(
                name=name,
                provider=request.provider,
                client_secret=request.client_secret,
                device_code=authorization.device_code,
                scopes=tuple(authorization.scopes),
                expires_at=now + timedelta(seconds=authorization.expires_in),
                interval=authorization.interval,
            )
        )
        return {
            "device_code": handle,
            "user_code": authorization.user_code,
            "verification_uri": authorization.verification_uri,
            "verification_uri_complete": authorization.verification_uri_complete,
            "expires_in": authorization.expires_in,
            "interval": authorization.interval,
        }

    def poll_device(self, name: object, handle: object) -> dict[str, object]:
        name = check_name(name)
        if not isinstance(handle, str) or not handle:
            raise BadRequest("`device_code` must be the string the device flow start returned")
        flow = self.devices.get(name, handle)
        if flow is None or flow.expires_at <= self.clock():
            if flow is not None:
                self.devices.drop(handle)
            return {
                "poll_status": "error",
                "error": "expired_token",
                "message": f"{name}: this device code is unknown or has expired; nothing was "
                "stored. Start the device flow again.",
            }
        if not flow.lock.acquire(blocking=False):  # another poll of this flow is in flight
            return {"poll_status": "authorization_pending", "interval": flow.interval}
        request = LinkRequest(flow.provider, flow.client_secret, flow.scopes)
        try:
            poll = operations.poll_device_link(
                self.config_path,
                name,
                request,
                flow.device_code,
                flow.interval,
                self.clock,
                environ=self.environ,
                lock_timeout=LOCK_TIMEOUT,
            )
        except Busy:
            self.devices.drop(handle)
            return {
                "poll_status": "error",
                "error": "not_stored",
                "message": f"{name}: the grant file stayed locked; start the flow again.",
            }
        except ReconcilerError as failed:
            self.devices.drop(handle)
            return {"poll_status": "error", "error": "not_stored", "message": str(failed)}
        finally:
            flow.lock.release()
        flow.interval = poll.interval
        if poll.status in ("authorization_pending", "slow_down"):
            return {"poll_status": poll.status, "interval": flow.interval}
        self.devices.drop(handle)  # completed or failed: the device code is used up
        grant, error = poll.grant, poll.error
        if poll.status == "error" or grant is None:
            return {
                "poll_status": "error",
                "error": getattr(error, "error", None) or "server_error",
                "message": str(error) if error else f"{name}: the device flow failed.",
            }
        return {
            "poll_status": "completed",
            "entry_id": name,
            "name": name,
            "granted_scopes": list(grant.granted_scopes),
            "expires_at": _rfc3339(grant.expires_at),
        }

    # --- static secrets and status -----------------------------------------------------------

    def put_secret(self, name: object, value: object) -> None:
        name = check_name(name)
        if not isinstance(value, str) or not value:
            raise BadRequest("`value` must be a non-empty string")
        if len(value) > MAX_SECRET_LENGTH:
            raise BadRequest(f"`value` is longer than {MAX_SECRET_LENGTH} characters")
        operations.put_secret(self.config_path, name, Secret(value), self.environ)

    def delete_secret(self, name: object) -> None:
        operations.delete_secret(self.config_path, check_name(name), self.environ)

    def status(self) -> dict[str, object]:
        rows = operations.status(self.config_path, self.clock(), self.environ)
        return {"grants": [row.to_json() for row in rows]}


def _rfc3339(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None
