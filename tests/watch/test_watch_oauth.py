"""`reconcile --watch` with OAuth grants: refresh deadlines and link flows, against the real
test authorization server (tests/e2e/authserver.py) over loopback HTTP."""

from __future__ import annotations

import time

import yaml

from .support import CLIENT_SECRET, document, provider, read_value, save


def expires_at(project, name: str) -> str | None:
    path = project.store / f"{name}.sops.yaml"
    if not path.exists():
        return None
    return yaml.safe_load(path.read_text()).get("expires_at")


def test_the_timer_refreshes_before_expiry_without_any_file_event(project, auth_server, watch):
    auth_server.add_client("robot", CLIENT_SECRET)
    auth_server.token_lifetime = 8  # due 4 s after each token: min(refresh_before, half its life)
    (project.root / "client.secret").write_text(CLIENT_SECRET + "\n")
    providers = {"robot": provider(auth_server, "robot", flow="client_credentials")}
    project.write_config(document(project, auth_server, providers, {}, refresh_before="5s"))

    watching = watch()
    first = expires_at(project, "robot")
    assert first is not None and auth_server.token_calls["client_credentials"] == 1

    watching.wait_for(
        lambda: auth_server.token_calls["client_credentials"] >= 2, "a refresh at the deadline"
    )
    watching.wait_for(lambda: expires_at(project, "robot") != first, "the refreshed grant")
    watching.wait_for(
        lambda: watching.seen("outcome", name="robot", action="refresh", result="done"),
        "the refresh to be reported",
    )
    # One refresh per deadline, not a busy loop: ~4 s apart for 8 s tokens.
    assert auth_server.token_calls["client_credentials"] <= 3
    assert watching.stop() == 0


def test_a_link_opens_the_browser_once_while_other_grants_are_served(
    project, auth_server, watch, tmp_path
):
    from tests.e2e.browser import ScriptedBrowser

    auth_server.add_client("web-app", CLIENT_SECRET)
    (project.root / "client.secret").write_text(CLIENT_SECRET + "\n")
    (project.root / "alpha.key").write_text("alpha-value-1\n")
    opened = tmp_path / "opened.log"
    launcher = tmp_path / "browser.sh"  # what $BROWSER runs: it only notes the URL
    launcher.write_text(f'#!/bin/sh\necho "$1" >> "{opened}"\n')
    launcher.chmod(0o755)
    providers = {"web": provider(auth_server, "web-app")}
    secrets = {"alpha": "file:alpha.key"}
    project.write_config(document(project, auth_server, providers, secrets))

    def urls() -> list[str]:
        return opened.read_text().split() if opened.exists() else []

    watching = watch(env={"BROWSER": str(launcher)})
    watching.wait_for(urls, "the browser to be opened")
    assert read_value(project, "alpha") == "alpha-value-1"

    # While the link is pending, edits keep being applied, and the browser is not reopened.
    (project.root / "beta.key").write_text("beta-value-1\n")
    save(
        project.config,
        document(project, auth_server, providers, {**secrets, "beta": "file:beta.key"}),
    )
    watching.wait_for(lambda: read_value(project, "beta") == "beta-value-1", "beta")
    (project.root / "alpha.key").write_text("alpha-value-2\n")
    watching.wait_for(lambda: read_value(project, "alpha") == "alpha-value-2", "alpha")
    assert len(urls()) == 1
    assert len(watching.seen("link", name="web")) == 1
    assert not (project.store / "web.sops.yaml").exists()

    # The user finishes in the browser: the pending flow writes the grant.
    browser = ScriptedBrowser()
    browser(urls()[0])
    assert browser.final is not None and browser.final.status_code == 200
    watching.wait_for(
        lambda: watching.seen("outcome", name="web", action="link", result="done"),
        "the link to finish",
    )
    assert (project.store / "web.sops.yaml").exists()
    assert auth_server.token_calls["authorization_code"] == 1
    assert len(urls()) == 1
    assert watching.stop() == 0


def test_a_bad_edit_stops_even_the_timer_until_fixed(project, auth_server, watch):
    auth_server.add_client("robot", CLIENT_SECRET)
    auth_server.token_lifetime = 8  # due 4 s after each token
    (project.root / "client.secret").write_text(CLIENT_SECRET + "\n")
    providers = {"robot": provider(auth_server, "robot", flow="client_credentials")}
    good = document(project, auth_server, providers, {}, refresh_before="5s")
    project.write_config(good)
    watching = watch()
    assert auth_server.token_calls["client_credentials"] == 1
    before = project.snapshot()

    save(project.config, good + "bogus_key: 1\n")
    watching.wait_for(lambda: watching.errors(), "the error line")
    # Past the refresh deadline (a bounded look): no refresh, no repeated error.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert auth_server.token_calls["client_credentials"] == 1, watching.dump()
        assert len(watching.errors()) == 1, watching.dump()
        time.sleep(0.1)
    assert project.snapshot() == before

    save(project.config, good)  # fixed: the overdue refresh happens now
    watching.wait_for(lambda: auth_server.token_calls["client_credentials"] == 2, "the refresh")
    assert watching.stop() == 0


def test_a_token_shorter_than_refresh_before_is_refreshed_per_lifetime_not_in_a_loop(
    project, auth_server, watch
):
    """Issue: a 4 s token with the default 5m margin was due at once, so the watcher refreshed
    in a loop. Now it is due half-way through its life: about two refreshes per lifetime."""
    auth_server.add_client("robot", CLIENT_SECRET)
    auth_server.token_lifetime = 4
    (project.root / "client.secret").write_text(CLIENT_SECRET + "\n")
    providers = {"robot": provider(auth_server, "robot", flow="client_credentials")}
    project.write_config(document(project, auth_server, providers, {}, refresh_before="5m"))

    watching = watch()
    started = time.monotonic()
    watching.wait_for(
        lambda: auth_server.token_calls["client_credentials"] >= 3, "refreshes at the deadlines"
    )
    time.sleep(max(0.0, 8 - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    calls = auth_server.token_calls["client_credentials"]
    assert watching.stop() == 0
    # One token at the start, then one every 2 s (half of 4 s); a loop makes dozens.
    assert calls <= 2 + elapsed / 2, (calls, elapsed)
