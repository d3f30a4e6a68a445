"""A grant as the coordination engine keeps it (a state record, age-encrypted to the grant
file's recipients) and as its grant file shows it once attached (``file_view``: no live state,
the engine named in ``extra.coordination``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyrage

from ..model import ENCRYPTED_FIELDS, Coordination, Grant, Secret
from ..vault.errors import VaultError

if TYPE_CHECKING:
    from .keyring import Keyring

#: The fields of the live state: in the engine only, never in the grant file.
LIVE = (
    "access_token",
    "refresh_token",
    "id_token",
    "secondary_token",
    "token_type",
    "expires_at",
    "obtained_at",
)
_TIMES = ("expires_at", "obtained_at")
_TUPLES = ("scopes", "granted_scopes")
#: Grant fields a state record carries (what the file adds: recipients, version, sealing).
_RECORDED = tuple(
    f.name
    for f in fields(Grant)
    if f.name not in ("recipients", "modified", "sealed", "decrypted", "revision", "generation")
)
#: What an attached grant's file shows in plaintext: a change to any of them rewrites it.
_FILE_PLAINTEXT = tuple(n for n in _RECORDED if n not in LIVE and n not in ENCRYPTED_FIELDS)
STATE_FORMAT = 1


# ---------------------------------------------------------------------------------------
# Values: a grant as a state record, encrypted.


def moment(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def stamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def to_record(grant: Grant) -> dict[str, Any]:
    """The grant's recorded fields; those without a value are left out (``from_record``
    gives them their default)."""
    record: dict[str, Any] = {}
    for name in _RECORDED:
        value = getattr(grant, name)
        if value is None:
            continue
        if name in ENCRYPTED_FIELDS:
            value = value.reveal() if isinstance(value, Secret) else None
        elif name in _TIMES:
            value = stamp(value)
        elif name in _TUPLES:
            value = list(value)
        elif name == "extra":
            value = dict(value)
        record[name] = value
    return record


def from_record(record: Mapping[str, Any]) -> Grant:
    values: dict[str, Any] = {}
    for name in _RECORDED:
        if name not in record:
            continue
        value = record[name]
        if name in ENCRYPTED_FIELDS:
            value = Secret(value) if value is not None else None
        elif name in _TIMES:
            value = moment(value)
        elif name in _TUPLES:
            value = tuple(value or ())
        elif name == "extra":
            value = dict(value or {})
        values[name] = value
    return Grant(**values)


def encrypt(data: Mapping[str, Any], recipients: tuple[str, ...], keyring: Keyring) -> bytes:
    """``data`` as a value sealed to ``recipients`` (``keyring``)."""
    if not recipients:
        raise VaultError("no age recipients to encrypt the engine's state to")
    return keyring.seal(json.dumps(data).encode("utf-8"), recipients)


def decrypt(blob: bytes, keyring: Keyring) -> dict[str, Any]:
    """A value ``encrypt`` wrote (or one written before, sealed to each recipient or as an
    age file)."""
    try:
        data = json.loads(keyring.open(blob))
    except (pyrage.DecryptError, ValueError) as error:
        raise VaultError(
            f"a value in the coordination engine cannot be decrypted: {error}"
        ) from None
    if not isinstance(data, dict):
        raise VaultError("a value in the coordination engine is not a state record")
    return data


def file_view(grant: Grant, coordination: Coordination) -> Grant:
    """What an attached grant's file holds: everything but the live state, and the engine
    that holds that."""
    status = "ok" if grant.status == "uncertain" else grant.status
    cleared: dict[str, Any] = dict.fromkeys(LIVE)
    extra = {**grant.extra, "coordination": _describe(coordination)}
    return replace(
        grant,
        **cleared,
        status=status,
        extra=extra,
        custody="etcd",
        revision=None,
        generation=None,
    )


def same_identity(file: Grant, view: Grant) -> bool:
    return all(getattr(file, k) == getattr(view, k) for k in _FILE_PLAINTEXT) and not (
        set(file.sealed) & set(LIVE)
    )


def recorded_coordination(grant: Grant) -> Coordination | None:
    """The engine an attached grant's file names (``extra.coordination``): where ``detach``
    finds its live state once ``coordination:`` is gone from the config."""
    text = grant.extra.get("coordination")
    if not text:
        return None
    try:
        data = json.loads(text)
        return Coordination(
            endpoints=tuple(data["endpoints"]),
            namespace=data["namespace"],
            username=data.get("username"),
            password_ref=data.get("password"),
            ca_file=data.get("ca_file"),
            cert_file=data.get("cert_file"),
            key_file=data.get("key_file"),
            lease=timedelta(seconds=float(data.get("lease", 15))),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _describe(coordination: Coordination) -> str:
    data: dict[str, Any] = {
        "endpoints": list(coordination.endpoints),
        "namespace": coordination.namespace,
        "lease": coordination.lease.total_seconds(),
    }
    for key, value in (
        ("username", coordination.username),
        ("password", coordination.password_ref),
        ("ca_file", coordination.ca_file),
        ("cert_file", coordination.cert_file),
        ("key_file", coordination.key_file),
    ):
        if value is not None:
            data[key] = value
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
