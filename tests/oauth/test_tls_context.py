"""Token requests over TLS from many threads share one TLS context, safely: its ALPN protocol
list is set once, never rewritten while another thread's handshake reads it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reconciler.model import Provider, Secret
from reconciler.oauth import tokens, transport

from .support import StubServer

NOW = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)


def self_signed(folder) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files; returns their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


@pytest.fixture
def https_endpoint(tmp_path, monkeypatch):
    cert_file, key_file = self_signed(tmp_path)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert_file, key_file)
    server = StubServer(tls=server_side)
    server.reply("POST", "/token", 200, {"access_token": "tls-token", "token_type": "Bearer"})
    # Trusted the way a user trusts a private CA; the process context is built anew.
    monkeypatch.setenv("SSL_CERT_FILE", cert_file)
    monkeypatch.setattr(transport, "_tls", None)
    yield server.url("/token")
    server.close()


def test_threads_share_one_tls_context_and_never_rewrite_its_alpn(https_endpoint, monkeypatch):
    rewrites = []
    original = ssl.SSLContext.set_alpn_protocols

    def counted(self, protocols):
        rewrites.append(list(protocols))
        return original(self, protocols)

    monkeypatch.setattr(ssl.SSLContext, "set_alpn_protocols", counted)
    provider = Provider(
        name="acme", client_id="app", token_endpoint=https_endpoint, scopes=("read",)
    )
    results, errors, contexts = [], [], set()

    def refresh_a_few() -> None:
        try:
            for _ in range(3):
                results.append(tokens.refresh(provider, None, Secret("rt"), now=NOW))
            contexts.add(id(transport.tls_context()))
        except Exception as error:  # reported below, with the thread's other results
            errors.append(error)

    threads = [threading.Thread(target=refresh_a_few) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert [r.access_token for r in results] == [Secret("tls-token")] * 24
    assert len(contexts) == 1
    assert rewrites == [["http/1.1"]]  # set once when the context was built, never again


def test_the_context_refuses_other_alpn_protocols(https_endpoint):
    with pytest.raises(ValueError, match="ALPN"):
        transport.tls_context().set_alpn_protocols(["h2", "http/1.1"])
