"""Helpers shared by the tests of `reconcile --watch`: editing files as an editor does, reading
grant values back, and OAuth configurations against the test authorization server."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from reconciler.vault.sops.keys import parse_identities
from reconciler.vault.store import VaultError, grant_path, read_grant


def save(path, text: str) -> None:
    """Save as most editors do: write a temporary file beside it, then rename it over."""
    temp = path.with_name(f".{path.name}.swp")
    temp.write_text(text)
    os.replace(temp, path)


def read_value(project, name: str) -> str | None:
    """The decrypted value of a secret's grant file, or None while there is none."""
    path = grant_path(project.store, name)
    if not path.exists():
        return None
    identities = parse_identities(Path(project.key_file).read_text())
    try:
        grant = read_grant(path, identities)
    except VaultError:
        return None  # caught between writes: poll again
    return grant.value.reveal() if grant.value else None


CLIENT_SECRET = "watch-client-secret-0123456789"


def document(project, auth_server, providers: dict, secrets: dict, **defaults) -> str:
    return yaml.safe_dump(
        {
            "version": 1,
            "store": {"dir": "secrets", "recipients": [project.recipient]},
            "defaults": defaults or {"refresh_before": "30s"},
            "providers": providers,
            "secrets": {name: {"value": ref} for name, ref in secrets.items()},
        },
        sort_keys=False,
    )


def provider(auth_server, client_id: str, **fields) -> dict:
    return {
        "client_id": client_id,
        "client_secret": "file:client.secret",
        "authorization_endpoint": auth_server.endpoint("/authorize"),
        "token_endpoint": auth_server.endpoint("/token"),
        "revocation_endpoint": auth_server.endpoint("/revoke"),
        "token_endpoint_auth_method": "client_secret_basic",
        "scopes": ["read"],
        **fields,
    }
