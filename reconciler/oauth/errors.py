"""Errors raised by the OAuth layer.

Every error carries a one-paragraph message for the user (which grant, what happened, what to
do), the OAuth ``error`` code (RFC 6749 §4.1.2.1, §5.2; RFC 7009 §2.2.1; RFC 8628 §3.5) and the
provider's ``error_description`` when there is one. No message ever contains a token, a code or
a client secret: descriptions coming from a provider are scrubbed of the secret values that were
sent in the request before they are stored.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from ..errors import ReconcilerError

_MAX_DESCRIPTION = 300


class OAuthError(ReconcilerError):
    """An OAuth operation failed. ``str(err)`` is the user-facing message."""

    kind = "provider"

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        description: str | None = None,
        provider: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error = error
        self.description = description
        self.provider = provider
        self.status_code = status_code

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider!r}, error={self.error!r}, "
            f"status_code={self.status_code!r})"
        )


class InvalidGrant(OAuthError):
    """The provider rejected the grant (``invalid_grant``): the refresh token or code is revoked,
    expired or already used. The caller marks the grant ``needs-relink``; retrying cannot help."""


class InvalidTokenResponse(OAuthError):
    """A token response that cannot be stored as it is (a missing or malformed member); nothing
    was stored, and the grant in place is kept."""


class TransientError(OAuthError):
    """A temporary failure (5xx, timeout, network error, 429). Back off and keep the old grant.
    ``retry_after`` is the provider's ``Retry-After`` in seconds, when it sent one.
    ``ambiguous``: the request may have reached the provider and been acted on (a timeout or
    a connection lost after sending), so a rotated refresh token may be lost with the answer."""

    kind = "provider_unavailable"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        ambiguous: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.ambiguous = ambiguous


class AccessDenied(OAuthError):
    """The user (or the provider's policy) refused the authorization request."""


class LinkTimeout(OAuthError):
    """A link flow did not finish in time (no browser callback, or an expired device code)."""


def scrub(text: str | None, secrets: Iterable[str | None] = ()) -> str | None:
    """Clean a provider-supplied description for use in a message: replace any of ``secrets``
    that the provider may have echoed back, in any of the encodings it was sent or may be
    shown in (``encodings``), escape control characters (``printable``), and cap the length."""
    if text is None:
        return None
    if not isinstance(text, str):
        text = str(text)
    found = {form for value in secrets if value and len(value) >= 4 for form in encodings(value)}
    for form in sorted(found, key=len, reverse=True):
        text = text.replace(form, "***")
    text = printable(text).strip()
    if len(text) > _MAX_DESCRIPTION:
        text = text[: _MAX_DESCRIPTION - 1] + "…"
    return text or None


def encodings(value: str) -> set[str]:
    """``value`` as it may come back from a provider: raw, form- and URL-encoded (either case of
    hex digits), JSON-escaped, and base64 (as in HTTP Basic)."""
    escaped = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms = {value, *escaped, *(form.replace("/", "\\/") for form in escaped)}
    for encoded in (quote(value, safe=""), quote_plus(value, safe="")):
        forms |= {encoded, re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), encoded)}
    for charset in ("utf-8", "latin-1"):
        try:
            raw = value.encode(charset)
        except UnicodeEncodeError:
            continue
        for b64 in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
            forms |= {b64.decode(), b64.decode().rstrip("=")}
    return {form for form in forms if form}


def client_secrets(client_id: str, client_secret: str | None) -> list[str]:
    """The client secret, and the ``id:secret`` pair that HTTP Basic sends (RFC 6749 §2.3.1,
    raw as Authlib sends it, or form-encoded first as the RFC says): what ``scrub`` looks for."""
    if not client_secret:
        return []
    return [
        client_secret,
        f"{client_id}:{client_secret}",
        f"{quote_plus(client_id)}:{quote_plus(client_secret)}",
    ]


def printable(text: str) -> str:
    """``text`` with every character that is not printable (C0 and C1 controls such as ESC,
    line breaks, bidirectional overrides) shown as its escape (``\\x1b``, ``\\u202e``), so that
    no provider-supplied string can drive a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def describe(error: str | None, description: str | None) -> str:
    """``invalid_grant: The refresh token was revoked`` / ``invalid_grant`` / ``""``."""
    if error and description:
        return f"{error}: {description}"
    return error or description or ""
