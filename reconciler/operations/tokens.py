"""The value a script gets: ``read_token`` (`reconcile token`, `exec`) and ``issue_token``
(the runtime, with what bounds keeping it in memory).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .. import config
from ..custody import open_custody, usable_as_is
from ..errors import UserError
from ..model import Secret
from ..vault import cache
from ..vault.fingerprint import of_file
from ..vault.sops.keys import load_identities
from ..vault.store import grant_path, read_grant
from .basics import utcnow
from .issued import Issued, issued

TYPE_CHECKING = False  # not typing's: see reconciler.cli
if TYPE_CHECKING:
    from ..vault.sops.keys import Identities


def read_token(
    config_path: Path,
    name: str,
    environ: Mapping[str, str] | None = None,
    *,
    allow_rollback: bool = False,
) -> Secret:
    """The value to hand a script: a static secret's value or a valid access token.
    ``allow_rollback`` (`token --force`): refresh even from a grant file put back.

    This is the hot path of ``reconcile token`` and ``runtime.token()``: a cached access token
    is checked without parsing any YAML; a static secret needs the config's store folder (no
    schema validation) and the one grant file. Only a token that is due loads everything and
    refreshes it, single-flight under the grant's lock.
    """
    environ = os.environ if environ is None else environ
    identities = load_identities(environ, required=True)
    cached = cache.read(config_path, name, identities, environ)
    if cached is not None and cached.is_fresh(utcnow()):
        return cached.access_token

    store_dir, declared = config.locate(config_path)
    if name not in declared:
        raise UserError(
            f"{name!r} is not declared in {config_path}; declared: {', '.join(declared) or 'none'}"
        )
    path = grant_path(store_dir, name)
    if not path.exists():
        if not config.declares_coordination(config_path):
            raise UserError(f"{name}: no grant file at {path}; run `reconcile apply` first")
        grant = None  # the engine may hold it (linked elsewhere, its file not pulled yet)
    else:
        grant = read_grant(path, identities)
    if grant is not None and grant.kind == "secret":
        if grant.value is None:
            raise UserError(f"{grant.name}: {path} holds no value; run `reconcile apply`")
        # Remembered like an access token, so that the next read skips YAML and AES; any
        # change to the config or the grant file invalidates it.
        entry = cache.CachedToken(grant.value, None, None, utcnow(), None)
        cache.write(config_path, name, path, entry, identities, environ)
        return grant.value
    served = _served_as_is(config_path, name, identities, environ)
    if served is not None:
        return served
    # The OAuth stack (the apply lifecycle, ~100 ms of imports) only when a refresh may be due.
    from .refreshes import access_token

    return access_token(config_path, name, identities, environ, allow_rollback)


def _served_as_is(
    config_path: Path, name: str, identities: Identities, environ: Mapping[str, str]
) -> Secret | None:
    """The grant's access token when no refresh is due (``custody.usable_as_is``); None when
    a refresh must decide, or when ``name`` is no OAuth grant (the refresh path says why)."""
    desired = config.load(config_path, environ=environ, resolve_values=False)
    if name not in desired.providers:
        return None
    grant = usable_as_is(open_custody(desired, identities, environ), name, desired, utcnow())
    return grant.access_token if grant is not None else None


def issue_token(config_path: Path, name: str, environ: Mapping[str, str] | None = None) -> Issued:
    """``read_token`` for a long-running process (``runtime.token()``): the value, and how long
    and while which files stay unchanged it may be kept in memory."""
    environ = os.environ if environ is None else environ
    config_before = of_file(config_path)
    store_dir, declared = config.locate(config_path)
    grant_file = str(grant_path(store_dir, name)) if name in declared else None
    grant_before = of_file(grant_file) if grant_file else None
    secret = read_token(config_path, name, environ)
    if grant_file is None:
        return Issued(secret)
    return issued(config_path, name, secret, grant_file, config_before, grant_before, environ)
