"""Values and helpers shared by the tests of `reconcile serve`: the secrets a test uses (the leak
scan looks for each), providers.yaml, the leak scan itself, and reading grants back."""

from __future__ import annotations

from reconciler.vault.sops.keys import load_identities
from reconciler.vault.store import grant_path, read_grant
from tests.e2e.authserver import AuthServer
from tests.e2e.browser import ScriptedBrowser


def decrypt(harness, name: str):
    identities = load_identities({"SOPS_AGE_KEY_FILE": str(harness.project.key_file)})
    return read_grant(grant_path(harness.project.store, name), identities)


def approve(auth_server, started: dict, decision: str = "approve") -> None:
    """The user opens the verification page and decides."""
    auth_server.device_consent = decision
    page = ScriptedBrowser().open(started["verification_uri_complete"])
    assert page.status_code == 200 and decision in page.text


def poll(client, started: dict, name: str = "gadget", path: str = "/v1/links/device/poll"):
    key = "entry_id" if path.startswith("/internal") else "name"
    response = client.post(path, json={key: name, "device_code": started["device_code"]})
    assert response.status_code == 200, response.text
    return response.json()


CLIENT_SECRET = "conf-secret-0a1b2c3d4e5f6a7b8c9d"


CONTROL_SECRET = "cp-secret-4f3e2d1c0b9a8f7e6d5c4b3a29180716"  # 46 characters


PUT_VALUE = "sk-put-value-1029384756abcdef"


INTERNAL_VALUE = "sk-internal-value-5647382910fedcba"


ENV_TOKEN = "env-serve-token-9a8b7c6d5e4f3a2b1c0d"


def providers_yaml(recipient: str, issuer: str, *, extra_secrets: str = "") -> str:
    return (
        "version: 1\n"
        "store:\n"
        "  dir: secrets\n"
        f"  recipients: [{recipient}]\n"
        "providers:\n"
        "  demo:\n"
        f"    issuer: {issuer}\n"
        "    client_id: conf-app\n"
        "    client_secret: env:DEMO_CLIENT_SECRET\n"
        "    scopes: [read]\n"
        "  gadget:\n"
        f"    issuer: {issuer}\n"
        "    client_id: conf-app\n"
        "    client_secret: env:DEMO_CLIENT_SECRET\n"
        "    flow: device_code\n"
        "    scopes: [read, write]\n"
        "  machine:\n"
        f"    issuer: {issuer}\n"
        "    client_id: conf-app\n"
        "    client_secret: env:DEMO_CLIENT_SECRET\n"
        "    flow: client_credentials\n"
        "secrets:\n"
        "  openai:\n"
        "    value: prompt\n" + extra_secrets
    )


class LeakWatch:
    """Collects secrets and texts; ``check()`` fails if any secret is in any text."""

    def __init__(self, auth_server: AuthServer) -> None:
        self.auth_server = auth_server
        self.secrets: set[str] = {
            CLIENT_SECRET,
            CONTROL_SECRET,
            PUT_VALUE,
            INTERNAL_VALUE,
            ENV_TOKEN,
        }
        self.texts: list[tuple[str, str]] = []

    def issued(self) -> set[str]:
        found: set[str] = set()
        server = self.auth_server
        with server.lock:
            for token in server.tokens:
                found.update(v for v in (token.access_token, token.refresh_token) if v)
            for request in server.requests:
                for key in ("code", "device_code", "refresh_token", "code_verifier"):
                    found.update(v for v in request.form.get(key, []) if v)
            found.update(server.device_credentials)
        return found

    def check(self) -> None:
        secrets = {s for s in self.secrets | self.issued() if len(s) >= 8}
        for where, text in self.texts:
            for secret in secrets:
                assert secret not in text, f"a secret value leaked into {where}"
