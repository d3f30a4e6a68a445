"""Authorization server metadata discovery (RFC 8414, then OpenID Connect Discovery 1.0).

From an ``issuer``: ``/.well-known/oauth-authorization-server`` with the RFC 8414 §3.1
path-insertion rule (``https://as/t1`` → ``https://as/.well-known/oauth-authorization-server/t1``),
then ``{issuer}/.well-known/openid-configuration``. The returned ``issuer`` must equal the
configured one exactly (RFC 8414 §3.3), and every endpoint must be https (loopback http allowed).

Results are cached as JSON under ``$XDG_CACHE_HOME/oauth-reconciler/discovery/`` for
``DEFAULT_TTL`` so that repeated commands are fast and work offline; a stale entry is used (with
a warning) when the server cannot be reached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..model import Provider
from .endpoints import is_secure_url
from .errors import OAuthError, TransientError, printable
from .transport import parse_body, send

log = logging.getLogger(__name__)

DEFAULT_TTL = 24 * 3600.0
ENDPOINT_FIELDS = (
    "authorization_endpoint",
    "token_endpoint",
    "device_authorization_endpoint",
    "revocation_endpoint",
)
_CACHE_VERSION = 1


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "oauth-reconciler" / "discovery"


def metadata_urls(issuer: str) -> list[str]:
    """Where to look, in order: RFC 8414 (path inserted), then OpenID Connect (path appended)."""
    # Authlib is heavy; only a metadata lookup needs the RFC 8414 URL rule.
    from authlib.oauth2.rfc8414 import get_well_known_url

    rfc8414 = get_well_known_url(issuer, external=True)
    openid = issuer.rstrip("/") + "/.well-known/openid-configuration"
    return [rfc8414, openid]


def _provider_for(issuer: str, name: str | None) -> Provider:
    # ``send`` and the error helpers name a provider; discovery may run before one is built.
    return Provider(name=name or issuer, client_id="")


def validate_metadata(issuer: str, metadata: dict[str, Any], *, name: str | None = None) -> None:
    """Check a metadata document against the configured issuer (RFC 8414 §3.3)."""
    # Authlib is heavy; only a metadata document to check needs its validator.
    from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

    label = name or issuer
    returned = metadata.get("issuer")
    if returned != issuer:
        raise OAuthError(
            f"{label}: the metadata served for issuer {issuer!r} names issuer {returned!r}. "
            "They must be identical (RFC 8414 §3.3), so the endpoints were not used. Fix "
            "`issuer` in providers.yaml (watch for a trailing slash or a different host).",
            error="issuer_mismatch",
            provider=name,
        )
    checked = AuthorizationServerMetadata(metadata)
    try:
        checked.validate_issuer()
        checked.validate_token_endpoint()
        checked.validate_authorization_endpoint()
        checked.validate_revocation_endpoint()
        checked.validate_code_challenge_methods_supported()
        checked.validate_token_endpoint_auth_methods_supported()
    except ValueError as exc:
        raise OAuthError(
            f"{label}: the authorization server metadata is invalid ({printable(str(exc))}), so "
            "it was not used. Set the endpoints explicitly in providers.yaml.",
            error="invalid_metadata",
            provider=name,
        ) from None
    for key in ENDPOINT_FIELDS:
        url = metadata.get(key)
        if url is not None and (not isinstance(url, str) or not is_secure_url(url)):
            raise OAuthError(
                f"{label}: the metadata's {key} is not an https URL, so it was not used. Set the "
                "endpoints explicitly in providers.yaml.",
                error="invalid_metadata",
                provider=name,
            )


def _cache_file(directory: Path, issuer: str) -> Path:
    return directory / (hashlib.sha256(issuer.encode()).hexdigest()[:40] + ".json")


def _read_cache(path: Path, issuer: str) -> tuple[float, dict[str, Any]] | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(entry, dict)
        or entry.get("version") != _CACHE_VERSION
        or entry.get("issuer") != issuer
        or not isinstance(entry.get("metadata"), dict)
        or not isinstance(entry.get("fetched_at"), int | float)
    ):
        return None
    return float(entry["fetched_at"]), entry["metadata"]


def _write_cache(path: Path, issuer: str, metadata: dict[str, Any], fetched_at: float) -> None:
    entry = {
        "version": _CACHE_VERSION,
        "issuer": issuer,
        "fetched_at": fetched_at,
        "metadata": metadata,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("discovery cache not written (%s)", exc)


def fetch_metadata(issuer: str, *, name: str | None = None) -> dict[str, Any]:
    """Fetch and validate the metadata of ``issuer`` from the network (no cache)."""
    provider = _provider_for(issuer, name)
    label = name or issuer
    if not is_secure_url(issuer):
        raise OAuthError(
            f"{label}: issuer {issuer!r} is not an https URL (http only on loopback hosts).",
            error="insecure_endpoint",
            provider=name,
        )
    tried = []
    for url in metadata_urls(issuer):
        response = send(
            provider, "GET", url, what="metadata document", headers={"Accept": "application/json"}
        )
        status = response.status_code
        if status == 429 or status >= 500:
            raise TransientError(
                f"{label}: the metadata document at {url} answered HTTP {status}; try again later.",
                error="temporarily_unavailable",
                provider=name,
                status_code=status,
            )
        if status != 200:
            tried.append(f"{url} (HTTP {status})")
            continue
        metadata = parse_body(response)
        if metadata is None:
            tried.append(f"{url} (not a JSON object)")
            continue
        validate_metadata(issuer, metadata, name=name)
        return metadata
    raise OAuthError(
        f"{label}: no authorization server metadata found for issuer {issuer!r} (tried "
        f"{'; '.join(tried)}). Check `issuer`, or set the endpoints explicitly.",
        error="metadata_not_found",
        provider=name,
    )


def discover(
    issuer: str,
    *,
    name: str | None = None,
    cache: Path | None = None,
    ttl: float = DEFAULT_TTL,
    clock: Callable[[], float] = time.time,
    refresh: bool = False,
) -> dict[str, Any]:
    """The validated metadata of ``issuer``, from the cache when younger than ``ttl``."""
    directory = cache if cache is not None else cache_dir()
    path = _cache_file(directory, issuer)
    cached = None if refresh else _read_cache(path, issuer)
    now = clock()
    if cached is not None and 0 <= now - cached[0] < ttl:
        try:
            validate_metadata(issuer, cached[1], name=name)
            return cached[1]
        except OAuthError:
            cached = None
    try:
        metadata = fetch_metadata(issuer, name=name)
    except TransientError:
        if cached is not None:
            log.warning("%s: metadata server unreachable, using the cached copy", name or issuer)
            return cached[1]
        raise
    _write_cache(path, issuer, metadata, now)
    return metadata


def resolve_endpoints(
    provider: Provider,
    *,
    cache: Path | None = None,
    ttl: float = DEFAULT_TTL,
    clock: Callable[[], float] = time.time,
) -> Provider:
    """The provider with endpoints filled from its issuer's metadata; explicit fields win.

    Without an ``issuer``, or when every endpoint is already set, no lookup happens.
    Also fills ``token_endpoint_auth_method`` when unset and the metadata narrows the choice,
    and records RFC 9207 support in ``extras`` (so a missing ``iss`` is then refused).
    """
    if not provider.issuer or all(getattr(provider, f) for f in ENDPOINT_FIELDS):
        return provider
    metadata = discover(provider.issuer, name=provider.name, cache=cache, ttl=ttl, clock=clock)
    changes: dict[str, Any] = {
        f: metadata[f] for f in ENDPOINT_FIELDS if not getattr(provider, f) and metadata.get(f)
    }
    supported = metadata.get("token_endpoint_auth_methods_supported")
    if provider.token_endpoint_auth_method is None and isinstance(supported, list):
        if provider.client_secret_ref:
            choices: tuple[str, ...] = ("client_secret_basic", "client_secret_post")
        else:
            choices = ("none",)
        for method in choices:
            if method in supported:
                changes["token_endpoint_auth_method"] = method
                break
    extras = dict(provider.extras)
    if metadata.get("authorization_response_iss_parameter_supported") is True:
        extras.setdefault("authorization_response_iss_parameter_supported", True)
    changes["extras"] = extras
    return dataclasses.replace(provider, **changes)
