"""Helpers shared by the tests of `reconcile serve`."""

from __future__ import annotations

from reconciler.vault.keys import load_identities
from reconciler.vault.store import grant_path, read_grant
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
