"""The starlette application of `reconcile serve`: routes, JSON bodies, errors, headers.

``create_app(settings)`` is what the CLI runs (through ``run.prepare``) and what tests may run
in a thread. Layers, outermost first: response headers (``Cache-Control: no-store``...),
the gates (local on ``/v1``, control plane on ``/internal``), then the router. The routes are
thin: they parse and check the body, then call ``service.Service`` in a worker thread.
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import ReconcilerError
from ..model import Secret
from ..operations import utcnow
from . import gates, origins
from .pending import LINK_TTL, StoreFull, cookie_name
from .service import BadRequest, FirstHop, LinkOutcome, Service

if TYPE_CHECKING:
    from starlette.requests import Request

log = logging.getLogger("reconciler.server")

MAX_BODY = 64 * 1024
COOKIE_PATH = "/oauth/link"
#: A message carried in ``return_url`` is cut to this length.
MAX_URL_MESSAGE = 400
SECURITY_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    ),
)


@dataclass(frozen=True)
class Settings:
    config_path: Path
    #: The port this server listens on (the ``Host`` allowlist and the callback need it).
    port: int
    local_secret: Secret
    control_plane_secret: Secret | None = None
    #: Extra origins ``return_url`` may use; this server's loopback origins are always allowed.
    allowed_origins: tuple[str, ...] = ()
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    clock: Callable[[], datetime] = utcnow
    link_ttl: timedelta = LINK_TTL
    max_body: int = MAX_BODY
    #: How a browser on this machine reaches this server (default ``http://127.0.0.1:PORT``).
    base_url: str | None = None

    @property
    def url(self) -> str:
        return (self.base_url or f"http://127.0.0.1:{self.port}").rstrip("/")


class Problem(Exception):
    def __init__(
        self, status: int, error: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.headers = dict(headers or {})


#: The HTTP answer for each kind of ``errors.ReconcilerError``.
_STATUS = {
    "undeclared": (404, "not_declared"),
    "conflict": (409, "conflict"),
    "request": (400, "invalid_request"),
    "config": (500, "config_error"),
    "vault": (500, "vault_error"),
    "needs_relink": (409, "needs_relink"),
    "provider_unavailable": (503, "provider_unavailable"),
    "provider": (502, "provider_error"),
    "busy": (503, "busy"),
}


def _problem(error: BaseException) -> Problem:
    """The HTTP answer for an exception; messages never hold secret values (the layers below
    redact them), and unexpected exceptions show only their type."""
    if isinstance(error, Problem):
        return error
    if isinstance(error, BadRequest):
        return Problem(400, error.error, str(error))
    if isinstance(error, StoreFull):
        return Problem(429, "too_many_pending", str(error))
    if isinstance(error, ReconcilerError):
        if getattr(error, "error", None) == "missing_endpoint":
            return Problem(400, "unsupported_flow", str(error))
        status, code = _STATUS.get(error.kind, (409, "grant_error"))
        message = "the grant file stayed locked; try again" if error.kind == "busy" else str(error)
        return Problem(status, code, message)
    where = ""
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    if trace is not None:
        where = f" at {os.path.basename(trace.tb_frame.f_code.co_filename)}:{trace.tb_lineno}"
    log.error("unexpected %s%s", type(error).__name__, where)
    return Problem(500, "internal_error", "an unexpected error occurred; see the server's log")


def _json_response(status: int, document: object, headers: Mapping[str, str] | None = None):

    if status == 204:
        return Response(status_code=204, headers=dict(headers or {}))
    body = json.dumps(document, ensure_ascii=False).encode()
    return Response(body, status, dict(headers or {}), media_type="application/json")


def _error_response(problem: Problem):
    return _json_response(
        problem.status, {"error": problem.error, "message": problem.message}, problem.headers
    )


async def _read_json(request, max_body: int) -> dict[str, Any]:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise Problem(
            415, "unsupported_media_type", "send a JSON object with Content-Type: application/json"
        )
    length = request.headers.get("content-length")
    too_large = Problem(413, "payload_too_large", f"the body is larger than {max_body} bytes")
    if length is not None and (not length.isdigit() or int(length) > max_body):
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            raise too_large
    try:
        document = json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Problem(400, "invalid_json", "the body is not valid JSON") from None
    except RecursionError:
        raise Problem(400, "invalid_json", "the body's JSON is nested too deeply") from None
    if not isinstance(document, dict):
        raise Problem(400, "invalid_json", "the body must be a JSON object")
    return document


Work = Callable[[dict[str, Any], Mapping[str, str]], object]


def _route(work: Work, *, body: bool, status: int = 200, max_body: int = MAX_BODY):
    """An endpoint: read the JSON body (if any), run ``work(body, path_params)`` in a worker
    thread, answer its result as JSON (``None``: 204), or the error as ``{error, message}``."""

    async def endpoint(request):
        try:
            document = await _read_json(request, max_body) if body else {}
            result = await run_in_threadpool(work, document, dict(request.path_params))
        except Exception as error:
            return _error_response(_problem(error))
        return _json_response(204 if result is None else status, result)

    return endpoint


def _required(document: Mapping[str, Any], key: str) -> Any:
    if document.get(key) is None:
        raise BadRequest(f"`{key}` is required")
    return document[key]


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}}
h1{{font-size:1.3rem}}</style></head>
<body><h1>{title}</h1><p>{body}</p></body></html>
"""


def _page(status: int, title: str, body: str):

    text = _PAGE.format(title=html.escape(title), body=html.escape(body))
    return HTMLResponse(text, status)


def _outcome_response(outcome: LinkOutcome):

    if outcome.return_url and outcome.name:
        if outcome.ok:
            params = [("oauth_status", "ok"), ("entry_id", outcome.name)]
        else:
            message = outcome.message
            if len(message) > MAX_URL_MESSAGE:
                message = message[: MAX_URL_MESSAGE - 1] + "…"
            params = [
                ("oauth_status", "error"),
                ("oauth_error", message),
                ("entry_id", outcome.name),
            ]
        return RedirectResponse(origins.with_result(outcome.return_url, params), 303)
    if outcome.ok:
        return _page(200, f"Linked {outcome.name}", "You can close this tab.")
    title = f"Linking {outcome.name} failed" if outcome.name else "Link refused"
    return _page(outcome.status, title, outcome.message)


def _single(params: Mapping[str, list[str]], key: str) -> str:
    values = params.get(key) or []
    return values[0] if len(values) == 1 else ""


def create_app(settings: Settings):
    """The ASGI application for ``settings``."""

    port = settings.port
    allowed = frozenset([*origins.loopback_origins(port), settings.url, *settings.allowed_origins])
    service = Service(
        settings.config_path,
        base_url=settings.url,
        allowed_origins=allowed,
        environ=settings.environ,
        clock=settings.clock,
        link_ttl=settings.link_ttl,
    )

    def route(path: str, method: str, work: Work, *, body: bool = True, status: int = 200):
        endpoint = _route(work, body=body, status=status, max_body=settings.max_body)
        return Route(path, endpoint, methods=[method])

    def start_link(d, _):
        started = service.start_link(d.get("name"), d.get("scopes"), d.get("return_url"))
        return {"authorize_url": started.authorize_url, "state": started.state}

    def internal_start(d, _):
        return_url = _required(d, "return_url")
        started = service.start_link(_required(d, "entry_id"), d.get("scopes"), return_url)
        return {"authorize_url": started.authorize_url}

    def get_only(request):
        # HEAD is refused: a link preview or prefetch must not bind or spend an attempt.
        if request.method != "GET":
            return _error_response(Problem(405, "method_not_allowed", "use GET"))
        return None

    async def link_start(request):
        if (refused := get_only(request)) is not None:
            return refused
        params = parse_qs(request.url.query, keep_blank_values=True)
        state = _single(params, "state")
        hop = service.first_hop(state) if state else None
        if not isinstance(hop, FirstHop):
            return _outcome_response(
                hop or LinkOutcome(False, None, "This link has no valid state.", None, 400)
            )
        response = RedirectResponse(hop.authorization_url, 303)
        response.set_cookie(
            hop.cookie_name,
            hop.cookie_value,
            max_age=hop.max_age,
            path=COOKIE_PATH,
            secure=hop.secure,
            httponly=True,
            samesite="lax",
        )
        return response

    async def link_callback(request):
        if (refused := get_only(request)) is not None:
            return refused
        params = parse_qs(request.url.query, keep_blank_values=True)
        state = _single(params, "state")
        try:
            outcome = await run_in_threadpool(
                service.finish_link, state, dict(request.cookies), params
            )
        except Exception as error:  # not an OAuth answer: an unexpected failure
            problem = _problem(error)
            outcome = LinkOutcome(False, None, problem.message, None, problem.status)
        response = _outcome_response(outcome)
        if state and outcome.name:  # the attempt is over: its cookie is no longer needed
            response.delete_cookie(cookie_name(state), path=COOKIE_PATH, httponly=True)
        return response

    def start_device(d, _):
        return service.start_device(d.get("name"), d.get("scopes"))

    def poll_device(d, _):
        return service.poll_device(d.get("name"), d.get("device_code"))

    def put_secret(d, p):
        return service.put_secret(p["name"], d.get("value"))

    def delete_secret(d, p):
        return service.delete_secret(p["name"])

    def status(d, _):
        return service.status()

    def internal_device_start(d, _):
        return service.start_device(_required(d, "entry_id"), d.get("scopes"))

    def internal_device_poll(d, _):
        return service.poll_device(_required(d, "entry_id"), _required(d, "device_code"))

    def internal_put(d, _):
        return service.put_secret(_required(d, "key"), _required(d, "value"))

    def internal_delete(d, _):
        return service.delete_secret(_required(d, "key"))

    routes = [
        route("/v1/links", "POST", start_link),
        route("/v1/links/device", "POST", start_device),
        route("/v1/links/device/poll", "POST", poll_device),
        route("/v1/secrets/{name}", "PUT", put_secret),
        route("/v1/secrets/{name}", "DELETE", delete_secret, body=False),
        route("/v1/status", "GET", status, body=False),
        Route("/oauth/link/start", link_start, methods=["GET"]),
        Route("/oauth/link/callback", link_callback, methods=["GET"]),
    ]
    if settings.control_plane_secret is not None:
        routes += [
            route("/internal/oauth-link/v1/start", "POST", internal_start),
            route("/internal/oauth-link/v1/device/start", "POST", internal_device_start),
            route("/internal/oauth-link/v1/device/poll", "POST", internal_device_poll),
            route("/internal/outbound-secrets/v1/put", "POST", internal_put),
            route("/internal/outbound-secrets/v1/delete", "POST", internal_delete),
        ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # the one exception it is registered for
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {404: "no such route", 405: "method not allowed on this route"}.get(
            exc.status_code, str(exc.detail)
        )
        return _json_response(exc.status_code, {"error": error, "message": message}, exc.headers)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return SecurityHeaders(Gates(app, settings))


class Gates:
    """The local gate on ``/v1``, the control-plane gate on ``/internal`` (when mounted)."""

    def __init__(self, app, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        own = urlsplit(settings.url).netloc.lower()
        self.hosts = gates.allowed_hosts(settings.port) | {own}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            refusal = None
            if path == "/v1" or path.startswith("/v1/"):
                refusal = gates.check_local(scope, self.settings.local_secret, self.hosts)
            elif self.settings.control_plane_secret is not None and (
                path == "/internal" or path.startswith("/internal/")
            ):
                refusal = gates.check_control_plane(scope, self.settings.control_plane_secret)
            if refusal is not None:
                response = _error_response(
                    Problem(refusal.status, refusal.error, refusal.message, refusal.headers)
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """``Cache-Control: no-store`` and friends on every response, errors included."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> Awaitable[None] | None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*headers, *SECURITY_HEADERS]}
            await send(message)
            return None

        await self.app(scope, receive, send_with_headers)
