"""Refreshes a face asks for: a token the cache could not serve, and a replacement for one
an API rejected (401). They load the OAuth stack, so the token read imports this module only
when it must refresh.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .. import config
from ..apply import lifecycle
from ..errors import NeedsRelink, UserError
from ..model import Secret
from ..oauth.resource import parse_challenge
from ..vault.sops.keys import load_identities
from ..vault.store import grant_path
from .basics import utcnow
from .issued import Issued, issued

TYPE_CHECKING = False  # not typing's: importing typing costs every short command ~3 ms
if TYPE_CHECKING:
    from ..vault.sops.keys import Identities


def access_token(
    config_path: Path,
    name: str,
    identities: Identities,
    environ: Mapping[str, str],
    allow_rollback: bool = False,
) -> Secret:

    desired = config.load(config_path, environ=environ, resolve_values=False)
    if name not in desired.providers:
        raise UserError(f"{name} is declared as a secret in {config_path}, not as an OAuth grant")
    grant = lifecycle.refresh(
        desired, name, utcnow(), identities, environ=environ, allow_rollback=allow_rollback
    )
    if grant.access_token is None:
        raise UserError(f"{name}: the grant holds no access token; run `reconcile link {name}`")
    return grant.access_token


def reissue_rejected(
    config_path: Path, name: str, rejected: Secret, environ: Mapping[str, str] | None = None
) -> Issued | None:
    """A replacement for ``rejected``, which an API answered with 401: one forced refresh,
    single-flight under the grant's lock, skipped when another thread or process already
    replaced the token. None for a static secret: there is nothing to refresh."""
    environ = os.environ if environ is None else environ
    desired = config.load(config_path, environ=environ, resolve_values=False)
    if name not in desired.providers:
        return None
    identities = load_identities(environ, required=True)
    grant = lifecycle.refresh(
        desired, name, utcnow(), identities, force=True, rejected=rejected, environ=environ
    )
    if grant.access_token is None:
        raise NeedsRelink(f"{name}: the grant holds no access token; run `reconcile link {name}`")
    grant_file = str(grant_path(desired.store_dir, name))
    return issued(config_path, name, grant.access_token, grant_file, None, None, environ)


def insufficient_scope(
    config_path: str | Path,
    name: str,
    challenge: str,
    environ: Mapping[str, str] | None = None,
) -> NeedsRelink | None:
    """An API answered 403 with ``challenge`` (its ``WWW-Authenticate``): for an
    ``insufficient_scope`` Bearer challenge (RFC 6750 §3.1), mark the grant ``needs-relink``
    with the scopes asked for, and return the error to raise. None for any other 403."""
    params = parse_challenge(challenge)
    if params is None or params.get("error") != "insufficient_scope":
        return None
    environ = os.environ if environ is None else environ
    desired = config.load(Path(config_path), environ=environ, resolve_values=False)
    if name not in desired.providers:
        return None
    identities = load_identities(environ, required=True)
    scopes = params.get("scope", "").split()
    return lifecycle.mark_under_scoped(desired, name, scopes, identities, environ=environ)
