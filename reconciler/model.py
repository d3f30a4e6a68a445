"""The values that flow between stages: desired state, actual state, and the plan.

Everything here is a frozen dataclass or a small value type. No I/O, no clock, no network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from .errors import ReconcilerError
from .secret import Secret as Secret  # re-exported: the stages take Secret from here

Flow = Literal["authorization_code", "device_code", "client_credentials"]
GrantKind = Literal["oauth2", "secret"]
GrantStatus = Literal["ok", "needs-relink", "uncertain"]
ActionKind = Literal[
    "link", "relink", "refresh", "write-secret", "rekey", "prune", "attach", "detach"
]
#: Where a grant's live state (refresh and access token) is kept (SPEC §7).
CustodyKind = Literal["files", "etcd"]

#: Leaves of a grant file that are encrypted; every other leaf is plaintext (MAC-covered).
ENCRYPTED_FIELDS = (
    "access_token",
    "refresh_token",
    "id_token",
    "value",
    "client_secret",
    "secondary_token",
    "registration_access_token",
)


def canonical_resource(url: str) -> str:
    """The canonical form of a resource URI (RFC 8707 §2; RFC 3986 §6.2.2, §6.2.3): scheme and
    host in lower case, no default port, no fragment, no trailing slash on a bare origin. An
    MCP grant records it, and ``plan`` compares the declared ``mcp`` URL with it."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}.get(scheme)
    netloc = host if port is None or port == default else f"{host}:{port}"
    path = "" if parts.path == "/" else parts.path
    return urlunsplit((scheme, netloc, path, parts.query, ""))


@dataclass(frozen=True)
class Provider:
    """A declared OAuth grant, with preset values already merged in."""

    name: str
    client_id: str
    flow: Flow = "authorization_code"
    scopes: tuple[str, ...] = ()
    client_secret_ref: str | None = None
    preset: str | None = None
    issuer: str | None = None
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    token_endpoint_auth_method: str | None = None
    scope_separator: str = " "
    pkce: bool = True
    authorization_params: Mapping[str, str] = field(default_factory=dict)
    token_params: Mapping[str, str] = field(default_factory=dict)
    redirect_uri: str | None = None
    #: Named response/request hooks from the catalog (see ``reconciler.oauth``).
    quirks: tuple[str, ...] = ()
    #: Extra catalog data a quirk hook may read (e.g. a grant-deletion URL).
    extras: Mapping[str, object] = field(default_factory=dict)
    #: Seconds that one HTTP exchange with the provider may take, body included
    #: (``defaults.request_deadline``).
    request_deadline: float = 30.0
    #: The MCP endpoint this grant is for (SPEC §8): the protected resource whose metadata
    #: names the authorization server; ``client_id`` may then be empty (registered at link).
    mcp: str | None = None
    #: A client ID metadata document (its URL is the client ID), used with ``mcp`` when the
    #: authorization server supports them and no ``client_id`` is declared.
    client_metadata_url: str | None = None
    #: How long the provider still accepts a refresh token it has just rotated (SPEC §7):
    #: within it, a refresh whose answer was lost may be sent again. None: no grace.
    rotation_grace: timedelta | None = None
    #: Whether the provider issues a new refresh token on every refresh (and may revoke the
    #: grant when an old one is presented again). Such grants are never refreshed without the
    #: coordination engine; the default assumes the worst.
    rotates_refresh_tokens: bool = True


@dataclass(frozen=True)
class SecretSpec:
    """A declared static secret. ``value`` is the resolved value, or None when ``ref`` is
    ``prompt`` (satisfied by any grant file, asked for only when one must be written) or when
    references were not resolved (no identity to compare values with)."""

    name: str
    ref: str
    value: Secret | None = None


@dataclass(frozen=True)
class Notify:
    webhook: str
    secret_ref: str | None = None


@dataclass(frozen=True)
class Coordination:
    """``coordination:``: the engine that keeps live grant state for many machines (SPEC §7).
    Secrets stay references (``password_ref``), resolved where the engine is opened."""

    endpoints: tuple[str, ...]
    namespace: str
    username: str | None = None
    password_ref: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    #: The lock's lease; kept alive while a refresh runs.
    lease: timedelta = timedelta(seconds=15)


@dataclass(frozen=True)
class Desired:
    """The validated content of ``providers.yaml``."""

    path: Path
    store_dir: Path
    #: Age/ssh recipients per declared name: ``store.recipients`` or else the first
    #: ``.sops.yaml`` creation rule matching ``<store.dir>/<name>.sops.yaml``.
    recipients: Mapping[str, tuple[str, ...]]
    refresh_before: timedelta
    keepalive: timedelta
    providers: Mapping[str, Provider]
    secrets: Mapping[str, SecretSpec]
    notify: Notify | None = None
    #: Declared secrets whose reference could not be resolved (an unset ``env:``, a missing
    #: ``file:``), with the error naming file, line and what to do. They get no action; the
    #: other grants are reconciled as usual, and the run reports these as failed.
    unresolved: Mapping[str, ReconcilerError] = field(default_factory=dict)
    #: ``coordination:``; None: every grant's live state stays in its file.
    coordination: Coordination | None = None

    def names(self) -> list[str]:
        return sorted([*self.providers, *self.secrets])


@dataclass(frozen=True)
class Grant:
    """One grant file: plaintext metadata always, secret leaves only when decrypted."""

    name: str
    kind: GrantKind
    status: GrantStatus = "ok"
    status_reason: str | None = None
    flow: Flow | None = None
    client_id: str | None = None
    token_endpoint: str | None = None
    scopes: tuple[str, ...] = ()
    granted_scopes: tuple[str, ...] = ()
    token_type: str | None = None
    expires_at: datetime | None = None
    obtained_at: datetime | None = None
    access_token: Secret | None = None
    refresh_token: Secret | None = None
    id_token: Secret | None = None
    value: Secret | None = None
    client_secret: Secret | None = None
    #: A second access token the provider issued with the grant's (Slack: the bot token beside
    #: the user token, or the other way round); ``extra`` says which and its granted scopes.
    secondary_token: Secret | None = None
    #: A registered client's RFC 7591 registration access token (MCP grants, SPEC §8).
    registration_access_token: Secret | None = None
    #: The RFC 8707 resource (canonical MCP URI) the tokens are bound to, and the issuer of
    #: the authorization server that issued them (MCP grants); plaintext, so that ``plan``
    #: sees a changed MCP URL without a key.
    resource: str | None = None
    authorization_server: str | None = None
    #: The age recipients the file is encrypted to (from its ``sops`` metadata).
    recipients: tuple[str, ...] = ()
    #: Names of the encrypted leaves present in the file (their keys are plaintext in SOPS).
    sealed: frozenset[str] = frozenset()
    #: True when the secret leaves were decrypted (an identity was available).
    decrypted: bool = False
    #: Provider-specific plaintext extras (e.g. Salesforce ``instance_url``).
    extra: Mapping[str, str] = field(default_factory=dict)
    #: When the file was written (its sops ``lastmodified``, covered by the MAC): the file's
    #: version, by which a grant file put back from an older commit is recognised.
    modified: datetime | None = None
    #: Where the live state is kept (the file's plaintext ``custody`` leaf); None: the file.
    custody: CustodyKind | None = None
    #: In the engine: the state's revision and its generation (one more on every commit).
    revision: int | None = None
    generation: int | None = None


@dataclass(frozen=True)
class Actual:
    """What the store holds. ``unreadable`` maps names to the reason a file could not be read
    (tampered, undecryptable, malformed); those grants are reported, never touched."""

    grants: Mapping[str, Grant]
    unreadable: Mapping[str, str] = field(default_factory=dict)
    #: True when an age identity was available, so secret values could be compared.
    decrypted: bool = False
    #: Why the files were not decrypted although an identity was given (it is not theirs).
    sealed_reason: str | None = None
    #: Why the coordination engine's live state could not be read (it was unreachable): the
    #: attached grants are then as their files record them, without live state.
    engine_unreached: str | None = None


@dataclass(frozen=True)
class Action:
    name: str
    action: ActionKind
    reason: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    #: Human notes that are not actions (e.g. "values not compared: no age identity").
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for action in self.actions:
            counts[action.action] = counts.get(action.action, 0) + 1
        return counts

    def __bool__(self) -> bool:
        return bool(self.actions)


@dataclass(frozen=True)
class Browser:
    """How a link flow reaches the user; the CLI fills it, tests script it."""

    #: Opens a URL (the system browser, or a scripted one); None prints the URL instead.
    open: Callable[[str], None] | None
    #: Shows a line to the user (the URL when not opened, the device code...).
    show: Callable[[str], None]
    #: Seconds to wait for the browser to come back.
    timeout: float = 300.0
    #: Reads a redirect URL the user pasted (a browser on another machine); None: no paste.
    read_pasted: Callable[[], str | None] | None = None
