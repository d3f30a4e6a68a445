"""Grant files: ``<store>/<name>.sops.yaml`` ⇄ ``model.Grant``.

A grant file is a genuine SOPS YAML file. Its secret leaves (``model.ENCRYPTED_FIELDS``) are
encrypted; everything else is plaintext and covered by the SOPS MAC. Reading without an
identity gives the plaintext metadata only (``decrypted=False``), which is all ``plan`` and
``status`` need.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model import ENCRYPTED_FIELDS, Actual, Grant, Secret
from .errors import (
    DecryptError,
    MalformedError,
    NoIdentityError,
    TamperedError,
    VaultError,
    restore_hint,
)
from .files import atomic_write, durable_delete
from .fingerprint import Fingerprint, of_stat
from .sops.document import (
    GRANT_ENCRYPTED_REGEX,
    Document,
    encode_document,
    load_document,
    plain_data,
)
from .sops.keys import identity_recipients, no_identity_message, normalize_identities
from .sops.scalars import GoTime, parse_time

if TYPE_CHECKING:
    from .sops.keys import Identities, Identity

SUFFIX = ".sops.yaml"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")

#: Plaintext string leaves, in the order they are written.
_STR_FIELDS = (
    "name",
    "kind",
    "status",
    "status_reason",
    "flow",
    "client_id",
    "token_endpoint",
    "resource",
    "authorization_server",
    "custody",
)
_CHOICES = {
    "kind": ("oauth2", "secret"),
    "status": ("ok", "needs-relink", "uncertain"),
    "custody": ("files", "etcd"),
    "flow": ("authorization_code", "device_code", "client_credentials"),
}


def grant_path(store_dir: Path, name: str) -> Path:
    """``<store_dir>/<name>.sops.yaml``; the name must be a valid grant name."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"{name!r} is not a valid grant name (^[a-z0-9][a-z0-9_-]{{0,62}}$)")
    return Path(store_dir) / f"{name}{SUFFIX}"


def _name_of(path: Path) -> str:
    name = path.name
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name


# ---------------------------------------------------------------------------------------
# Reading.


class _Prepared:
    """Identities parsed once, with the recipients they answer to."""

    __slots__ = ("identities", "recipients")

    def __init__(self, identities: Iterable[Identity | str]) -> None:

        self.identities = normalize_identities(identities)
        self.recipients = identity_recipients(self.identities)


def _prepare(identities: Identities | _Prepared | None) -> _Prepared | None:
    if identities is None:
        return None
    if isinstance(identities, _Prepared):
        return identities
    try:
        prepared = _Prepared(identities)
    except ValueError as error:
        raise NoIdentityError(f"the age identities given are not usable: {error}") from None
    if not prepared.identities:
        raise NoIdentityError(no_identity_message())
    return prepared


def _load(path: Path, prepared: _Prepared | None) -> Document:

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VaultError(
            f"{path}: no such grant file; run `reconcile apply` to create it", path
        ) from None
    except OSError as error:
        raise VaultError(
            f"{path}: cannot be read ({error.strerror or error}); check its permissions", path
        ) from None
    if prepared is None:
        return load_document(data, None, path)
    return load_document(data, prepared.identities, path, preferred_recipients=prepared.recipients)


def read_grant(path: Path, identities: Identities | None) -> Grant:
    """Read one grant file. ``identities=None``: plaintext metadata only, nothing decrypted,
    no key needed. Otherwise open the data key, decrypt every leaf and verify the MAC."""
    path = Path(path)
    return _to_grant(path, _load(path, _prepare(identities)))


def decrypt_file(path: Path, identities: Identities | None) -> dict[str, Any]:
    """Any SOPS YAML file → a plain Python mapping (MAC verified). Values are str, int,
    float, bool, None, datetime, lists and dicts; used for ``sops:PATH#dotted.key``."""

    path = Path(path)
    prepared = _prepare(identities if identities is not None else [])
    data: dict[str, Any] = plain_data(_load(path, prepared).data)
    return data


def _bad(path: Path, what: str) -> MalformedError:
    return MalformedError(
        f"{path}: {what}. Fix the field with `sops edit {path}`, restore the file from version "
        "control, or delete it and let reconcile write it again.",
        path,
    )


def _to_datetime(path: Path, field: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, GoTime) and value.value is not None:
        return value.value
    if isinstance(value, str):
        parsed = parse_time(value)
        if parsed is not None and parsed.value is not None:
            return parsed.value
    raise _bad(path, f"`{field}` is not an RFC 3339 timestamp")


def _to_str_tuple(path: Path, field: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _bad(path, f"`{field}` must be a list of strings")


def _to_grant(path: Path, doc: Document) -> Grant:
    if doc.metadata.mac_only_encrypted:
        raise MalformedError(
            f"{path}: it was encrypted with mac_only_encrypted, so its MAC does not cover the "
            "plaintext fields (scopes, expiry, status) and changes to them would go unnoticed. "
            "Re-encrypt it without that setting, or delete it and let reconcile write it again.",
            path,
        )
    data = doc.data
    fields: dict[str, Any] = {}
    for key in _STR_FIELDS:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _bad(path, f"`{key}` must be a string (quote it)")
        if (key,) in doc.encrypted_paths:
            raise _bad(path, f"`{key}` is encrypted but should be plaintext")
        choices = _CHOICES.get(key)
        if choices is not None and value not in choices:
            raise _bad(path, f"`{key}` must be one of {', '.join(choices)}")
        fields[key] = value
    name = _name_of(path)
    if "name" in fields and fields["name"] != name:
        raise _bad(path, f"its `name` does not match the file name ({name})")
    fields["name"] = name
    if "kind" not in fields:
        raise _bad(path, "`kind` is missing (oauth2 or secret)")
    token_type = data.get("token_type")
    if token_type is not None:
        if not isinstance(token_type, str):
            raise _bad(path, "`token_type` must be a string (quote it)")
        fields["token_type"] = token_type
    fields["scopes"] = _to_str_tuple(path, "scopes", data.get("scopes"))
    fields["granted_scopes"] = _to_str_tuple(path, "granted_scopes", data.get("granted_scopes"))
    fields["expires_at"] = _to_datetime(path, "expires_at", data.get("expires_at"))
    fields["obtained_at"] = _to_datetime(path, "obtained_at", data.get("obtained_at"))
    extra = data.get("extra")
    if extra is not None:
        if not isinstance(extra, dict):
            raise _bad(path, "`extra` must be a mapping of strings")
        extra = {k: v for k, v in extra.items() if v is not None}  # nulls are absent
        if not all(isinstance(v, str) for v in extra.values()):
            raise _bad(path, "`extra` must be a mapping of strings")
        if not doc.decrypted:
            extra = {k: v for k, v in extra.items() if ("extra", k) not in doc.encrypted_paths}
        fields["extra"] = dict(extra)
    sealed = []
    for key in ENCRYPTED_FIELDS:
        value = data.get(key)
        if value is None:
            continue
        if value != "":
            sealed.append(key)
        if (key,) not in doc.encrypted_paths:
            raise TamperedError(
                f"{path}: `{key}` is stored in plaintext, but it must be encrypted: the file "
                "was tampered with (changed outside sops and reconcile), so it is not used. "
                + restore_hint(path),
                path,
            )
        if not doc.decrypted:
            continue
        if not isinstance(value, str):
            raise _bad(path, f"`{key}` must hold a string")
        fields[key] = Secret(value)
    fields["recipients"] = doc.metadata.recipients
    fields["modified"] = _to_datetime(path, "sops.lastmodified", doc.metadata.lastmodified)
    fields["sealed"] = frozenset(sealed)
    fields["decrypted"] = doc.decrypted
    return Grant(**fields)


def fingerprints(store_dir: Path) -> dict[str, Fingerprint]:
    """Each grant file's fingerprint now (taken before a scan reads the files, it tells
    whether a file read then is still the one on disk later)."""
    found: dict[str, Fingerprint] = {}
    try:
        entries = os.scandir(store_dir)
    except FileNotFoundError:
        return found
    with entries:
        for entry in entries:
            if entry.name.endswith(SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    found[entry.name[: -len(SUFFIX)]] = of_stat(entry.stat())
    return found


def scan(
    store_dir: Path,
    identities: Identities | None,
    environ: Mapping[str, str] | None = None,
    before: Mapping[str, Fingerprint] | None = None,
) -> Actual:
    """Read every ``*.sops.yaml`` in ``store_dir``. A file that fails is reported in
    ``Actual.unreadable[name]`` with its message; one bad file never stops the scan.

    Identities that open none of the files (a reviewer's or a CI runner's own key) are not
    this store's: the files are then read as without a key, plaintext metadata only, and
    ``Actual.sealed_reason`` says why. Identities that open some files but not others leave
    the others unreadable.

    With ``environ``, a file that holds no secret and was verified on this machine, unchanged
    since, is not read again (``verified``); ``before``: the files' ``fingerprints``, if the
    caller took them already."""
    store_dir = Path(store_dir)
    prepared = _prepare(identities)
    memo = None
    if prepared is not None and environ is not None:
        from .verified import Verified

        prints = fingerprints(store_dir) if before is None else before
        memo = Verified.load(store_dir, prepared.recipients, environ, prints)
    grants: dict[str, Grant] = {}
    unreadable: dict[str, str] = {}
    foreign: dict[str, DecryptError] = {}
    try:
        entries = sorted(
            e.name for e in os.scandir(store_dir) if e.name.endswith(SUFFIX) and e.is_file()
        )
    except FileNotFoundError:
        entries = []
    for filename in entries:
        name = filename[: -len(SUFFIX)]
        path = store_dir / filename
        if not NAME.match(name):
            unreadable[name] = (
                f"{path}: the file name is not a valid grant name "
                "(^[a-z0-9][a-z0-9_-]{0,62}$); rename or remove it"
            )
            continue
        if memo is not None:
            known = memo.get(name)
            if known is not None:
                grants[name] = known
                continue
        try:
            grants[name] = _to_grant(path, _load(path, prepared))
        except DecryptError as error:
            foreign[name] = error
        except VaultError as error:
            unreadable[name] = str(error)
        else:
            if memo is not None:
                memo.keep(name, grants[name])
    if memo is not None:
        memo.only(grants)
        memo.save()
    if foreign and not grants:
        for name in foreign:
            try:
                grants[name] = read_grant(store_dir / f"{name}{SUFFIX}", None)
            except VaultError as failure:
                unreadable[name] = str(failure)
        return Actual(grants, unreadable, decrypted=False, sealed_reason=_foreign_reason(grants))
    unreadable.update((name, str(error)) for name, error in foreign.items())
    return Actual(grants=grants, unreadable=unreadable, decrypted=prepared is not None)


def _foreign_reason(grants: dict[str, Grant]) -> str:
    recipients = sorted({r for grant in grants.values() for r in grant.recipients})
    shown = ", ".join(recipients[:2]) or "no age key"
    if len(recipients) > 2:
        shown += f" and {len(recipients) - 2} more"
    return (
        "the age identity found here is not a recipient of the grant files (they are encrypted "
        f"to {shown}), so only their plaintext metadata was read"
    )


# ---------------------------------------------------------------------------------------
# Writing.


def grant_document(grant: Grant) -> dict[str, Any]:
    """The mapping written for ``grant``: only fields that are set, in a fixed order."""
    doc: dict[str, Any] = {}
    for key in _STR_FIELDS:
        value = getattr(grant, key)
        if value is not None:
            if not isinstance(value, str):
                raise TypeError(f"Grant.{key} must be a str")
            doc[key] = value
    if grant.scopes:
        doc["scopes"] = [_check_str("scopes", s) for s in grant.scopes]
    if grant.granted_scopes:
        doc["granted_scopes"] = [_check_str("granted_scopes", s) for s in grant.granted_scopes]
    if grant.token_type is not None:
        doc["token_type"] = _check_str("token_type", grant.token_type)
    for key in ("expires_at", "obtained_at"):
        value = getattr(grant, key)
        if value is not None:
            if not isinstance(value, datetime):
                raise TypeError(f"Grant.{key} must be a datetime")
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            doc[key] = value.astimezone(UTC).replace(microsecond=0)
    if grant.extra:
        doc["extra"] = {
            _check_str("extra", k): _check_str("extra", grant.extra[k]) for k in sorted(grant.extra)
        }
    for key in ENCRYPTED_FIELDS:
        value = getattr(grant, key)
        if value is not None:
            if not isinstance(value, Secret):
                raise TypeError(f"Grant.{key} must be a Secret")
            doc[key] = value
    return doc


def _check_str(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"Grant.{field} must hold strings")
    return value


def write_grant(path: Path, grant: Grant, recipients: Sequence[str]) -> datetime:
    """Encrypt ``grant`` for ``recipients`` and replace ``path`` atomically; return the
    version written (``Grant.modified``). The whole file is encrypted in memory first, so no
    plaintext secret ever reaches the disk."""

    path = Path(path)
    if _name_of(path) != grant.name:
        raise ValueError(f"{path}: a grant named {grant.name!r} belongs in {grant.name}{SUFFIX}")
    if isinstance(recipients, str):
        raise TypeError("recipients must be a sequence of strings, not a string")
    if not recipients:
        raise VaultError(
            f"{path}: no age recipients to encrypt to; list them under `store.recipients` in "
            "providers.yaml or in a .sops.yaml creation rule",
            path,
        )
    replacing = _replaced(path)
    written = datetime.now(UTC).replace(microsecond=0)
    try:
        data = encode_document(
            grant_document(grant),
            list(recipients),
            encrypted_regex=GRANT_ENCRYPTED_REGEX,
            replacing=replacing,
            now=written,
        )
    except ValueError as error:
        raise VaultError(f"{path}: cannot be written: {error}", path) from None
    try:
        try:
            atomic_write(path, data)
        except FileNotFoundError:  # the store folder does not exist yet
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)
    except OSError as error:
        raise _write_error(path, error) from None
    return written


def _write_error(path: Path, error: OSError) -> VaultError:
    """Why ``path`` could not be written, with what to do; the old file is unchanged."""
    reason = error.strerror or type(error).__name__
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = (
            f"the store folder {path.parent} is read-only for this user; make it writable "
            "(or run where the repository checkout can be written) and run the command again"
        )
    else:
        hint = "free space or fix the folder, then run the command again"
    return VaultError(f"{path}: cannot be written ({reason}): {hint}. The file is unchanged.", path)


def _replaced(path: Path) -> bytes | None:
    """The bytes of the grant file a write replaces (None if there is none). A file split
    among several key groups (Shamir) is not replaced by one that any single recipient
    opens: that would weaken it without anyone having asked."""

    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        split = load_document(raw, None, path).metadata.key_groups
    except VaultError:
        return raw  # a broken file may be replaced
    if split:
        raise VaultError(
            f"{path}: its data key is split among several key groups (Shamir secret sharing), "
            "and reconcile writes grant files to one group of recipients only, so it leaves "
            "this file as it is. Re-encrypt it to one key group with sops (a single-group "
            ".sops.yaml rule and `sops updatekeys`), or delete it and link the grant again.",
            path,
        )
    return raw


def delete_grant(path: Path) -> None:
    """Remove a grant file durably (the folder is fsynced). A missing file is not an error."""

    durable_delete(Path(path))


__all__ = [
    "DecryptError",
    "MalformedError",
    "NoIdentityError",
    "TamperedError",
    "VaultError",
    "decrypt_file",
    "delete_grant",
    "grant_document",
    "grant_path",
    "read_grant",
    "scan",
    "write_grant",
]
