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
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

from ..errors import ReconcilerError, UndeclaredError, UserError
from ..model import Desired, Grant, Provider, Secret
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

    def desired(self) -> Desired:
        from .. import config

        return config.load(self.config_path, environ=self.environ, resolve_values=False)

    def _provider(self, desired: Desired, name: str) -> Provider:
        provider = desired.providers.get(name)
        if provider is None:
            what = "a static secret, not an OAuth grant" if name in desired.secrets else "not"
            raise UndeclaredError(f"{name!r} is {what} declared in {desired.path}")
        return provider

    def _previous(self, desired: Desired, name: str) -> Grant | None:
        """The grant file's plaintext metadata (granted scopes survive a relink)."""
        from ..vault.store import VaultError, grant_path, read_grant

        path = grant_path(desired.store_dir, name)
        if not path.exists():
            return None
        try:
            return read_grant(path, None)
        except VaultError:
            return None

    def _scopes(
        self, provider: Provider, previous: Grant | None, requested: object
    ) -> tuple[str, ...]:
        """The declared scopes plus those already granted, plus any the request adds: a
        request can widen the link but never ask for less than ``providers.yaml`` declares."""
        from ..apply.lifecycle import link_scopes

        scopes = link_scopes(provider, previous)
        if requested is None:
            return scopes
        if not isinstance(requested, list) or len(requested) > MAX_SCOPES:
            raise BadRequest(f"`scopes` must be a list of at most {MAX_SCOPES} strings")
        separator = (provider.scope_separator or " ").strip()
        for scope in requested:
            if not isinstance(scope, str) or not SCOPE.fullmatch(scope):
                raise BadRequest("each scope must be a non-empty string without spaces or quotes")
            if separator and separator in scope:
                raise BadRequest(f"a scope must not contain the separator {separator!r}")
        return scopes + tuple(s for s in dict.fromkeys(requested) if s not in scopes)

    def _prepare(
        self, name: str, requested_scopes: object
    ) -> tuple[Provider, Secret | None, tuple[str, ...]]:
        from ..apply import lifecycle

        desired = self.desired()
        provider = self._provider(desired, name)
        previous = self._previous(desired, name)
        scopes = self._scopes(provider, previous, requested_scopes)
        provider = lifecycle.endpoints(provider)
        secret = lifecycle.client_secret(desired, provider, self.environ)
        return provider, secret, scopes

    def _store(self, name: str, provider: Provider, result, scopes, secret) -> Grant:
        """Write the grant a finished flow produced, if ``name`` is still declared."""
        from ..apply import lifecycle

        desired = self.desired()
        self._provider(desired, name)
        return lifecycle.store_link(
            desired,
            provider,
            result,
            self.clock(),
            tuple(scopes),
            client_secret=secret,
            environ=self.environ,
            lock_timeout=LOCK_TIMEOUT,
        )

    def redirect_uri(self, provider: Provider) -> str:
        """This server's callback, or the provider's configured ``redirect_uri`` (a loopback
        one without a port gets this server's port). It must lead to this server's callback."""
        from ..oauth.authorize import CALLBACK_PATH
        from ..oauth.tokens import LOOPBACK_HOSTS

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
        from ..oauth import authorize

        name = check_name(name)
        if return_url is not None:
            try:
                return_url = origins.check_return_url(return_url, self.allowed_origins)
            except origins.OriginError as error:
                raise BadRequest(str(error), "invalid_return_url") from None
        provider, secret, scopes = self._prepare(name, scopes)
        if provider.flow == "client_credentials":
            raise BadRequest(
                f"{name} uses the client_credentials flow, which needs no browser; "
                "run `reconcile apply`",
                "unsupported_flow",
            )
        redirect_uri = self.redirect_uri(provider)
        pending = authorize.start_link(
            provider, scopes, redirect_uri, client_secret=secret, now=self.clock
        )
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
        from ..oauth import authorize
        from ..vault.files import LockTimeout

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
        pending = attempt.pending
        try:
            self._provider(self.desired(), name)
            result = authorize.finish_link(pending, params, now=self.clock)
            self._store(name, pending.provider, result, pending.scopes, pending.client_secret)
        except ReconcilerError as error:
            return LinkOutcome(False, name, str(error), return_url, 400)
        except LockTimeout:
            return LinkOutcome(
                False, name, f"{name}: the grant file stayed locked; try again.", return_url, 503
            )
        return LinkOutcome(True, name, f"Linked {name}.", return_url)

    # --- device flow -------------------------------------------------------------------------

    def start_device(self, name: object, scopes: object) -> dict[str, object]:
        from ..oauth import device

        name = check_name(name)
        provider, secret, scopes = self._prepare(name, scopes)
        authorization = device.start_device_flow(provider, secret, scopes)
        now = self.clock()
        handle = self.devices.add(
            DeviceFlow(
                name=name,
                provider=provider,
                client_secret=secret,
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
        from ..oauth import device
        from ..oauth.device import SLOW_DOWN_STEP
        from ..oauth.errors import TransientError
        from ..vault.files import LockTimeout

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
        try:
            poll = device.poll_once(
                flow.provider, flow.client_secret, flow.device_code, now=self.clock
            )
            if poll.status == "authorization_pending":
                return {"poll_status": "authorization_pending", "interval": flow.interval}
            if poll.status == "slow_down" or isinstance(poll.error, TransientError):
                flow.interval += SLOW_DOWN_STEP
                return {"poll_status": "slow_down", "interval": flow.interval}
            self.devices.drop(handle)  # completed or failed: the device code is used up
            if poll.status == "error" or poll.token is None:
                error = poll.error
                return {
                    "poll_status": "error",
                    "error": (error.error if error else None) or "server_error",
                    "message": str(error) if error else f"{name}: the device flow failed.",
                }
            try:
                grant = self._store(
                    name, flow.provider, poll.token, flow.scopes, flow.client_secret
                )
            except ReconcilerError as error:
                return {"poll_status": "error", "error": "not_stored", "message": str(error)}
            except LockTimeout:
                return {
                    "poll_status": "error",
                    "error": "not_stored",
                    "message": f"{name}: the grant file stayed locked; start the flow again.",
                }
            return {
                "poll_status": "completed",
                "entry_id": name,
                "name": name,
                "granted_scopes": list(grant.granted_scopes),
                "expires_at": _rfc3339(grant.expires_at),
            }
        finally:
            flow.lock.release()

    # --- static secrets and status -----------------------------------------------------------

    def put_secret(self, name: object, value: object) -> None:
        from .. import operations

        name = check_name(name)
        if not isinstance(value, str) or not value:
            raise BadRequest("`value` must be a non-empty string")
        if len(value) > MAX_SECRET_LENGTH:
            raise BadRequest(f"`value` is longer than {MAX_SECRET_LENGTH} characters")
        operations.put_secret(self.config_path, name, Secret(value), self.environ)

    def delete_secret(self, name: object) -> None:
        from .. import operations

        operations.delete_secret(self.config_path, check_name(name), self.environ)

    def status(self) -> dict[str, object]:
        from ..operations import load_state
        from ..plan import report

        state = load_state(self.config_path, resolve=False, environ=self.environ)
        rows = report(state.desired, state.actual, self.clock())
        return {"grants": [row.to_json() for row in rows]}


def _rfc3339(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None
