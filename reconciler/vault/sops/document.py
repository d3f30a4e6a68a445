"""The SOPS document format for YAML files: the tree of values and its MAC, load and encode.

This is our own implementation of the format the ``sops`` binary (3.x) reads and writes, so
that a file written here decrypts with ``sops -d`` and a file ``sops`` wrote or edited is
read back here. Its parts, each checked against the sops sources:

* ``cipher``: the ``ENC[AES256_GCM,...]`` envelope of every encrypted leaf. An empty string
  is never encrypted (it stays ``""``). A null is never encrypted nor hashed.
* ``datakey``: the data key, age-encrypted once per recipient under ``sops.age[*].enc``.
* ``metadata``: the ``sops`` block and the rules on which leaves are encrypted.
* ``scalars``: plain scalars typed like Go's yaml.v3 does, and their byte forms.
* ``syntax``: YAML text to nodes and back.
* Here, the MAC: SHA-512 over the byte form of every leaf, in document order (only the
  encrypted ones, after a fixed 32-byte prefix, when ``mac_only_encrypted`` is set), written
  as uppercase hex and stored encrypted (type ``str``) with the RFC 3339 ``lastmodified``
  string as additional data. Comments and the ``sops`` metadata key are not hashed.
* A comment inside an encrypted list is stored by sops as an encrypted item of type
  ``comment``; like ``sops -d``, we do not count it as an element of the list.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ...model import ENCRYPTED_FIELDS, Secret
from ..errors import malformed_error, tampered_error
from .cipher import (
    ENVELOPE_PREFIX,
    Comment,
    Decryptor,
    Encryptor,
    additional_data,
    envelope_type,
    is_comment_envelope,
)
from .datakey import (
    kept_data_key,
    new_data_key,
    open_data_key,
    remember_data_key,
    wrap_data_key,
)
from .keys import parse_recipient
from .metadata import (
    DEFAULT_UNENCRYPTED_SUFFIX,
    SOPS_VERSION,
    AgeKey,
    EncryptionRules,
    Metadata,
    emit_metadata,
    parse_metadata,
)
from .scalars import RFC3339, GoTime, UnsupportedValue, format_time, to_bytes
from .syntax import compose_documents, emit_mapping, scalar_value

if TYPE_CHECKING:
    from .keys import Identities

#: Leaves encrypted in grant files; everything else stays plaintext but MAC-covered.
GRANT_ENCRYPTED_REGEX = f"^({'|'.join(ENCRYPTED_FIELDS)})$"
#: sops' ``MACOnlyEncryptedInitialization``: sha256(b"sops").
MAC_ONLY_ENCRYPTED_INIT = hashlib.sha256(b"sops").digest()
#: Refuse absurd documents (alias bombs, deep nesting) instead of exhausting memory.
MAX_DEPTH = 64
MAX_LEAVES = 100_000


def _new_mac(rules: EncryptionRules) -> Any:
    mac = hashlib.sha512()
    if rules.mac_only_encrypted:
        mac.update(MAC_ONLY_ENCRYPTED_INIT)
    return mac


def lastmodified_ad(value: str, source: object = None) -> str:
    """The MAC's additional data: lastmodified parsed as RFC 3339 and formatted again."""
    m = RFC3339.match(value)
    if not m:
        raise malformed_error(source, "sops.lastmodified is not an RFC 3339 timestamp")
    date_time = value[:19]
    zone = m.group(8)
    if zone in ("Z", "+00:00", "-00:00"):
        zone = "Z"
    return date_time + zone


# ---------------------------------------------------------------------------------------
# Loading.


@dataclass
class Document:
    """A parsed SOPS document. ``data`` holds the first YAML document without the ``sops``
    key: plaintext leaves as Go-typed values (str, int, float, bool, None, GoTime),
    encrypted leaves decrypted when ``decrypted`` is True, else left as their ``ENC[...]``
    text. ``encrypted_paths`` lists the key paths of leaves that are encrypted."""

    data: dict[str, Any]
    metadata: Metadata
    decrypted: bool
    encrypted_paths: frozenset[tuple[str, ...]] = field(default_factory=frozenset)
    extra_documents: list[dict[str, Any]] = field(default_factory=list)


class _Walker:
    """One pass over the node graph: builds the value tree, decrypts, feeds the MAC."""

    __slots__ = (
        "_hash_plain",
        "decryptor",
        "enc_paths",
        "leaves",
        "mac",
        "rules",
        "source",
    )

    def __init__(self, rules: EncryptionRules, decryptor: Decryptor | None, source: object) -> None:
        self.rules = rules
        self.decryptor = decryptor
        self.source = source
        self.enc_paths: set[tuple[str, ...]] = set()
        self.leaves = 0
        self.mac = _new_mac(rules) if decryptor is not None else None
        self._hash_plain = not rules.mac_only_encrypted

    def mapping(self, node: Any, path: tuple[str, ...], depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise malformed_error(self.source, "it is nested too deeply")
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            if knode.id != "scalar":
                raise malformed_error(self.source, "it has a mapping key that is not a string")
            key = scalar_value(knode)
            if key.__class__ is not str:
                where = ":".join(path) or "the top level"
                raise malformed_error(self.source, f"it has a non-string mapping key under {where}")
            if key in out:
                raise malformed_error(
                    self.source, f"the key {':'.join((*path, key))} appears twice"
                )
            if not path and key == "sops":
                out[key] = None  # placeholder: removed by the caller, never hashed
                continue
            if vnode.id == "scalar":
                out[key] = self.leaf(vnode, (*path, key))
            else:
                out[key] = self.value(vnode, (*path, key), depth + 1)
        return out

    def value(self, node: Any, path: tuple[str, ...], depth: int) -> Any:
        kind = node.id
        if kind == "scalar":
            return self.leaf(node, path)
        if kind == "mapping":
            return self.mapping(node, path, depth)
        if depth > MAX_DEPTH:
            raise malformed_error(self.source, "it is nested too deeply")
        items = (self.value(item, path, depth + 1) for item in node.value)
        # sops keeps a comment inside an encrypted list as an encrypted list item; `sops -d`
        # shows it as a comment again, so it is not an element.
        return [v for v in items if not isinstance(v, Comment) and not is_comment_envelope(v)]

    def leaf(self, node: Any, path: tuple[str, ...]) -> Any:
        self.leaves += 1
        if self.leaves > MAX_LEAVES:
            raise malformed_error(self.source, "it has too many values")
        try:
            value = scalar_value(node)
        except UnsupportedValue as error:
            raise malformed_error(
                self.source, f"the value at {':'.join(path)} is {error}"
            ) from None
        if value is None:
            return None
        if self.rules.uses_comments:
            # Comment-based rules need the comments, which PyYAML drops: treat exactly the
            # values that carry the sops envelope as encrypted (the MAC still covers all).
            encrypted = isinstance(value, str) and value.startswith(ENVELOPE_PREFIX)
        else:
            encrypted = self.rules.encrypted(path)
        if encrypted:
            self.enc_paths.add(path)
            if value.__class__ is not str:
                raise tampered_error(
                    self.source, f"the value at {':'.join(path)} should be encrypted but is not"
                )
            if self.decryptor is not None and value:
                value = self.decryptor.decrypt(value, path)
        elif not self._hash_plain:
            return value
        mac = self.mac
        if mac is not None:
            if value.__class__ is str:
                mac.update(value.encode())
            elif not isinstance(value, Comment):
                mac.update(to_bytes(value))
        return value


def load_document(
    data: bytes | str,
    identities: Identities | None,
    source: object = None,
    *,
    preferred_recipients: Iterable[str] = (),
) -> Document:
    """Parse a SOPS YAML file. With ``identities`` (pyrage identities), open the data key,
    decrypt every encrypted leaf and verify the MAC; with None, decrypt nothing.

    Raises MalformedError, DecryptError, NoIdentityError (identities == []) or
    TamperedError; never includes a plaintext value in a message.
    """
    docs = compose_documents(data, source)
    if not docs or docs[0].id != "mapping":
        raise malformed_error(source, "is not a SOPS file (no top-level mapping)")
    meta_node = None
    for knode, vnode in docs[0].value:
        if knode.id == "scalar" and knode.value == "sops" and scalar_value(knode) == "sops":
            meta_node = vnode
    if meta_node is None:
        raise malformed_error(source, "is not a SOPS file (no `sops` metadata)")
    meta = parse_metadata(meta_node, source)
    rules = EncryptionRules.of(meta)
    decryptor = None
    data_key = b""
    if identities is not None:
        data_key = open_data_key(meta, identities, source, preferred_recipients)
        decryptor = Decryptor(data_key, source)
    walker = _Walker(rules, decryptor, source)
    trees: list[Any] = []
    for doc in docs:
        if doc.id == "scalar" and scalar_value(doc) is None:
            trees.append({})
            continue
        if doc.id != "mapping":
            raise malformed_error(source, "a YAML document in it is not a mapping")
        tree = walker.mapping(doc, (), 0)
        tree.pop("sops", None)
        trees.append(tree)
    if decryptor is not None:
        assert walker.mac is not None
        computed = walker.mac.hexdigest().upper()
        stored = decryptor.decrypt_mac(meta.mac, lastmodified_ad(meta.lastmodified, source))
        if type(stored) is not str or not hmac.compare_digest(stored, computed):
            raise tampered_error(source, "its MAC does not match its content")
        if not meta.key_groups:
            raw = data.encode("utf-8") if isinstance(data, str) else data
            remember_data_key(raw, data_key, meta.age)
    return Document(
        data=trees[0],
        metadata=meta,
        decrypted=decryptor is not None,
        encrypted_paths=frozenset(walker.enc_paths),
        extra_documents=trees[1:],
    )


def plain_data(value: Any) -> Any:
    """Turn a Document's data into plain Python: GoTime → datetime, Comment → str."""
    if isinstance(value, dict):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v) for v in value]
    if isinstance(value, GoTime):
        return value.value if value.value is not None else value.text
    if isinstance(value, Comment):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------
# Encoding.


class _LeafSealer:
    """One pass over the data being encoded: feeds each leaf to the MAC and seals the ones
    the rules encrypt."""

    __slots__ = ("cipher", "kept", "mac", "rules")

    def __init__(
        self,
        data_key: bytes,
        rules: EncryptionRules,
        kept: Mapping[tuple[str, ...], str] | None = None,
    ) -> None:
        self.cipher = Encryptor(data_key)
        self.rules = rules
        self.mac = _new_mac(rules)
        #: The envelopes of the file being replaced (same data key), by key path.
        self.kept = kept or {}

    def leaf(self, value: Any, path: tuple[str, ...]) -> Any:
        if value is None:
            return None
        encrypted = self.rules.encrypted(path)
        if isinstance(value, Secret):
            if not encrypted:
                raise ValueError(f"a secret at {':'.join(path)} would be written unencrypted")
            value = value.reveal()
        try:
            raw = to_bytes(value)
        except UnicodeEncodeError:
            raise ValueError(f"the value at {':'.join(path)} is not valid UTF-8 text") from None
        if encrypted or not self.rules.mac_only_encrypted:
            self.mac.update(raw)
        if not encrypted:
            return value
        if isinstance(value, str | bytes) and not value:
            return ""
        aad, kind = additional_data(path), envelope_type(value)
        previous = self.kept.get(path)
        if previous is not None and self.cipher.holds(previous, raw, aad, kind):
            return previous  # an unchanged value keeps its ciphertext, as with `sops set`
        return self.cipher.seal(raw, aad, kind)


def _envelopes(tree: Mapping[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
    """The ``ENC[...]`` text of each encrypted value held directly by a mapping of ``tree``
    (list items share their list's path, so they are left out)."""
    out: dict[tuple[str, ...], str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_envelopes(value, (*path, key)))
        elif isinstance(value, str) and value.startswith(ENVELOPE_PREFIX):
            out[(*path, key)] = value
    return out


def encode_document(
    data: Mapping[str, Any],
    recipients: Sequence[str],
    *,
    encrypted_regex: str | None = GRANT_ENCRYPTED_REGEX,
    now: datetime | None = None,
    replacing: bytes | None = None,
) -> bytes:
    """Encrypt ``data`` (str keys; leaves str/int/float/bool/None/datetime/Secret; lists and
    mappings) into a SOPS YAML document for the age ``recipients``. Everything happens in
    memory; the caller writes the bytes. Without ``encrypted_regex`` every leaf is encrypted
    (sops' default), except keys ending in ``_unencrypted``. ``replacing`` is the file this
    one replaces: if it was opened here and has the same recipients, its data key is kept,
    and so is the ciphertext of every encrypted value that did not change."""

    if not recipients:
        raise ValueError("at least one age recipient is needed to write a SOPS file")
    if "sops" in data:
        raise ValueError("`sops` is reserved for the SOPS metadata")
    parsed = [parse_recipient(r) for r in recipients]
    meta = Metadata(
        age=(),
        lastmodified="",
        mac="",
        version=SOPS_VERSION,
        encrypted_regex=encrypted_regex or "",
        unencrypted_suffix="" if encrypted_regex else DEFAULT_UNENCRYPTED_SUFFIX,
    )
    kept = kept_data_key(replacing, recipients)
    if kept is not None and replacing is not None:
        data_key = kept[0]
        sealer = _LeafSealer(
            data_key, EncryptionRules.of(meta), _envelopes(load_document(replacing, None).data)
        )
    else:
        data_key = new_data_key()
        sealer = _LeafSealer(data_key, EncryptionRules.of(meta))
    lines: list[str] = []
    emit_mapping(lines, data, "", sealer.leaf, ())
    when = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    lastmodified = format_time(when)
    mac = sealer.cipher.seal(sealer.mac.hexdigest().upper().encode(), lastmodified.encode(), "str")
    armored = kept[1] if kept is not None else wrap_data_key(data_key, parsed)
    age = zip(recipients, armored, strict=True)
    meta = replace(
        meta,
        age=tuple(AgeKey(text.strip(), armored) for text, armored in age),
        lastmodified=lastmodified,
        mac=mac,
    )
    emit_metadata(lines, meta)
    return ("\n".join(lines) + "\n").encode("utf-8")


__all__ = [
    "GRANT_ENCRYPTED_REGEX",
    "Document",
    "encode_document",
    "lastmodified_ad",
    "load_document",
    "plain_data",
]
