"""Where the browser may be sent back after a link: ``return_url`` must be on an allowlisted
origin, compared exactly (scheme, host and port; RFC 6454). Anything a browser could read
differently from this parser (userinfo, backslashes, control characters, percent-encoded or
non-ASCII host names, a "port" with a domain in it) is refused rather than interpreted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ORIGINS_ENV = "RECONCILER_ALLOWED_ORIGINS"
MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_IPV6 = re.compile(r"\[[0-9a-f:.]+\]")
_PORT = re.compile(r"[0-9]{1,5}")
#: Parameters the callback sets on ``return_url``; the caller's own values are dropped.
RESULT_PARAMS = ("oauth_status", "oauth_error", "entry_id")


class OriginError(ValueError):
    """``str()`` says what is wrong, without echoing more of the URL than needed."""


def _origin(url: str, *, path_allowed: bool) -> str:
    if not isinstance(url, str) or not url:
        raise OriginError("must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise OriginError(f"is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or not url.isprintable() or any(c in url for c in " \\\t\r\n"):
        raise OriginError("contains characters a browser may read differently (space, \\, ...)")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise OriginError("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise OriginError("must be an http or https URL")
    netloc = parts.netloc.lower()
    if not url.lower().startswith(f"{scheme}://") or not netloc:
        raise OriginError("must be an absolute URL with a host")
    if "@" in netloc:
        raise OriginError("must not carry a user name or password")
    host, port_text = netloc, ""
    if netloc.startswith("["):
        end = netloc.find("]")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            raise OriginError("has an invalid host")
        port_text = rest[1:] if rest else ""
        if not _IPV6.fullmatch(host):
            raise OriginError("has an invalid host")
    else:
        host, _, port_text = netloc.partition(":")
        if not _HOST.fullmatch(host) or len(host) > 253:
            raise OriginError("has an invalid host")
    if ":" in netloc.rsplit("]", 1)[-1] and not _PORT.fullmatch(port_text):
        raise OriginError("has an invalid port")
    port = int(port_text) if port_text else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise OriginError("has an invalid port")
    if not path_allowed and (parts.path not in ("", "/") or parts.query or parts.fragment):
        raise OriginError("must be an origin only (scheme://host[:port]), without a path")
    return f"{scheme}://{host}:{port}"


def normalise_origin(origin: str) -> str:
    """``scheme://host:port`` with the default port made explicit; OriginError if invalid."""
    return _origin(origin.strip().rstrip("/") if isinstance(origin, str) else origin,
                   path_allowed=False)  # fmt: skip


def loopback_origins(port: int) -> list[str]:
    return [f"http://{host}:{port}" for host in ("127.0.0.1", "localhost", "[::1]")]


def parse_origins(values: Iterable[str]) -> list[str]:
    """Origins from flags and ``$RECONCILER_ALLOWED_ORIGINS`` (comma or space separated)."""
    found: list[str] = []
    for value in values:
        for item in re.split(r"[,\s]+", value or ""):
            if item:
                try:
                    found.append(normalise_origin(item))
                except OriginError as error:
                    raise OriginError(f"allowed origin {item!r} {error}") from None
    return found


def check_return_url(url: object, allowed: frozenset[str] | Sequence[str]) -> str:
    """``url`` itself when its origin is allowlisted; OriginError otherwise."""
    if not isinstance(url, str):
        raise OriginError("return_url must be a string")
    try:
        origin = _origin(url, path_allowed=True)
    except OriginError as error:
        raise OriginError(f"return_url {error}") from None
    if origin not in allowed:
        raise OriginError(
            f"return_url is not on an allowed origin ({origin}); allow it with "
            f"`reconcile serve --allow-origin {origin}` or ${ORIGINS_ENV}"
        )
    return url


def with_result(url: str, params: Sequence[tuple[str, str]]) -> str:
    """``url`` (already checked) with the callback's result parameters added to its query."""
    parts = urlsplit(url)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in RESULT_PARAMS
    ]
    query.extend(params)
    return urlunsplit(parts._replace(query=urlencode(query)))
