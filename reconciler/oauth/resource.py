"""Protected resource discovery for MCP servers (RFC 9728), and the canonical resource URI that
tokens are bound to (RFC 8707 §2).

- ``canonical_uri`` (``model.canonical_resource``): the URI a client names a resource by;
- ``parse_challenge``: the parameters of a ``Bearer`` challenge in ``WWW-Authenticate``
  (RFC 6750 §3: ``error``, ``scope``; RFC 9728 §5.1: ``resource_metadata``);
- ``discover_resource``: request the MCP endpoint without a token; read the metadata URL from
  the challenge's ``resource_metadata`` (RFC 9728 §5), else try the well-known URLs (path-aware
  first, then the root, §3.1); check that the document's ``resource`` is the endpoint (§3.3);
  take its first ``authorization_servers`` entry (https, or http on loopback) and the scopes
  (the challenge's ``scope``, else the document's ``scopes_supported``).

Importing this module is cheap: httpx2 is imported by ``transport`` when a request is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..model import Provider
from ..model import canonical_resource as canonical_uri
from .endpoints import is_secure_url
from .errors import OAuthError, TransientError, printable
from .transport import parse_body, send

WELL_KNOWN = "/.well-known/oauth-protected-resource"
#: auth-param = token BWS "=" BWS ( token / quoted-string ) (RFC 9110 §11.2).
_PARAM = re.compile(
    r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[!#$%&\'*+.^_`|~0-9A-Za-z/-]+=*)'
    r"\s*(?:,|$)"
)


@dataclass(frozen=True)
class ProtectedResource:
    """What the MCP server says about itself: the resource its tokens must be bound to, the
    authorization server that issues them, and the scopes to ask for when none are declared."""

    resource: str
    authorization_server: str
    scopes: tuple[str, ...] = ()
    metadata_url: str | None = None


def parse_challenge(header: str | None) -> dict[str, str] | None:
    """The parameters of the ``Bearer`` challenge in a ``WWW-Authenticate`` value, or None when
    there is no Bearer challenge. Parameter names are lower-cased; quoted values unescaped."""
    if not header:
        return None
    found = re.search(r"(?:^|,)\s*Bearer(?:\s+|$)", header, re.IGNORECASE)
    if found is None:
        return None
    rest = header[found.end() :]
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None:
            break  # another challenge (a new scheme) or a token68: the Bearer one ends here
        name, value = match[1].lower(), match[2]
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(name, value)
        position = match.end()
    return params


def well_known_urls(url: str) -> list[str]:
    """RFC 9728 §3.1: the well-known URL with the resource's path inserted, then the root."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    urls = [origin + WELL_KNOWN + path] if path else []
    return [*urls, origin + WELL_KNOWN]


def _error(provider: Provider, message: str, code: str) -> OAuthError:
    return OAuthError(f"{provider.name}: {message}", error=code, provider=provider.name)


def _get(provider: Provider, url: str, what: str, accept: str) -> Any:
    response = send(provider, "GET", url, what=what, headers={"Accept": accept})
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientError(
            f"{provider.name}: the {what} at {url} answered HTTP {response.status_code}; nothing "
            "was changed, try again later.",
            error="temporarily_unavailable",
            provider=provider.name,
            status_code=response.status_code,
        )
    return response


def discover_resource(provider: Provider) -> ProtectedResource:
    """Find the authorization server of the MCP server ``provider.mcp`` (RFC 9728)."""
    url = provider.mcp
    if not url:
        raise ValueError(f"{provider.name}: not an MCP provider")
    if not is_secure_url(url):
        raise _error(
            provider,
            f"the MCP server URL {url!r} is not https (http only on loopback hosts). Fix `mcp` "
            "in providers.yaml.",
            "insecure_endpoint",
        )
    # JSON only: a server that would answer a GET with an event stream says 405 or 406 instead.
    probe = _get(provider, url, "MCP server", "application/json")
    challenge = parse_challenge(probe.headers.get("www-authenticate"))
    challenged = probe.status_code == 401 and challenge is not None
    candidates = well_known_urls(url)
    if challenge and challenge.get("resource_metadata"):
        candidates = [challenge["resource_metadata"]]
    tried: list[str] = []
    for candidate in candidates:
        if not is_secure_url(candidate):
            raise _error(
                provider,
                f"the MCP server at {url} names its resource metadata at "
                f"{printable(candidate)!r}, which is not https (http only on loopback hosts), "
                "so it was not read. Nothing was written.",
                "insecure_endpoint",
            )
        response = _get(provider, candidate, "protected resource metadata", "application/json")
        document = parse_body(response) if response.status_code == 200 else None
        if document is None:
            what = f"HTTP {response.status_code}" if response.status_code != 200 else "not JSON"
            tried.append(f"{candidate} ({what})")
            continue
        scope = (challenge or {}).get("scope") if challenged else None
        return _from_metadata(provider, url, candidate, document, scope)
    if not challenged:
        raise _error(
            provider,
            f"the MCP server at {url} answered HTTP {probe.status_code} without an OAuth "
            "challenge (`WWW-Authenticate: Bearer`, RFC 9728 §5) and publishes no protected "
            f"resource metadata (tried {'; '.join(tried)}). Check `mcp` in providers.yaml: it "
            "must be the server's MCP endpoint, and the server must require OAuth. Nothing was "
            "written.",
            "challenge_missing",
        )
    raise _error(
        provider,
        f"the MCP server at {url} asks for OAuth but its protected resource metadata was not "
        f"found (tried {'; '.join(tried)}; RFC 9728). Nothing was written; report it to the "
        "server's operator.",
        "metadata_not_found",
    )


def _from_metadata(
    provider: Provider, url: str, where: str, document: dict[str, Any], scope: str | None
) -> ProtectedResource:
    resource = document.get("resource")
    if not isinstance(resource, str) or canonical_uri(resource) != canonical_uri(url):
        shown = printable(str(resource))[:200]
        raise _error(
            provider,
            f"the protected resource metadata at {where} is for resource {shown!r}, not the "
            f"MCP server {url} (RFC 9728 §3.3), so it was not used: it may be an impostor's. "
            "Check `mcp` in providers.yaml (scheme, host, port and path must match what the "
            "server calls itself). Nothing was written.",
            "resource_mismatch",
        )
    servers = document.get("authorization_servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
        raise _error(
            provider,
            f"the protected resource metadata at {where} names no authorization server "
            "(`authorization_servers`, RFC 9728 §2). Nothing was written; report it to the "
            "server's operator.",
            "invalid_metadata",
        )
    issuer = servers[0]
    if not is_secure_url(issuer):
        raise _error(
            provider,
            f"the MCP server's authorization server {printable(issuer)[:200]!r} (from {where}) "
            "is not https (plain http is allowed only on 127.0.0.1, [::1] and localhost), so no "
            "credentials are sent to it. Nothing was written.",
            "insecure_endpoint",
        )
    if scope:
        scopes = tuple(dict.fromkeys(printable(s) for s in scope.split()))
    else:
        supported = document.get("scopes_supported")
        scopes = tuple(
            dict.fromkeys(printable(s) for s in supported if isinstance(s, str) and s.strip())
            if isinstance(supported, list)
            else ()
        )
    return ProtectedResource(canonical_uri(url), issuer, scopes, where)
