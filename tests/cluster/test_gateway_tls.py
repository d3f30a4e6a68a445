"""The etcd client over TLS: the server certificate checked against ``ca_file``, and a client
certificate (``cert_file`` / ``key_file``) for a member that requires one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.custody.etcd_gateway import EngineUnavailable, Gateway
from tests.etcd_process import Etcd


def certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca")  # fmt: skip
    # etcd's JSON gateway reaches its own gRPC server with the server certificate, so that one
    # serves as a client certificate too.
    (folder / "san.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    (folder / "client.cnf").write_text("extendedKeyUsage=clientAuth\n")
    for name, extensions in (("server", "san.cnf"), ("client", "client.cnf")):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", extensions)  # fmt: skip
    return {name: folder / name for name in ("ca.pem", "server.pem", "server.key", "client.pem",
                                              "client.key")}  # fmt: skip


def test_tls_with_a_ca_file_and_a_client_certificate(tmp_path: Path) -> None:
    files = certificates(tmp_path / "tls")
    server = Etcd(
        tmp_path / "etcd",
        scheme="https",
        flags=[
            "--cert-file", str(files["server.pem"]), "--key-file", str(files["server.key"]),
            "--client-cert-auth", "--trusted-ca-file", str(files["ca.pem"]),
        ],
    ).start()  # fmt: skip
    try:
        client = Gateway(
            server.endpoints,
            ca_file=str(files["ca.pem"]),
            cert_file=str(files["client.pem"]),
            key_file=str(files["client.key"]),
        )
        client.put(b"acme/tls", b"value")
        assert client.get(b"acme/tls").value == b"value"
        with pytest.raises(EngineUnavailable):  # no client certificate: the handshake fails
            Gateway(server.endpoints, ca_file=str(files["ca.pem"]), timeout=1.5).get(b"acme/tls")
        with pytest.raises(EngineUnavailable):  # the server's CA not trusted
            Gateway(server.endpoints, timeout=1.5).get(b"acme/tls")
    finally:
        server.stop()
