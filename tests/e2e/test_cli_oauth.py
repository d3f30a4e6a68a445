"""Issue 3 end to end, as a user would: the real `reconcile` command in a separate process,
against the real authorization server of authserver.py over HTTP on 127.0.0.1, with
``$BROWSER`` playing the user (fake_browser.py). Every test ends with the leak check of
cli_support.py."""

from __future__ import annotations

import itertools
import json
import re
import time

import pytest

from reconciler.vault.files import lock_path_for
from tests.support import read_only_folder

from . import cli_support
from .cli_support import approve_at_the_server, record_device_polls, scaled_device_clock


def status_of(e2e, name: str) -> dict:
    ran = e2e.run("status", "-o", "json")
    assert ran.code == 0, ran
    (row,) = [g for g in json.loads(ran.stdout)["grants"] if g["name"] == name]
    return row


def plan_of(e2e) -> list[dict]:
    ran = e2e.run("plan", "-o", "json")
    assert ran.code == 0, ran
    return json.loads(ran.stdout)["actions"]


# --- 1. link with auth code + PKCE ---------------------------------------------------------

METHODS = {"basic": "client_secret_basic", "post": "client_secret_post", "public": "none"}


def test_link_with_auth_code_and_pkce(e2e):
    """Confidential clients (client_secret_basic, client_secret_post) and a public client."""
    auth = e2e.auth
    clients = {}
    for name, method in METHODS.items():
        secret = None if method == "none" else f"secret-of-{name}"
        clients[name] = auth.add_client(f"{name}-app", secret, auth_method=method)
        e2e.declare(name, clients[name])
    e2e.write_config()

    for name in METHODS:
        ran = e2e.run("link", name)
        assert ran.code == 0, ran
        assert f"{name}: linked; granted read write" in ran.stdout

    # The browser went to the authorization server, then to the loopback callback.
    visits = e2e.visits(3)
    assert [[hop[0] for hop in v["hops"]] for v in visits] == [
        ["/authorize", "/oauth/link/callback"]
    ] * 3
    assert [(v["status"], v["title"]) for v in visits] == [
        (200, f"Linked {name}") for name in METHODS
    ]
    authorizations = [r for r in auth.requests if r.path == "/authorize"]
    assert [r.query["code_challenge_method"] for r in authorizations] == [["S256"]] * 3
    basic, post, public = [r for r in auth.requests if r.path == "/token"]
    for exchange in (basic, post, public):
        assert exchange.form["grant_type"] == ["authorization_code"]
        assert "code_verifier" in exchange.form
    assert basic.headers["authorization"].startswith("Basic ")
    assert "client_secret" not in basic.form
    assert "authorization" not in post.headers
    assert post.form["client_secret"] == ["secret-of-post"]
    assert "authorization" not in public.headers and "client_secret" not in public.form
    assert public.form["client_id"] == ["public-app"]

    for name in METHODS:
        # A genuine SOPS file: `sops -d` opens it; scopes and expiry are plaintext.
        issued = e2e.latest(clients[name])
        decrypted = e2e.sops_decrypt(name)
        assert decrypted["access_token"] == issued.access_token
        assert decrypted["refresh_token"] == issued.refresh_token
        text = e2e.grant_file(name).read_text()
        assert re.search(r"^expires_at: \d{4}-\d\d-\d\dT[\d:]+Z$", text, re.M)
        assert re.search(r"^granted_scopes:\n +- read\n +- write\n", text, re.M)
        assert re.search(r"^access_token: ENC\[AES256_GCM,", text, re.M)
        assert re.search(r"^refresh_token: ENC\[AES256_GCM,", text, re.M)

    status = e2e.run("status", "-o", "json")
    assert status.code == 0, status
    rows = json.loads(status.stdout)["grants"]
    assert [(r["name"], r["status"], r["granted_scopes"]) for r in rows] == [
        (name, "ok", ["read", "write"]) for name in sorted(METHODS)
    ]
    assert all(r["expires_at"] for r in rows)


# --- 2. apply: several links in a row, --no-link, client credentials ---------------------------


def test_apply_links_several_grants_one_after_another(e2e):
    auth = e2e.auth
    e2e.declare("alpha", auth.add_client("alpha-app", "alpha-secret"))
    e2e.declare(
        "beta",
        auth.add_client("beta-app", "beta-secret", auth_method="client_secret_post"),
        scopes=("read",),
    )
    e2e.declare("gamma", auth.add_client("gamma-app"), scopes=("admin",))
    e2e.declare("robot", auth.add_client("robot-app", "robot-secret"), flow="client_credentials")
    e2e.write_config()

    ran = e2e.run("apply")
    assert ran.code == 0, ran
    progress = [line for line in ran.stderr.splitlines() if ": link: " in line]
    assert progress == [
        "alpha: link: done: linked, granted: read write",
        "beta: link: done: linked, granted: read",
        "gamma: link: done: linked, granted: admin",
        "robot: link: done: linked, granted: read write",
    ]
    assert ran.stdout == "Apply: 4 done, 0 failed, 0 pending.\n"
    visits = e2e.visits(3)
    assert [v["title"] for v in visits] == ["Linked alpha", "Linked beta", "Linked gamma"]
    assert auth.token_calls == {"authorization_code": 3, "client_credentials": 1}
    assert sorted(p.name for p in e2e.store.glob("*.sops.yaml")) == [
        f"{n}.sops.yaml" for n in ("alpha", "beta", "gamma", "robot")
    ]
    assert (
        e2e.sops_decrypt("robot")["access_token"]
        == e2e.latest(auth.clients["robot-app"]).access_token
    )


def test_apply_no_link_is_pending_but_obtains_client_credentials(e2e):
    auth = e2e.auth
    e2e.declare("user", auth.add_client("user-app", "user-secret"))
    e2e.declare(
        "robot",
        auth.add_client("robot-app", "robot-secret"),
        flow="client_credentials",
        scopes=("read",),
    )
    e2e.write_config()
    auth.device_expires_in = 2  # were the robot sent through a device flow, it would fail fast

    # `--device` (how to reach a person) changes nothing for client credentials.
    ran = e2e.run("apply", "--no-link", "--device", "-o", "json")
    assert ran.code == 2, ran
    assert "user: link: pending" in ran.stderr and "robot: link: done" in ran.stderr
    outcomes = json.loads(ran.stdout)["outcomes"]
    assert [(o["name"], o["result"]) for o in outcomes] == [("robot", "done"), ("user", "pending")]
    assert e2e.grant_file("robot").exists() and not e2e.grant_file("user").exists()
    assert auth.token_calls == {"client_credentials": 1}
    assert e2e.visits() == []  # no browser was opened
    assert [r for r in auth.requests if r.path == "/device_authorization"] == []

    token = e2e.run("token", "robot")
    assert token.code == 0, token
    assert token.stdout == e2e.latest(auth.clients["robot-app"]).access_token + "\n"
    assert auth.token_calls == {"client_credentials": 1}


# --- 3. device flow ----------------------------------------------------------------------------


def test_device_flow_with_slow_down(e2e):
    """`link --device --no-browser` prints the user code and verification URI, finishes once
    the user approves at the server, and honours slow_down (RFC 8628 §3.5: +5 s for good)."""
    auth = e2e.auth
    env = scaled_device_clock(e2e)
    auth.device_interval = 1
    auth.device_expires_in = 600  # 30 s on the scaled clock
    auth.device_consent = None
    auth.force_slow_down = 1
    polls = record_device_polls(auth)
    client = auth.add_client("tv-app")
    e2e.declare("tv", client)  # declared authorization_code: --device is how to reach the user
    e2e.write_config()

    link = e2e.watch("link", "tv", "--device", "--no-browser", env=env)
    shown = link.expect(r"open (\S+) and enter the code (\S+)")
    assert shown.group(1) == auth.endpoint("/device")
    user_code = shown.group(2)
    assert [c["user_code"] for c in auth.device_credentials.values()] == [user_code]
    deadline = time.monotonic() + 10
    while not polls and time.monotonic() < deadline:  # let it be told to slow down first
        time.sleep(0.01)
    approve_at_the_server(e2e, user_code)
    ran = link.finish()
    assert ran.code == 0, ran
    assert "tv: linked; granted read write" in ran.stdout

    outcomes = [outcome for _, outcome in polls]
    assert outcomes[0] == "slow_down" and outcomes[-1] == "token"
    assert outcomes.count("slow_down") == 1, outcomes  # never told twice: it slowed down
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(polls)]
    assert all(gap >= 6 - 0.5 for gap in gaps), gaps  # 1 s interval + 5 s after slow_down
    assert e2e.visits() == []  # --no-browser
    assert e2e.sops_decrypt("tv")["refresh_token"] == e2e.latest(client).refresh_token
    plan = e2e.run("plan", "--exit-code")
    assert plan.code == 0, plan  # a device-linked grant satisfies the declared grant


# --- 4. discovery ------------------------------------------------------------------------------


def test_provider_declared_with_only_an_issuer(e2e):
    auth = e2e.auth
    client = auth.add_client("disc-app", "disc-secret")
    entry = e2e.declare("internal", client, issuer_only=True)
    assert set(entry) == {"client_id", "client_secret", "issuer", "scopes"}
    e2e.write_config()

    ran = e2e.run("link", "internal")
    assert ran.code == 0, ran
    metadata = [r for r in auth.requests if "/.well-known/" in r.path]
    assert metadata[0].path == "/.well-known/oauth-authorization-server"
    assert e2e.visits(1)[0]["title"] == "Linked internal"
    assert e2e.sops_decrypt("internal")["access_token"] == e2e.latest(client).access_token

    # Revocation works from the discovered endpoint too.
    before = len(metadata)
    revoked = e2e.run("revoke", "internal")
    assert revoked.code == 0, revoked
    assert [r for r in auth.requests if r.path == "/revoke"]
    assert not e2e.grant_file("internal").exists()
    assert len([r for r in auth.requests if "/.well-known/" in r.path]) == before  # cached


def test_issuer_mismatch_fails_clearly_and_writes_nothing(e2e):
    auth = e2e.auth
    auth.metadata_overrides = {"issuer": "https://impostor.example.com"}
    e2e.declare("internal", auth.add_client("disc-app", "disc-secret"), issuer_only=True)
    e2e.write_config()
    discovery_cache = e2e.home / ".cache" / "oauth-reconciler" / "discovery"

    for command in (("link", "internal"), ("apply",)):
        ran = e2e.run(*command)
        assert ran.code == 1, ran
        assert "internal" in ran.stderr and "'https://impostor.example.com'" in ran.stderr
        assert "RFC 8414" in ran.stderr and "Traceback" not in ran.stderr
        assert not e2e.store.exists() or list(e2e.store.glob("*.sops.yaml")) == []
        assert not discovery_cache.exists() or list(discovery_cache.iterdir()) == []
    assert e2e.visits() == []
    assert sum(auth.token_calls.values()) == 0


# --- 5. refresh --------------------------------------------------------------------------------


def lifetimes(auth, seconds: dict[str, int]) -> None:
    """Access tokens of these clients (by client_id) live ``seconds``; others an hour."""
    from authlib.common.security import generate_token
    from authlib.oauth2.rfc6750 import BearerTokenGenerator

    auth.server.register_token_generator(
        "default",
        BearerTokenGenerator(
            lambda **kw: generate_token(42),
            lambda **kw: generate_token(48),
            lambda client, grant_type: seconds.get(client.client_id, 3600),
        ),
    )


def link_expiring(e2e, name: str, client, **fields) -> None:
    """Declare ``name`` and link it with an access token that is due for refresh on return
    (1 s lifetime, already over); later tokens live an hour."""
    e2e.declare(name, client, **fields)
    e2e.write_config()
    e2e.auth.token_lifetime = 1
    ran = e2e.run("link", name)
    assert ran.code == 0, ran
    e2e.auth.token_lifetime = 3600
    time.sleep(1)


@pytest.fixture
def keeping_refresh_tokens(monkeypatch):
    """The server answers refreshes without a new refresh token and keeps the old one valid
    (RFC 6749 §6 allows both; the default test server rotates)."""
    from .authserver import RotatingRefreshTokenGrant

    monkeypatch.setattr(RotatingRefreshTokenGrant, "INCLUDE_NEW_REFRESH_TOKEN", False)
    monkeypatch.setattr(RotatingRefreshTokenGrant, "revoke_old_credential", lambda self, t: None)


def cache_entries(e2e) -> list:
    folder = e2e.home / ".cache" / "oauth-reconciler" / "tokens"
    return sorted(folder.glob("*")) if folder.exists() else []


def test_token_after_expiry_refreshes_a_rotating_grant_durably(e2e):
    auth = e2e.auth
    client = auth.add_client("rot-app", "rot-secret")
    link_expiring(e2e, "rot", client)
    linked = e2e.latest(client)
    before = e2e.grant_file("rot").read_bytes()

    ran = e2e.run("token", "rot")
    assert ran.code == 0, ran
    fresh = e2e.latest(client)
    assert fresh.access_token != linked.access_token
    assert ran.stdout == fresh.access_token + "\n"
    assert e2e.token_calls("refresh_token") == 1
    # The rotated refresh token is in the committed file (sops reads it), the old one is dead.
    assert e2e.grant_file("rot").read_bytes() != before
    on_disk = e2e.sops_decrypt("rot")
    assert on_disk["refresh_token"] == fresh.refresh_token != linked.refresh_token
    assert on_disk["access_token"] == fresh.access_token
    assert not list(e2e.store.glob(".*.tmp"))

    again = e2e.run("token", "rot")
    assert again.code == 0 and again.stdout == ran.stdout, again
    assert e2e.token_calls("refresh_token") == 1  # the second read made no token call
    assert e2e.try_refresh(client, linked.refresh_token) == 400
    assert e2e.try_refresh(client, on_disk["refresh_token"]) == 200


def test_token_after_expiry_keeps_the_file_when_the_refresh_token_is_kept(
    e2e, keeping_refresh_tokens
):
    auth = e2e.auth
    client = auth.add_client("keep-app")
    link_expiring(e2e, "keep", client)
    linked = e2e.latest(client)
    before = e2e.grant_file("keep").read_bytes()
    assert cache_entries(e2e) == []

    ran = e2e.run("token", "keep")
    assert ran.code == 0, ran
    fresh = e2e.latest(client)
    assert fresh.refresh_token is None and fresh.access_token != linked.access_token
    assert ran.stdout == fresh.access_token + "\n"
    assert e2e.token_calls("refresh_token") == 1
    # Churn rule: nothing to commit; the new access token lives in the encrypted cache.
    assert e2e.grant_file("keep").read_bytes() == before
    (entry,) = cache_entries(e2e)
    assert entry.parent.parent == e2e.home / ".cache" / "oauth-reconciler"
    assert entry.read_bytes().startswith(b"age-encryption.org/v1")

    again = e2e.run("token", "keep")
    assert again.code == 0 and again.stdout == ran.stdout, again
    assert e2e.token_calls("refresh_token") == 1
    assert status_of(e2e, "keep")["status"] == "ok"  # from this machine's cache
    assert e2e.grant_file("keep").read_bytes() == before
    assert e2e.try_refresh(client, linked.refresh_token) == 200

    # Revoking revokes the access token handed out from the cache too, not only the file's.
    revoked = e2e.run("revoke", "keep")
    assert revoked.code == 0, revoked
    assert fresh.access_revoked and linked.refresh_revoked
    assert cache_entries(e2e) == []


def test_token_refreshes_in_a_read_only_store(e2e, keeping_refresh_tokens):
    """A checkout the user cannot write (no lock sidecar, as after a fresh clone): the lock
    moves to the runtime folder and the refreshed token goes to the cache."""
    client = e2e.auth.add_client("ro-app")
    link_expiring(e2e, "ro", client)
    lock_path_for(e2e.grant_file("ro")).unlink()
    with read_only_folder(e2e.store):
        ran = e2e.run("token", "ro")
    assert ran.code == 0, ran
    assert ran.stdout == e2e.latest(client).access_token + "\n"
    assert e2e.token_calls("refresh_token") == 1
    assert [p.name for p in e2e.store.iterdir()] == ["ro.sops.yaml"]


def test_a_grant_that_cannot_be_written_names_the_read_only_folder(e2e):
    client = e2e.auth.add_client("rorot-app", "rorot-secret")
    link_expiring(e2e, "rorot", client)
    lock_path_for(e2e.grant_file("rorot")).unlink()
    before = e2e.grant_file("rorot").read_bytes()
    with read_only_folder(e2e.store):
        ran = e2e.run("token", "rorot")
    assert ran.code == 1, ran
    assert f"{e2e.grant_file('rorot')}: cannot be written" in ran.stderr
    assert "read-only" in ran.stderr and "Traceback" not in ran.stderr
    assert e2e.grant_file("rorot").read_bytes() == before
    assert [p.name for p in e2e.store.iterdir()] == ["rorot.sops.yaml"]


def test_apply_plans_and_performs_refresh_for_due_grants(e2e):
    auth = e2e.auth
    lifetimes(auth, {"due-app": 1})
    due = auth.add_client("due-app", "due-secret")
    e2e.declare("due", due)
    e2e.declare("fresh", auth.add_client("fresh-app", "fresh-secret"))
    e2e.write_config()
    assert e2e.run("apply").code == 0
    lifetimes(auth, {})
    time.sleep(1)  # the 1 s token has expired
    before = e2e.grant_file("due").read_bytes()
    untouched = e2e.grant_file("fresh").read_bytes()

    (action,) = plan_of(e2e)
    assert action["name"] == "due" and action["action"] == "refresh"
    assert action["reason"].startswith("access token expire")

    ran = e2e.run("apply")
    assert ran.code == 0, ran
    assert "due: refresh: done: refreshed, expires " in ran.stderr
    assert e2e.token_calls("refresh_token") == 1
    assert e2e.grant_file("due").read_bytes() != before  # rotated
    assert e2e.grant_file("fresh").read_bytes() == untouched
    assert e2e.run("plan", "--exit-code").code == 0


# --- 6. revocation -----------------------------------------------------------------------------


def revocations(auth) -> list[str]:
    """The token_type_hint of every RFC 7009 request the server received."""
    return [r.form.get("token_type_hint", [""])[0] for r in auth.requests if r.path == "/revoke"]


def declare_one_per_method(e2e, prefix: str) -> dict:
    clients = {}
    for name, method in METHODS.items():
        secret = None if method == "none" else f"{prefix}-{name}-secret"
        clients[name] = e2e.auth.add_client(f"{prefix}-{name}", secret, auth_method=method)
        e2e.declare(f"{prefix}-{name}", clients[name])
    return clients


def test_revoke_revokes_at_the_provider_and_deletes(e2e):
    auth = e2e.auth
    client = auth.add_client("gone-app", "gone-secret")
    e2e.declare("gone", client)
    e2e.write_config()
    assert e2e.run("link", "gone").code == 0
    issued = e2e.latest(client)

    ran = e2e.run("revoke", "gone")
    assert ran.code == 0, ran
    assert ran.stdout == "gone: revoked and deleted\n"
    assert revocations(auth) == ["refresh_token", "access_token"]
    assert issued.refresh_revoked and issued.access_revoked
    assert not e2e.grant_file("gone").exists()
    assert e2e.try_refresh(client, issued.refresh_token) == 400


def test_apply_prune_revokes_undeclared_grants(e2e):
    auth = e2e.auth
    clients = declare_one_per_method(e2e, "old")
    e2e.declare("kept", auth.add_client("kept-app", "kept-secret"))
    e2e.write_config()
    assert e2e.run("apply").code == 0
    issued = {name: e2e.latest(client) for name, client in clients.items()}
    kept = e2e.grant_file("kept").read_bytes()

    for name in METHODS:
        e2e.undeclare(f"old-{name}")
    e2e.write_config()
    plain = e2e.run("apply")
    assert plain.code == 0 and "apply --prune" in plain.stderr, plain
    assert revocations(auth) == []

    ran = e2e.run("apply", "--prune")
    assert ran.code == 0, ran
    for name, client in clients.items():
        assert f"old-{name}: prune: done: revoked and deleted" in ran.stderr
        assert issued[name].refresh_revoked
        assert not e2e.grant_file(f"old-{name}").exists()
        assert e2e.try_refresh(client, issued[name].refresh_token) == 400
    assert e2e.grant_file("kept").read_bytes() == kept
    assert revocations(auth)[::2] == ["refresh_token"] * 3  # then each access token


def test_revoke_without_a_revocation_endpoint_needs_force(e2e):
    auth = e2e.auth
    client = auth.add_client("norev-app", "norev-secret")
    e2e.declare("norev", client, revocation=False)
    e2e.write_config()
    assert e2e.run("link", "norev").code == 0
    before = e2e.grant_file("norev").read_bytes()

    refused = e2e.run("revoke", "norev")
    assert refused.code == 1, refused
    assert "no revocation endpoint" in refused.stderr and "--force" in refused.stderr
    assert "Nothing was deleted" in refused.stderr
    assert e2e.grant_file("norev").read_bytes() == before

    forced = e2e.run("revoke", "norev", "--force")
    assert forced.code == 0, forced
    assert "norev: deleted; not revoked at the provider" in forced.stdout
    assert not e2e.grant_file("norev").exists()
    assert revocations(auth) == []


# --- 7. invalid_grant → needs-relink -----------------------------------------------------------


def test_invalid_grant_marks_needs_relink_and_stops_calling(e2e):
    auth = e2e.auth
    client = auth.add_client("rev-app", "rev-secret")
    link_expiring(e2e, "api", client)
    e2e.revoke_behind_our_back(client, e2e.latest(client).refresh_token)

    ran = e2e.run("token", "api")
    assert ran.code == 1, ran
    assert ran.stdout == ""
    assert "run `reconcile link api`" in ran.stderr
    assert "The refresh token has been revoked." in ran.stderr  # the provider's description
    assert "Traceback" not in ran.stderr
    assert e2e.token_calls("refresh_token") == 1
    text = e2e.grant_file("api").read_text()
    assert "status: needs-relink\n" in text
    assert "The refresh token has been revoked." in text  # status_reason, plaintext

    assert status_of(e2e, "api")["status"] == "needs-relink"
    again = e2e.run("token", "api")
    assert again.code == 1 and "reconcile link api" in again.stderr, again
    assert e2e.token_calls("refresh_token") == 1  # no further call to the token endpoint
    (action,) = plan_of(e2e)
    assert action["action"] == "relink" and "revoked" in action["reason"]

    # Linking again recovers (with -v: details, and still no secret on stderr).
    assert e2e.run("link", "api", "-v").code == 0
    assert "status: ok\n" in e2e.grant_file("api").read_text()
    assert e2e.token_calls("refresh_token") == 1


# --- 8. denied consent, link timeout -----------------------------------------------------------


def test_denied_consent_writes_nothing(e2e):
    auth = e2e.auth
    auth.consent = "deny"
    e2e.declare("nope", auth.add_client("nope-app", "nope-secret"))
    e2e.write_config()

    ran = e2e.run("link", "nope")
    assert ran.code == 1, ran
    assert "denied" in ran.stderr and "access_denied" in ran.stderr
    assert "Nothing was stored" in ran.stderr and "Traceback" not in ran.stderr
    assert not e2e.grant_file("nope").exists()
    (visit,) = e2e.visits(1)
    assert visit["status"] == 400 and visit["title"] == "Linking nope failed"
    assert sum(auth.token_calls.values()) == 0

    applied = e2e.run("apply")
    assert applied.code == 1 and "nope: link: failed" in applied.stderr, applied
    assert not e2e.grant_file("nope").exists()


def test_link_timeout_writes_nothing(e2e):
    auth = e2e.auth
    e2e.declare("slow", auth.add_client("slow-app", "slow-secret"))
    e2e.write_config()

    started = time.monotonic()
    ran = e2e.run("link", "slow", "--link-timeout", "1", env={"E2E_BROWSER_MODE": "ignore"})
    assert ran.code == 1, ran
    assert time.monotonic() - started < 15
    assert "no answer from the browser within 1 s" in ran.stderr
    assert "nothing was stored" in ran.stderr and "Traceback" not in ran.stderr
    assert not e2e.store.exists() or not list(e2e.store.iterdir())
    (visit,) = e2e.visits(1)
    assert visit["mode"] == "ignore" and visit["opened"] == "/authorize"
    assert sum(auth.token_calls.values()) == 0


# --- 9. scope drift ----------------------------------------------------------------------------


def test_scope_drift_relinks_with_the_union_of_scopes(e2e):
    auth = e2e.auth
    client = auth.add_client("drift-app", "drift-secret")
    e2e.declare("drift", client, scopes=("read", "admin"))
    e2e.write_config()
    assert e2e.run("apply").code == 0

    e2e.declare("drift", client, scopes=("read", "write"))
    e2e.write_config()
    plan = e2e.run("plan", "-o", "json")
    assert plan.code == 0, plan
    assert json.loads(plan.stdout)["actions"] == [
        {"name": "drift", "action": "relink", "reason": "scopes not granted: write"}
    ]

    ran = e2e.run("apply")
    assert ran.code == 0, ran
    assert "drift: relink: done" in ran.stderr
    second = [r for r in auth.requests if r.path == "/authorize"][-1]
    assert second.query["scope"][0].split() == ["read", "write", "admin"]
    assert e2e.latest(client).scope.split() == ["read", "write", "admin"]
    text = e2e.grant_file("drift").read_text()
    assert "granted_scopes:\n    - read\n    - write\n    - admin\n" in text
    check = e2e.run("plan", "--exit-code")
    assert check.code == 0, check


# --- 11. the leak check itself -----------------------------------------------------------------


def test_the_leak_check_finds_a_planted_token(e2e):
    """The check that ends every test here is not vacuous: a token on stderr, in a file or on
    a command line is caught. (All other tests pass it with real flows, `-v` included.)"""
    import subprocess
    import sys

    client = e2e.auth.add_client("leak-app", "leak-secret")
    e2e.declare("leak", client)
    e2e.write_config()
    ran = e2e.run("link", "leak", "-v")
    assert ran.code == 0, ran
    e2e.check_leaks()  # clean so far
    token = e2e.latest(client).refresh_token

    e2e.runs.append(cli_support.Ran(("status",), 0, "", f"oops {token}\n"))
    with pytest.raises(AssertionError, match="stderr"):
        e2e.check_leaks()
    e2e.runs.pop()

    planted = e2e.home / ".cache" / "somewhere.log"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text(token)
    with pytest.raises(AssertionError, match="plaintext"):
        e2e.check_leaks()
    planted.unlink()

    e2e.sampler.seen.clear()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", token],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            token.encode() in line for line in e2e.sampler.seen
        ):
            time.sleep(0.02)
        with pytest.raises(AssertionError, match="command line"):
            e2e.check_leaks()
    finally:
        child.communicate(b"")
    e2e.sampler.seen.clear()


def test_apply_refreshes_what_is_due_while_another_reference_is_unset(e2e):
    """SPEC §3: one unresolvable reference (an unset ``env:``) fails its own grant only."""
    client = e2e.auth.add_client("due-app", "due-secret")
    link_expiring(e2e, "due", client)
    e2e.config["secrets"] = {"openai": {"value": "env:E2E_UNSET_OPENAI_KEY"}}
    e2e.write_config()

    ran = e2e.run("apply")
    assert ran.code == 1, ran
    assert e2e.token_calls("refresh_token") == 1
    assert "openai" in ran.stderr and "E2E_UNSET_OPENAI_KEY" in ran.stderr
    assert e2e.sops_decrypt("due")["access_token"] == e2e.latest(client).access_token
    assert not e2e.grant_file("openai").exists()
