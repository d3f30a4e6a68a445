"""Static secrets over HTTP, the status document, request bodies, and config re-reading."""

from __future__ import annotations

import json

from reconciler.vault.store import grant_path

from .support import INTERNAL_VALUE, PUT_VALUE, decrypt, providers_yaml


def test_put_and_delete_a_declared_secret(serve, harness):
    _server, client = serve
    path = grant_path(harness.project.store, "openai")
    response = client.put("/v1/secrets/openai", json={"value": PUT_VALUE})
    assert response.status_code == 204 and response.content == b""
    grant = decrypt(harness, "openai")
    assert grant.kind == "secret" and grant.value.reveal() == PUT_VALUE
    assert PUT_VALUE.encode() not in path.read_bytes()

    assert client.put("/v1/secrets/openai", json={"value": PUT_VALUE + "2"}).status_code == 204
    assert decrypt(harness, "openai").value.reveal() == PUT_VALUE + "2"

    token = harness.project.reconcile("token", "openai")
    assert token.code == 0 and token.stdout.strip() == PUT_VALUE + "2"

    assert client.delete("/v1/secrets/openai").status_code == 204
    assert not path.exists()
    assert client.delete("/v1/secrets/openai").status_code == 204  # idempotent


def test_undeclared_secrets_are_404(serve, harness):
    _server, client = serve
    for name in ("anthropic", "demo", "gadget", "UPPER", "a" * 70):
        put = client.put(f"/v1/secrets/{name}", json={"value": PUT_VALUE})
        assert put.status_code == 404, name
        assert put.json()["error"] == "not_declared"
        assert client.delete(f"/v1/secrets/{name}").status_code == 404, name
    assert client.put("/v1/secrets/..%2Fopenai", json={"value": PUT_VALUE}).status_code == 404
    assert not harness.project.store.exists() or not any(harness.project.store.iterdir())


def test_bad_bodies(serve, harness):
    _server, client = serve
    url = "/v1/secrets/openai"
    for body, status in [
        ({"value": ""}, 400),
        ({"value": 5}, 400),
        ({}, 400),
    ]:
        response = client.put(url, json=body)
        assert response.status_code == status, body
        assert set(response.json()) == {"error", "message"}
    headers = {"Content-Type": "application/json"}
    assert client.put(url, content=b"{not json", headers=headers).status_code == 400
    assert client.put(url, content=b'["x"]', headers=headers).status_code == 400
    assert client.put(url, content=b"\xff\xfe", headers=headers).status_code == 400
    form = client.put(url, content=b"value=x", headers={"Content-Type": "text/plain"})
    assert form.status_code == 415
    big = json.dumps({"value": "x" * (70 * 1024)}).encode()
    assert client.put(url, content=big, headers=headers).status_code == 413

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(70):
            yield b" " * 1024

    assert client.put(url, content=chunks(), headers=headers).status_code == 413
    assert not grant_path(harness.project.store, "openai").exists()


def test_deeply_nested_json_is_a_bad_request(internal, harness):
    server, internal_client = internal
    client = server.client(harness.local_secret())
    deep = b'{"value": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"  # under the 64 KiB limit
    headers = {"Content-Type": "application/json"}
    for http, method, path in [
        (client, "PUT", "/v1/secrets/openai"),
        (client, "POST", "/v1/links"),
        (internal_client, "POST", "/internal/outbound-secrets/v1/put"),
    ]:
        response = http.request(method, path, content=deep, headers=headers)
        assert response.status_code == 400, path
        assert response.json()["error"] == "invalid_json"
    assert client.get("/v1/status").status_code == 200
    assert "Traceback" not in server.output and "RecursionError" not in server.output


def test_status_is_the_cli_document(serve, harness):
    _server, client = serve
    assert client.put("/v1/secrets/openai", json={"value": PUT_VALUE}).status_code == 204
    response = client.get("/v1/status")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    rows = {row["name"]: row for row in document["grants"]}
    assert set(rows) == {"demo", "gadget", "machine", "openai"}
    for row in document["grants"]:
        assert {"name", "kind", "status", "scopes", "granted_scopes", "expires_at"} <= set(row)
    assert rows["openai"]["status"] == "ok" and rows["openai"]["kind"] == "secret"
    assert rows["demo"]["status"] == "missing" and rows["demo"]["scopes"] == ["read"]
    cli = harness.project.reconcile("status", "-o", "json")
    assert json.loads(cli.stdout) == document


def test_config_is_reread_per_request(serve, harness):
    _server, client = serve
    project = harness.project
    assert client.put("/v1/secrets/later", json={"value": PUT_VALUE}).status_code == 404
    project.write_config(
        providers_yaml(
            project.recipient,
            harness.auth_server.issuer,
            extra_secrets="  later:\n    value: prompt\n",
        )
    )
    assert client.put("/v1/secrets/later", json={"value": PUT_VALUE}).status_code == 204
    assert decrypt(harness, "later").value.reveal() == PUT_VALUE

    project.write_config("version: 1\nproviders: [broken\n")
    broken = client.get("/v1/status")
    assert broken.status_code == 500 and broken.json()["error"] == "config_error"
    assert "providers.yaml" in broken.json()["message"]

    project.write_config(providers_yaml(project.recipient, harness.auth_server.issuer))
    assert client.put("/v1/secrets/later", json={"value": PUT_VALUE}).status_code == 404
    assert client.get("/v1/status").status_code == 200


def test_internal_put_and_delete(internal, harness):
    _server, client = internal
    put = client.post(
        "/internal/outbound-secrets/v1/put", json={"key": "openai", "value": INTERNAL_VALUE}
    )
    assert put.status_code == 204, put.text
    assert decrypt(harness, "openai").value.reveal() == INTERNAL_VALUE
    delete = client.post("/internal/outbound-secrets/v1/delete", json={"key": "openai"})
    assert delete.status_code == 204
    assert not grant_path(harness.project.store, "openai").exists()

    for path, body, status in [
        ("put", {"key": "nope", "value": INTERNAL_VALUE}, 404),
        ("put", {"key": "demo", "value": INTERNAL_VALUE}, 404),
        ("put", {"key": "openai"}, 400),
        ("put", {"value": INTERNAL_VALUE}, 400),
        ("delete", {"key": "nope"}, 404),
        ("delete", {}, 400),
    ]:
        response = client.post(f"/internal/outbound-secrets/v1/{path}", json=body)
        assert response.status_code == status, (path, body, response.text)


def test_a_secret_sourced_from_a_reference_cannot_be_written_over_http(serve, harness):
    """The next apply would overwrite it from env:/file:, so the write is refused (409)."""
    _server, client = serve
    project = harness.project
    project.write_config(
        providers_yaml(
            project.recipient,
            harness.auth_server.issuer,
            extra_secrets="  sourced:\n    value: env:SOURCED_VALUE\n",
        )
    )
    response = client.put("/v1/secrets/sourced", json={"value": PUT_VALUE})
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert "env:SOURCED_VALUE" in response.json()["message"]
    assert not grant_path(project.store, "sourced").exists()
