"""The refresh path of `apply`: a grant the scan already decrypted is not read again under the
lock while its file is unchanged (but always is once it changed, and the token cache is always
looked at again); refreshes run on worker threads, a refresh waits for another action on the
same grant, and closing the outcomes starts no further refresh."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from reconciler import apply, config, operations
from reconciler.apply import lifecycle, runner
from reconciler.custody import Held
from reconciler.custody.files import FileCustody
from reconciler.model import Grant, Secret
from reconciler.plan import plan as make_plan
from reconciler.vault import cache, store
from reconciler.vault.sops.keys import load_identities
from reconciler.vault.store import grant_path, read_grant, write_grant
from tests.support import new_identity


class Provider:
    """A token endpoint per grant (``/token/<name>``) that rotates refresh tokens: each one
    works once. Records every refresh token presented."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: dict[str, str] = {}
        self.presented: list[tuple[str, str]] = []
        self.hold = 0.0
        self.serial = 0

    def answer(self, name: str, form: dict[str, str]) -> tuple[int, dict]:
        time.sleep(self.hold)
        with self.lock:
            token = form.get("refresh_token", "")
            self.presented.append((name, token))
            if token != self.current.get(name):
                return 400, {"error": "invalid_grant", "error_description": "used or unknown"}
            self.serial += 1
            self.current[name] = f"rt-{name}-{self.serial}"
            return 200, {
                "access_token": f"at-{name}-{self.serial}",
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": self.current[name],
            }


@pytest.fixture
def provider():
    state = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            form = {k: v[0] for k, v in parse_qs(body).items()}
            status, document = state.answer(self.path.rsplit("/", 1)[-1], form)
            data = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


class Project:
    def __init__(self, root: Path, provider: Provider) -> None:
        self.root = root
        self.provider = provider
        self.key_file = root / "keys.txt"
        self.recipient = new_identity(self.key_file)
        self.environ = {
            "SOPS_AGE_KEY_FILE": str(self.key_file),
            "HOME": str(root / "home"),
            "XDG_CACHE_HOME": str(root / "home" / ".cache"),
        }
        self.identities = load_identities(self.environ, required=True)
        self.config = root / "providers.yaml"
        self.store = root / "secrets"

    def declare(self, names: list[str], recipients: list[str] | None = None) -> None:
        lines = ["version: 1", "store:", "  dir: secrets"]
        lines.append(f"  recipients: [{', '.join(recipients or [self.recipient])}]")
        lines.append("providers:")
        for name in names:
            lines += [
                f"  {name}:",
                "    client_id: app",
                f"    token_endpoint: {self.provider.base}/token/{name}",
                f"    authorization_endpoint: {self.provider.base}/authorize",
                "    scopes: [read]",
            ]
        self.config.write_text("\n".join(lines) + "\n")

    def desired(self):
        return config.load(self.config, environ=self.environ, resolve_values=False)

    def link(self, name: str, recipients: list[str] | None = None) -> Path:
        """A grant file whose access token expired: due for a refresh."""
        now = operations.utcnow()
        token = f"rt-{name}-linked"
        self.provider.current[name] = token
        grant = Grant(
            name=name,
            kind="oauth2",
            flow="authorization_code",
            client_id="app",
            scopes=("read",),
            granted_scopes=("read",),
            token_type="Bearer",
            expires_at=now - timedelta(minutes=5),
            obtained_at=now - timedelta(hours=1),
            access_token=Secret(f"at-{name}-linked"),
            refresh_token=Secret(token),
        )
        path = grant_path(self.store, name)
        write_grant(path, grant, recipients or [self.recipient])
        return path

    def refresh(self, name: str, **kwargs) -> Grant:
        return lifecycle.refresh(
            self.desired(),
            name,
            operations.utcnow(),
            self.identities,
            environ=self.environ,
            **kwargs,
        )


@pytest.fixture
def project(tmp_path: Path, provider: Provider) -> Project:
    return Project(tmp_path, provider)


@pytest.fixture
def reads(monkeypatch) -> list[Path]:
    """Every grant file read with its secrets (the re-read under the lock is one)."""
    seen: list[Path] = []
    original = store.read_grant

    def counting(path, identities):
        if identities is not None:
            seen.append(Path(path))
        return original(path, identities)

    monkeypatch.setattr(store, "read_grant", counting)
    return seen


def scanned(project: Project, name: str) -> Held:
    """What a scan leaves: the decrypted grant with its basis (the file's fingerprint, taken
    before the read)."""
    return FileCustody(project.desired(), project.identities, project.environ).read(name)


# --- lifecycle.refresh -----------------------------------------------------------------------


def test_a_known_grant_is_not_read_again_while_its_file_is_unchanged(project, reads):
    project.declare(["api"])
    project.link("api")
    known = scanned(project, "api")
    reads.clear()  # the scan's own read

    fresh = project.refresh("api", known=known)

    assert reads == []
    assert project.provider.presented == [("api", "rt-api-linked")]
    assert fresh.access_token == Secret("at-api-1")
    on_disk = read_grant(grant_path(project.store, "api"), project.identities)
    assert on_disk.refresh_token == Secret("rt-api-1")  # rotated: written durably


def test_a_grant_file_replaced_since_it_was_read_is_read_again(project, reads):
    """Another process rotated the refresh token after our read: refreshing with the token we
    hold would be `invalid_grant` (and mark the grant needs-relink)."""
    project.declare(["api"])
    path = project.link("api")
    known = scanned(project, "api")
    reads.clear()  # the scan's own read
    elsewhere = read_grant(path, project.identities)
    project.provider.current["api"] = "rt-api-elsewhere"
    write_grant(
        path, _with(elsewhere, refresh_token=Secret("rt-api-elsewhere")), [project.recipient]
    )

    fresh = project.refresh("api", known=known)

    assert reads == [path]
    assert project.provider.presented == [("api", "rt-api-elsewhere")]
    assert fresh.status == "ok" and fresh.access_token == Secret("at-api-1")


def test_the_token_cache_is_looked_at_again_under_the_lock(project, reads):
    """Another process refreshed without a new refresh token: only the cache changed."""
    project.declare(["api"])
    path = project.link("api")
    known = scanned(project, "api")
    reads.clear()  # the scan's own read
    now = operations.utcnow()
    entry = cache.CachedToken(
        Secret("at-from-another-process"),
        "Bearer",
        now + timedelta(hours=1),
        now,
        now + timedelta(minutes=59),
    )
    cache.write(project.config, "api", path, entry, project.identities, project.environ)

    fresh = project.refresh("api", known=known)

    assert fresh.access_token == Secret("at-from-another-process")
    assert project.provider.presented == []  # not due any more: no refresh
    assert reads == []


def test_without_a_known_grant_the_file_is_read_under_the_lock(project, reads):
    project.declare(["api"])
    path = project.link("api")
    known = scanned(project, "api")
    reads.clear()  # the scan's own read

    project.refresh("api")  # the callers other than apply: unchanged
    assert reads == [path]
    reads.clear()
    unvouched = Held("api", known.grant, basis=None)
    project.refresh("api", known=unvouched, force=True)
    assert reads == [path]  # a grant without a basis vouching for it is not trusted


def _with(grant: Grant, **changes) -> Grant:
    from dataclasses import replace

    return replace(grant, **changes)


# --- apply ---------------------------------------------------------------------------------------


def context_for(project: Project, *, known_grants: bool = True):
    desired = project.desired()
    custody = FileCustody(desired, project.identities, project.environ)
    actual, known = custody.scan()
    now = operations.utcnow()
    context = apply.Context(
        desired,
        actual,
        project.identities,
        now,
        environ=project.environ,
        known=known if known_grants else None,
    )
    return make_plan(desired, actual, now), context


def test_apply_refreshes_on_workers_without_reading_unchanged_grants_again(project, reads):
    names = [f"g{index}" for index in range(6)]
    project.declare(names)
    for name in names:
        project.link(name)
    plan, context = context_for(project)
    reads.clear()
    threads: set[str] = set()
    refresh = runner._HANDLERS["refresh"]

    def recorded(action, context):
        threads.add(threading.current_thread().name)
        return refresh(action, context)

    project.provider.hold = 0.05
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(runner._HANDLERS, "refresh", recorded)
        outcomes = list(apply.apply(plan, context))

    assert sorted(o.action.name for o in outcomes) == names
    assert {o.result for o in outcomes} == {"done"}, [o.message for o in outcomes]
    assert reads == []
    assert sorted(project.provider.presented) == [(n, f"rt-{n}-linked") for n in names]
    assert threading.current_thread().name not in threads
    assert len(threads) > 1


def test_a_refresh_waits_for_the_rekey_of_its_grant(project, reads):
    """Plan order for one grant is rekey, then refresh: running them at once could let the
    rekey write back the refresh token the refresh just rotated away."""
    second = new_identity(project.root / "second.txt")
    both = [project.recipient, second]
    project.declare(["a", "b", "c"], recipients=both)
    project.link("a")  # to one recipient: rekey, then refresh
    project.link("b", recipients=both)
    project.link("c", recipients=both)
    plan, context = context_for(project)
    assert [(a.name, a.action) for a in plan.actions] == [
        ("a", "rekey"),
        ("a", "refresh"),
        ("b", "refresh"),
        ("c", "refresh"),
    ]
    events: list[tuple[str, str, str]] = []
    handlers = {kind: runner._HANDLERS[kind] for kind in ("rekey", "refresh")}

    def traced(kind):
        def handler(action, context):
            events.append(("start", kind, action.name))
            if kind == "rekey":
                time.sleep(0.2)  # time enough for a refresh started too early to overtake it
            try:
                return handlers[kind](action, context)
            finally:
                events.append(("end", kind, action.name))

        return handler

    with pytest.MonkeyPatch.context() as patch:
        for kind in handlers:
            patch.setitem(runner._HANDLERS, kind, traced(kind))
        outcomes = list(apply.apply(plan, context))

    assert {o.result for o in outcomes} == {"done"}, [o.message for o in outcomes]
    assert len(outcomes) == 4
    assert events.index(("start", "refresh", "a")) > events.index(("end", "rekey", "a"))
    grant = read_grant(grant_path(project.store, "a"), project.identities)
    assert sorted(grant.recipients) == sorted(both)
    assert grant.refresh_token == Secret(project.provider.current["a"])
    # The rekey read "a", and its refresh read it again (the rekey changed the file); the
    # unchanged "b" and "c" were not read again.
    assert sorted(reads) == [grant_path(project.store, "a")] * 2


def test_closing_the_outcomes_starts_no_further_refresh(project):
    names = [f"g{index:02d}" for index in range(30)]
    project.declare(names)
    for name in names:
        project.link(name)
    plan, context = context_for(project)
    project.provider.hold = 0.2

    outcomes = apply.apply(plan, context)
    first = next(outcomes)
    started = time.monotonic()
    outcomes.close()
    assert time.monotonic() - started < 1.0  # does not wait for the refreshes under way
    assert first.result == "done"
    for thread in threading.enumerate():  # the refreshes under way finish
        if thread.name.startswith("reconcile-refresh"):
            thread.join(10)
    called = {name for name, _ in project.provider.presented}
    assert len(called) <= 1 + 2 * runner.REFRESH_WORKERS < len(names)
    # Every grant still holds the refresh token the provider accepts now.
    for name in names:
        grant = read_grant(grant_path(project.store, name), project.identities)
        assert grant.refresh_token == Secret(project.provider.current[name]), name


def test_a_rekey_waits_for_a_refresh_under_way_elsewhere(project):
    """A rekey reads and rewrites the grant under its lock: a refresh in another process that
    rotates the refresh token meanwhile is neither overwritten nor lost."""
    from reconciler.vault.files import file_lock

    second = new_identity(project.root / "second.txt")
    both = [project.recipient, second]
    project.declare(["a"], recipients=both)
    path = project.link("a")  # to one recipient
    linked = read_grant(path, project.identities)
    write_grant(path, replace(linked, expires_at=linked.obtained_at + timedelta(days=1)),
                [project.recipient])  # fmt: skip
    plan, context = context_for(project)
    assert [(a.name, a.action) for a in plan.actions] == [("a", "rekey")]
    holding, rotated = threading.Event(), Secret("rt-a-rotated-elsewhere")

    def refresh_elsewhere() -> None:
        with file_lock(path):
            holding.set()
            time.sleep(0.3)  # the rekey starts meanwhile
            grant = read_grant(path, project.identities)
            write_grant(path, replace(grant, refresh_token=rotated), [project.recipient])

    other = threading.Thread(target=refresh_elsewhere)
    other.start()
    assert holding.wait(5)
    outcomes = list(apply.apply(plan, context))
    other.join()

    assert [o.result for o in outcomes] == ["done"], [o.message for o in outcomes]
    grant = read_grant(path, project.identities)
    assert grant.refresh_token == rotated
    assert sorted(grant.recipients) == sorted(both)
