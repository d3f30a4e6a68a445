"""The SOPS document format, checked against the format facts independently of our reader:
value envelope, IV/tag sizes, additional data, MAC construction, scalar typing."""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
from datetime import UTC, datetime

import pyrage
import pytest
import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.model import Secret
from reconciler.vault.errors import MalformedError, TamperedError
from reconciler.vault.sops import document as sops
from reconciler.vault.sops import scalars, syntax
from reconciler.vault.sops.document import encode_document, load_document
from reconciler.vault.sops.scalars import GoTime, resolve_plain, resolve_tagged, to_bytes

ENC = re.compile(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]$")


@pytest.fixture
def identity():
    return pyrage.x25519.Identity.generate()


@pytest.fixture
def recipient(identity):
    return str(identity.to_public())


def data_key_of(text: bytes, identity) -> bytes:
    doc = yaml.safe_load(text)
    return pyrage.decrypt(doc["sops"]["age"][0]["enc"].encode(), [identity])


def seal(key: bytes, plaintext: bytes, aad: bytes, kind: str = "str") -> str:
    iv = os.urandom(32)
    out = AESGCM(key).encrypt(iv, plaintext, aad)
    b = base64.b64encode
    return (
        f"ENC[AES256_GCM,data:{b(out[:-16]).decode()},iv:{b(iv).decode()},"
        f"tag:{b(out[-16:]).decode()},type:{kind}]"
    )


def build_file_with_key(
    key, recipient, body: str, leaves, *, mac_only=False, extra_meta="", lastmodified=None
) -> bytes:
    body = body.replace("@@KEY@@", "")
    h = hashlib.sha512()
    if mac_only:
        h.update(hashlib.sha256(b"sops").digest())
    for leaf in leaves:
        h.update(leaf)
    lastmodified = lastmodified or "2026-01-02T03:04:05Z"
    ad = lastmodified
    if ad.endswith("+00:00"):
        ad = ad[:-6] + "Z"
    mac = seal(key, h.hexdigest().upper().encode(), ad.encode())
    enc = pyrage.encrypt(key, [pyrage.x25519.Recipient.from_str(recipient)], armored=True)
    enc_lines = "\n".join("            " + line for line in enc.decode().splitlines())
    meta = (
        "sops:\n"
        "    age:\n"
        f"        - recipient: {recipient}\n"
        "          enc: |\n"
        f"{enc_lines}\n"
        f'    lastmodified: "{lastmodified}"\n'
        f"    mac: {mac}\n"
        + ("    mac_only_encrypted: true\n" if mac_only else "")
        + extra_meta
        + "    version: 3.11.0\n"
    )
    return (body + meta).encode()


# ---------------------------------------------------------------------------------------
# What we write, checked with AESGCM/pyrage/hashlib directly.


def test_written_values_follow_the_sops_envelope(identity, recipient):
    text = encode_document(
        {"name": "x", "access_token": Secret("tok"), "nested": {"value": "v"}}, [recipient]
    )
    key = data_key_of(text, identity)
    assert len(key) == 32
    doc = yaml.safe_load(text)
    for value, aad, expected in (
        (doc["access_token"], b"access_token:", b"tok"),
        (doc["nested"]["value"], b"nested:value:", b"v"),
    ):
        m = ENC.match(value)
        assert m, value
        data, iv, tag = (base64.b64decode(m.group(i)) for i in (1, 2, 3))
        assert len(iv) == 32 and len(tag) == 16 and m.group(4) == "str"
        assert AESGCM(key).decrypt(iv, data + tag, aad) == expected
        with pytest.raises(InvalidTag):  # the path is authenticated
            AESGCM(key).decrypt(iv, data + tag, b"other:")
    assert doc["name"] == "x"


def test_written_mac_is_sha512_over_all_leaves_with_lastmodified_as_ad(identity, recipient):
    now = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    data = {
        "name": "n",
        "scopes": ["a", "b"],
        "count": 3,
        "ratio": 1.0,
        "flag": True,
        "none": None,
        "when": datetime(2026, 1, 1, tzinfo=UTC),
        "value": Secret("s3cret"),
        "empty": {"value": ""},
    }
    text = encode_document(data, [recipient], now=now)
    doc = yaml.safe_load(text)
    assert doc["sops"]["lastmodified"] == "2026-03-04T05:06:07Z"
    assert doc["sops"]["version"] == "3.11.0"
    assert doc["sops"]["encrypted_regex"] == sops.GRANT_ENCRYPTED_REGEX
    assert "mac_only_encrypted" not in doc["sops"]
    assert doc["empty"]["value"] == ""  # empty strings are never encrypted
    expected = hashlib.sha512(
        b"n" + b"a" + b"b" + b"3" + b"1" + b"True" + b"2026-01-01T00:00:00Z" + b"s3cret" + b""
    )
    key = data_key_of(text, identity)
    m = ENC.match(doc["sops"]["mac"])
    data_, iv, tag = (base64.b64decode(m.group(i)) for i in (1, 2, 3))
    mac = AESGCM(key).decrypt(iv, data_ + tag, b"2026-03-04T05:06:07Z")
    assert mac.decode() == expected.hexdigest().upper()


def test_each_recipient_gets_its_own_armored_data_key(recipient):
    others = [pyrage.x25519.Identity.generate() for _ in range(2)]
    recipients = [recipient, *(str(i.to_public()) for i in others)]
    text = encode_document({"value": Secret("v")}, recipients)
    doc = yaml.safe_load(text)
    assert [k["recipient"] for k in doc["sops"]["age"]] == recipients
    for entry in doc["sops"]["age"]:
        assert entry["enc"].startswith("-----BEGIN AGE ENCRYPTED FILE-----\n")
        assert entry["enc"].endswith("-----END AGE ENCRYPTED FILE-----\n")
    keys = {
        pyrage.decrypt(doc["sops"]["age"][i + 1]["enc"].encode(), [o]) for i, o in enumerate(others)
    }
    assert len(keys) == 1


def test_a_secret_on_a_plaintext_path_is_refused(recipient):
    with pytest.raises(ValueError, match="unencrypted"):
        encode_document({"name": Secret("oops")}, [recipient])


# ---------------------------------------------------------------------------------------
# What we read: files assembled by hand.


def test_reads_a_hand_built_file_and_verifies_the_mac(identity, recipient):
    key = os.urandom(32)
    body = (
        "name: x\n"
        "when: 2026-01-01T00:00:00Z\n"
        "n: 1.0\n"
        "h: 0x10\n"
        "b: yes\n"
        "z: ~\n"
        "# a comment\n"
        f"value: {seal(key, b'tok', b'value:')}\n"
        'empty: ""\n'
    )
    leaves = [b"x", b"2026-01-01T00:00:00Z", b"1", b"16", b"yes", b"tok", b""]
    meta = f"    encrypted_regex: {sops.GRANT_ENCRYPTED_REGEX}\n"
    text = build_file_with_key(key, recipient, body, leaves, extra_meta=meta)
    doc = load_document(text, [identity])
    assert doc.decrypted
    assert doc.data["value"] == "tok"
    assert doc.data["h"] == 16 and doc.data["n"] == 1.0 and doc.data["b"] == "yes"
    assert doc.data["z"] is None and doc.data["empty"] == ""
    assert isinstance(doc.data["when"], GoTime)
    # the same file with one leaf byte different is refused
    with pytest.raises(TamperedError):
        load_document(text.replace(b"h: 0x10", b"h: 0x11"), [identity])
    # an equivalent spelling of the same Go value keeps the MAC valid (as for sops)
    assert load_document(text.replace(b"h: 0x10", b"h: 16"), [identity]).data["h"] == 16
    assert load_document(text.replace(b"n: 1.0", b"n: 1"), [identity]).data["n"] == 1


def test_mac_only_encrypted_files(identity, recipient):
    key = os.urandom(32)
    body = f"name: x\nvalue: {seal(key, b'tok', b'value:')}\n"
    meta = f"    encrypted_regex: {sops.GRANT_ENCRYPTED_REGEX}\n"
    text = build_file_with_key(key, recipient, body, [b"tok"], mac_only=True, extra_meta=meta)
    doc = load_document(text, [identity])
    assert doc.data == {"name": "x", "value": "tok"}
    # without the fixed prefix the MAC differs
    bad = build_file_with_key(key, recipient, body, [b"tok"], mac_only=False, extra_meta=meta)
    bad = bad.replace(b"    version:", b"    mac_only_encrypted: true\n    version:")
    with pytest.raises(TamperedError):
        load_document(bad, [identity])


def test_default_rules_encrypt_everything_but_unencrypted_suffix(identity, recipient):
    key = os.urandom(32)
    body = (
        f"a: {seal(key, b'7', b'a:', 'int')}\n"
        f"b: {seal(key, b'1.5', b'b:', 'float')}\n"
        f"c: {seal(key, b'True', b'c:', 'bool')}\n"
        f"d: {seal(key, b'2026-01-01T00:00:00.5+02:00', b'd:', 'time')}\n"
        "list:\n"
        f"    - {seal(key, b'x', b'list:')}\n"
        f"    - {seal(key, b'y', b'list:')}\n"
        "public_unencrypted: hello\n"
    )
    leaves = [b"7", b"1.5", b"True", b"2026-01-01T00:00:00.5+02:00", b"x", b"y", b"hello"]
    text = build_file_with_key(key, recipient, body, leaves)
    doc = load_document(text, [identity])
    assert doc.data["a"] == 7 and doc.data["b"] == 1.5 and doc.data["c"] is True
    assert doc.data["d"].text == "2026-01-01T00:00:00.5+02:00"
    assert doc.data["list"] == ["x", "y"]
    assert doc.data["public_unencrypted"] == "hello"


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z"),
        ("2026-01-02T03:04:05.123Z", "2026-01-02T03:04:05Z"),
        ("2026-01-02T03:04:05+00:00", "2026-01-02T03:04:05Z"),
        ("2026-01-02T03:04:05+02:00", "2026-01-02T03:04:05+02:00"),
    ],
)
def test_mac_additional_data_is_lastmodified_reformatted(stored, expected):
    assert sops.lastmodified_ad(stored) == expected


def test_mac_bound_to_lastmodified(identity, recipient):
    key = os.urandom(32)
    body = "name_unencrypted: x\n"
    text = build_file_with_key(key, recipient, body, [b"x"])
    assert load_document(text, [identity]).data == {"name_unencrypted": "x"}
    with pytest.raises(TamperedError):
        load_document(text.replace(b"2026-01-02T03:04:05Z", b"2026-01-02T03:04:06Z"), [identity])


def test_without_identities_nothing_is_decrypted(identity, recipient):
    text = encode_document({"name": "x", "value": Secret("tok")}, [recipient])
    doc = load_document(text, None)
    assert not doc.decrypted
    assert doc.data["value"].startswith("ENC[AES256_GCM,")
    assert doc.encrypted_paths == {("value",)}
    assert doc.metadata.recipients == (recipient,)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"", "no top-level mapping"),
        (b"- a\n- b\n", "no top-level mapping"),
        (b"a: [\n", "not valid YAML"),
        (b"name: x\n", "no `sops` metadata"),
        (b"name: x\nsops: {}\n", "lists no keys"),
        (b"a: \xff\xfe\n", "not valid YAML"),
    ],
)
def test_malformed_files(text, problem):
    with pytest.raises(MalformedError, match=re.escape(problem)):
        load_document(text, None, "f.sops.yaml")


def test_structural_problems_are_malformed(identity, recipient):
    good = encode_document({"name": "x"}, [recipient]).decode()
    cases = {
        "duplicate": good.replace("name: x\n", "name: x\nname: y\n"),
        "int key": good.replace("name: x\n", "name: x\n1: y\n"),
        "empty key groups": good.replace(
            "sops:\n", "sops:\n    key_groups:\n        - age: []\n        - age: []\n"
        ).replace("    age:\n", "    agex:\n"),
        "two rules": good.replace("    version:", "    unencrypted_suffix: _x\n    version:"),
        "huge int": good.replace("name: x\n", "name: x\nn: 18446744073709551615\n"),
    }
    for what, text in cases.items():
        with pytest.raises(MalformedError):
            load_document(text.encode(), [identity], what)


def test_alias_bombs_and_deep_nesting_are_refused(identity, recipient):
    lines, prev = ["a: &a [x, x, x, x, x, x, x, x, x, x]"], "a"
    for i in range(1, 6):
        lines.append(f"b{i}: &b{i} [" + ", ".join([f"*{prev}"] * 10) + "]")
        prev = f"b{i}"
    bomb = "\n".join(lines) + "\n"
    text = encode_document({"name": "x"}, [recipient]).decode().replace("name: x\n", bomb)
    with pytest.raises(MalformedError, match="too many values"):
        load_document(text.encode(), None)
    deep = "d: " + "[" * 200 + "]" * 200 + "\n"
    text = encode_document({"name": "x"}, [recipient]).decode().replace("name: x\n", deep)
    with pytest.raises(MalformedError, match="nested too deeply"):
        load_document(text.encode(), None)


def test_messages_never_contain_plaintext(identity, recipient):
    text = encode_document({"value": Secret("hunter2-secret")}, [recipient])
    tampered = text.replace(b"version: 3.11.0", b"version: 3.11.1").replace(
        b"value: ENC[AES256_GCM,data:", b"value: ENC[AES256_GCM,data:A"
    )
    with pytest.raises(TamperedError) as caught:
        load_document(tampered, [identity], "x.sops.yaml")
    assert "hunter2" not in str(caught.value) and "x.sops.yaml" in str(caught.value)


# ---------------------------------------------------------------------------------------
# Go yaml.v3 scalar typing.

INF = math.inf


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("y", "y"),
        ("true", True),
        ("True", True),
        ("FALSE", False),
        ("tRue", "tRue"),
        ("~", None),
        ("", None),
        ("null", None),
        ("Null", None),
        ("nULL", "nULL"),
        ("0x10", 16),
        ("0X1f", 31),
        ("-0x10", -16),
        ("+5", 5),
        ("0o17", 15),
        ("017", 15),
        ("0b101", 5),
        ("08", 8.0),
        ("09.5", 9.5),
        ("1_000", 1000),
        ("0x_10", 16),
        ("1.0", 1.0),
        ("1.", 1.0),
        ("1e3", 1000.0),
        ("-1E-3", -0.001),
        (".5", 0.5),
        (".5e1", 5.0),
        (".51_0", 0.51),
        ("._5", "._5"),
        (".5_", ".5_"),
        ("1e400", "1e400"),
        (".inf", INF),
        ("-.Inf", -INF),
        ("+.INF", INF),
        ("inf", "inf"),
        ("0x", "0x"),
        ("-", "-"),
        ("1:20", "1:20"),
        ("1.2.3", "1.2.3"),
        ("<<", "<<"),
        ("0xg", "0xg"),
        ("9223372036854775807", 9223372036854775807),
        ("-9223372036854775808", -9223372036854775808),
        ("-9223372036854775809", -9.223372036854776e18),
        ("18446744073709551616", 1.8446744073709552e19),
        ("2026-02-30", "2026-02-30"),
        ("2026-13-01", "2026-13-01"),
        ("20260101", 20260101),
        ("2026-01-01T25:00:00Z", "2026-01-01T25:00:00Z"),
        ("2026-01-01T00:00:00", "2026-01-01T00:00:00"),
        ("2026-01-01 00:00:00Z", "2026-01-01 00:00:00Z"),
    ],
)
def test_resolve_plain_follows_yaml_v3(text, expected):
    value = resolve_plain(text)
    assert type(value) is type(expected) and value == expected


@pytest.mark.parametrize(
    ("text", "marshal"),
    [
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        ("2026-01-01", "2026-01-01T00:00:00Z"),
        ("2026-1-2", "2026-01-02T00:00:00Z"),
        ("2026-01-01t10:00:00Z", "2026-01-01T10:00:00Z"),
        ("2026-01-01T10:00:00+02:00", "2026-01-01T10:00:00+02:00"),
        ("2026-01-01T10:00:00-00:00", "2026-01-01T10:00:00Z"),
        ("2026-01-01T10:00:00.500Z", "2026-01-01T10:00:00.5Z"),
        ("2026-01-01T10:00:00,25Z", "2026-01-01T10:00:00.25Z"),
        ("2026-01-01T10:00:00.1234567891Z", "2026-01-01T10:00:00.123456789Z"),
        ("2001-12-14 21:59:43.10", "2001-12-14T21:59:43.1Z"),
        ("2001-12-14  21:59:43", "2001-12-14T21:59:43Z"),
        ("2026-1-2T3:4:5Z", "2026-01-02T03:04:05Z"),
        ("2024-02-29", "2024-02-29T00:00:00Z"),
    ],
)
def test_timestamps_marshal_like_go(text, marshal):
    value = resolve_plain(text)
    assert isinstance(value, GoTime)
    assert value.text == marshal
    assert to_bytes(value) == marshal.encode()


def test_timestamp_value_is_utc_aware():
    value = resolve_plain("2026-01-01T10:00:00+02:00")
    assert value.value == datetime(2026, 1, 1, 8, tzinfo=UTC)


def test_uint64_values_are_unsupported_like_in_sops():
    with pytest.raises(scalars.UnsupportedValue):
        resolve_plain("9223372036854775808")


@pytest.mark.parametrize(
    ("tag", "text", "expected"),
    [
        ("tag:yaml.org,2002:str", "123", "123"),
        ("tag:yaml.org,2002:int", "0x10", 16),
        ("tag:yaml.org,2002:int", "abc", None),
        ("tag:yaml.org,2002:float", "1", 1.0),
        ("tag:yaml.org,2002:bool", "yes", None),
        ("tag:yaml.org,2002:bool", "true", True),
        ("tag:yaml.org,2002:null", "", None),
        ("tag:yaml.org,2002:binary", "aGVsbG8=", "hello"),
        ("tag:yaml.org,2002:binary", "!!!", None),
        ("tag:yaml.org,2002:int", "2026-01-01", None),
        ("!custom", "12", "12"),
    ],
)
def test_explicit_tags(tag, text, expected):
    value = resolve_tagged(tag, text)
    assert type(value) is type(expected) and value == expected


def test_explicit_timestamp_tag():
    assert resolve_tagged("tag:yaml.org,2002:timestamp", "2026-01-01").text == (
        "2026-01-01T00:00:00Z"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, b"1"),
        (100.0, b"100"),
        (0.5, b"0.5"),
        (-0.0, b"-0"),
        (1e16, b"10000000000000000"),
        (1.5e-7, b"0.00000015"),
        (123456789012345680.0, b"123456789012345680"),
        (math.inf, b"+Inf"),
        (-math.inf, b"-Inf"),
        (math.nan, b"NaN"),
        (True, b"True"),
        (False, b"False"),
        (-12, b"-12"),
        ("é", "é".encode()),
    ],
)
def test_to_bytes_matches_sops(value, expected):
    assert to_bytes(value) == expected


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_go_float_text_round_trips_without_exponent(value):
    text = scalars.go_float_text(value)
    assert "e" not in text and "E" not in text
    assert float(text) == value


def _reread(emitted: str):
    node = syntax.compose_documents(f"k: {emitted}\n")[0]
    return syntax.scalar_value(node.value[0][1])


@given(st.text())
@settings(max_examples=300)
def test_emitted_strings_read_back_as_the_same_string(text):
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return
    emitted = syntax.emit_scalar(text)
    assert _reread(emitted) == text
    # and plain output is also a string for PyYAML's YAML 1.1 reading
    assert yaml.safe_load(f"k: {emitted}\n")["k"] == text


@pytest.mark.parametrize(
    "text",
    [
        "yes",
        "no",
        "on",
        "true",
        "123",
        "0x10",
        "1.5",
        "2026-01-01",
        "~",
        "",
        "null",
        "1:20",
        "a: b",
        "x #y",
        "-x",
        "'q",
        "@x",
        "a\nb",
        " pad",
        "tab\t",
        "\x85",
        "é",
        "=",
        "<<",
    ],
)
def test_emitted_tricky_strings(text):
    assert _reread(syntax.emit_scalar(text)) == text


@given(
    st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False),
        st.booleans(),
    )
)
def test_emitted_numbers_keep_type_and_mac_bytes(value):
    back = _reread(syntax.emit_scalar(value))
    assert type(back) is type(value)
    assert to_bytes(back) == to_bytes(value)


def test_loader_does_not_apply_yaml11_typing():
    docs = syntax.compose_documents(b"a: yes\nb: 2026-01-01\nc: '12'\nd: !!str 12\ne: 012\n")
    values = {k.value: syntax.scalar_value(v) for k, v in docs[0].value}
    assert values["a"] == "yes"
    assert isinstance(values["b"], GoTime)
    assert values["c"] == "12" and values["d"] == "12"
    assert values["e"] == 10
