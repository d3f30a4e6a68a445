"""`reconcile --watch` never re-encrypts to new recipients on its own (a `git pull` may have
brought them): it reports the pending rekey, and its refreshes keep each file's recipients."""

from __future__ import annotations

import yaml

from tests.support import new_identity

from .support import CLIENT_SECRET, document, provider, save


def recipients(project, name: str) -> list[str]:
    meta = yaml.safe_load((project.store / f"{name}.sops.yaml").read_text())["sops"]
    return [entry["recipient"] for entry in meta["age"]]


def test_watch_reports_a_rekey_and_refreshes_without_doing_it(project, auth_server, watch):
    auth_server.add_client("robot", CLIENT_SECRET)
    auth_server.token_lifetime = 8  # due 3 s after each token: a refresh rewrites the file
    (project.root / "client.secret").write_text(CLIENT_SECRET + "\n")
    providers = {"robot": provider(auth_server, "robot", flow="client_credentials")}
    project.write_config(document(project, auth_server, providers, {}, refresh_before="5s"))
    watching = watch()
    assert recipients(project, "robot") == [project.recipient]

    other = new_identity(project.root.parent / "other.txt")
    changed = document(project, auth_server, providers, {}, refresh_before="5s")
    save(
        project.config,
        changed.replace(f"- {project.recipient}", f"- {project.recipient}\n  - {other}"),
    )
    note = watching.wait_for(lambda: watching.seen("rekey"), "the rekey report")
    assert note[0]["names"] == ["robot"] and "reconcile apply" in note[0]["message"]
    calls = auth_server.token_calls["client_credentials"]
    watching.wait_for(
        lambda: auth_server.token_calls["client_credentials"] > calls, "a refresh after the pull"
    )
    watching.wait_for(
        lambda: len(watching.seen("outcome", name="robot", action="refresh", result="done")) >= 2,
        "the refresh to be reported",
    )
    assert recipients(project, "robot") == [project.recipient]
    assert not watching.seen("outcome", action="rekey")
    assert len(watching.seen("rekey")) == 1  # once, not every cycle
    assert watching.stop() == 0
