"""The custody contract: what every backend (grant files, etcd) must do. Each test runs
against every implementation in ``IMPLEMENTATIONS``; a new backend adds itself there. The etcd
one needs a real etcd member (marked ``cluster``)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.custody import Held, StaleState
from reconciler.custody.etcd import EtcdCustody
from reconciler.custody.files import FileCustody
from reconciler.model import Coordination, Desired, Grant, Provider, Secret
from reconciler.vault.sops.keys import load_identities
from tests.support import new_identity

NOW = datetime.now(UTC).replace(microsecond=0)
IMPLEMENTATIONS = ["files", pytest.param("etcd", marks=pytest.mark.cluster)]


class Backend:
    """One store (a config, its grant state, this machine's identity) and its custodies."""

    def __init__(self, kind: str, root: Path, coordination: Coordination | None = None) -> None:
        self.kind = kind
        key_file = root / "keys.txt"
        recipient = new_identity(key_file)
        self.environ = {
            "SOPS_AGE_KEY_FILE": str(key_file),
            "XDG_CACHE_HOME": str(root / "cache"),
            "HOME": str(root),
        }
        self.identities = load_identities(self.environ, required=True)
        config = root / "providers.yaml"
        config.write_text("version: 1\n")
        self.desired = Desired(
            path=config,
            store_dir=root / "secrets",
            recipients={"api": (recipient,)},
            refresh_before=timedelta(minutes=5),
            keepalive=timedelta(days=7),
            providers={"api": Provider(name="api", client_id="cid")},
            secrets={},
            coordination=coordination,
        )

    def custody(self):
        """A fresh custody, as another process of this machine would open it."""
        if self.kind == "files":
            return FileCustody(self.desired, self.identities, self.environ)
        if self.kind == "etcd":
            return EtcdCustody(self.desired, self.identities, self.environ)
        raise AssertionError(self.kind)


@pytest.fixture(params=IMPLEMENTATIONS)
def backend(request, tmp_path) -> Backend:
    coordination = None
    if request.param == "etcd":
        server, namespace = request.getfixturevalue("etcd")
        coordination = Coordination(
            endpoints=tuple(server.endpoints), namespace=namespace, lease=timedelta(seconds=5)
        )
    return Backend(request.param, tmp_path, coordination)


def grant(refresh: str = "rt-1", access: str = "at-1", **fields) -> Grant:
    values = dict(
        name="api",
        kind="oauth2",
        flow="authorization_code",
        client_id="cid",
        scopes=("read",),
        granted_scopes=("read",),
        token_type="Bearer",
        access_token=Secret(access),
        refresh_token=Secret(refresh),
        obtained_at=NOW,
        expires_at=NOW + timedelta(hours=1),
    )
    values.update(fields)
    return Grant(**values)


def linked(backend: Backend, **fields) -> Held:
    custody = backend.custody()
    with custody.single_flight("api") as held:
        return custody.commit(held, grant(**fields), durable=True)


def test_a_grant_never_committed_reads_as_none(backend):
    held = backend.custody().read("api")
    assert held.grant is None and not held.recorded


def test_a_durable_commit_is_what_the_next_reader_sees(backend):
    linked(backend)
    seen = backend.custody().read("api").grant
    assert seen is not None
    assert seen.refresh_token == Secret("rt-1") and seen.access_token == Secret("at-1")
    assert seen.granted_scopes == ("read",)


def test_a_fast_commit_changes_the_token_and_keeps_the_durable_state(backend):
    linked(backend)
    custody = backend.custody()
    with custody.single_flight("api") as held:
        assert held.grant is not None
        fresher = grant(access="at-2", obtained_at=NOW + timedelta(minutes=1))
        custody.commit(held, fresher, durable=False)
    seen = backend.custody().read("api")
    assert seen.grant is not None and seen.recorded
    assert seen.grant.access_token == Secret("at-2")
    assert seen.grant.refresh_token == Secret("rt-1")


def test_a_commit_on_a_stale_basis_is_refused_and_changes_nothing(backend):
    linked(backend)
    early = backend.custody().read("api")
    linked(backend, refresh="rt-2", access="at-2")  # another writer gets in first
    with pytest.raises(StaleState):
        backend.custody().commit(early, grant(refresh="rt-stale"), durable=True)
    seen = backend.custody().read("api").grant
    assert seen is not None and seen.refresh_token == Secret("rt-2")


def test_single_flight_is_exclusive_and_the_second_reader_sees_the_first_commit(backend):
    linked(backend)
    inside = threading.Event()
    seen: list[Secret | None] = []

    def first() -> None:
        custody = backend.custody()
        with custody.single_flight("api") as held:
            inside.set()
            time.sleep(0.3)  # the other caller must wait, not read the old state
            custody.commit(held, grant(refresh="rt-2", access="at-2"), durable=True)

    def second() -> None:
        inside.wait(5)
        with backend.custody().single_flight("api") as held:
            assert held.grant is not None
            seen.append(held.grant.refresh_token)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [Secret("rt-2")]


def test_known_state_is_used_only_while_it_is_current(backend):
    known = linked(backend)
    custody = backend.custody()
    with custody.single_flight("api", known) as held:
        assert held.grant is not None and held.grant.refresh_token == Secret("rt-1")
    linked(backend, refresh="rt-2", access="at-2")
    with custody.single_flight("api", known) as held:  # known is stale now
        assert held.grant is not None and held.grant.refresh_token == Secret("rt-2")


def test_a_status_change_drops_the_fast_copy(backend):
    linked(backend)
    custody = backend.custody()
    with custody.single_flight("api") as held:
        assert held.grant is not None
        marked = grant(status="needs-relink", status_reason="revoked")
        custody.commit(held, marked, durable=True)
    seen = backend.custody().read("api")
    assert seen.grant is not None and seen.grant.status == "needs-relink"
    assert not seen.recorded, "a grant that needs relinking hands out no cached token"


def test_a_backoff_is_recorded_with_the_token(backend):
    linked(backend)
    custody = backend.custody()
    until = NOW + timedelta(minutes=1)
    with custody.single_flight("api") as held:
        assert held.grant is not None
        custody.commit(held, held.grant, durable=False, retry_at=until)
    seen = backend.custody().read("api")
    assert seen.retry_at == until and seen.backing_off(NOW) and not seen.backing_off(until)


def test_delete_removes_the_grant(backend):
    linked(backend)
    backend.custody().delete("api")
    assert backend.custody().read("api").grant is None


def test_changes_reports_another_writers_commit(backend):
    linked(backend)
    watcher = backend.custody()
    stop = threading.Event()
    names: list[str] = []

    def watch() -> None:
        for name in watcher.changes(stop):
            names.append(name)
            stop.set()

    thread = threading.Thread(target=watch)
    thread.start()
    custody = backend.custody()
    deadline = time.monotonic() + 10
    serial = 0
    while not names and time.monotonic() < deadline:  # until the watch is set up and sees one
        serial += 1
        with custody.single_flight("api") as held:
            custody.commit(held, grant(access=f"at-{serial}"), durable=False)
        thread.join(0.5)
    stop.set()
    thread.join(5)
    assert names == ["api"]
