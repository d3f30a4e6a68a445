"""Errors raised by the OAuth layer.

Every error carries a one-paragraph message for the user (which grant, what happened, what to
do), the OAuth ``error`` code and the provider's ``error_description`` when there is one. No
message ever contains a token, a code or a client secret: descriptions coming from a provider
are scrubbed of the secret values that were sent in the request before they are stored.
"""

from __future__ import annotations

from collections.abc import Iterable

_MAX_DESCRIPTION = 300


class OAuthError(Exception):
    """An OAuth operation failed. ``str(err)`` is the user-facing message."""

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
    ``retry_after`` is the provider's ``Retry-After`` in seconds, when it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class AccessDenied(OAuthError):
    """The user (or the provider's policy) refused the authorization request."""


class LinkTimeout(OAuthError):
    """A link flow did not finish in time (no browser callback, or an expired device code)."""


def scrub(text: str | None, secrets: Iterable[str | None] = ()) -> str | None:
    """Clean a provider-supplied description for use in a message: drop control characters,
    replace any of ``secrets`` that the provider may have echoed back, and cap the length."""
    if text is None:
        return None
    if not isinstance(text, str):
        text = str(text)
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    if len(text) > _MAX_DESCRIPTION:
        text = text[: _MAX_DESCRIPTION - 1] + "…"
    return text or None


def describe(error: str | None, description: str | None) -> str:
    """``invalid_grant: The refresh token was revoked`` / ``invalid_grant`` / ``""``."""
    if error and description:
        return f"{error}: {description}"
    return error or description or ""
