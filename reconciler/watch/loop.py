"""`reconcile --watch`: apply, then apply again whenever an input changes or a deadline comes.

The loop is the CLI's apply (``operations.load_state`` → ``make_plan`` → ``run_apply``) run
again and again; nothing here decides what to do to a grant.

**Inputs** (``watched``) are every file a reconcile reads. Their folders are watched (not
recursively) with watchfiles, because editors and ``sops`` replace files by renaming, which a
watch on the file itself would lose.

**When to reconcile** is decided by content, not by events: the inputs are fingerprinted
(a hash of each file) *before* each load, and a cycle ends with a pass that found nothing to
do; its fingerprint is what the grant files now reflect. An event batch whose fingerprint
equals it — the echo of our own writes, a lock or temp file, a `touch` — costs a few file
reads and does nothing, so the watcher never loops on its own writes. An edit made while a
cycle runs shows up as a difference and is reconciled next. The inputs are also fingerprinted
every few seconds without any event, in case one was lost.

**Debounce.** watchfiles yields a batch once no new event arrived for ``step`` ms (or after
``debounce`` ms in all). One editor save (write a temp file, rename it over) takes well under
a millisecond, so a short step groups it into one batch and keeps edit-to-applied latency
low (``bench/watch_latency.py``). A save that still lands in two batches is harmless: the
first shows an intermediate state, which a half-written config turns into an error only if
it is still the same after ``SETTLE_SECONDS``.

**Rekeys** are reported, never carried out: a `git pull` that replaced the recipients in
``.sops.yaml`` must not re-encrypt every grant to someone else's keys on its own.

**Bad edits** (invalid YAML, schema errors, unresolvable references, an unreadable
``.sops.yaml``) print the error and change nothing until the inputs change again. The process
never dies on one.

**Election.** With ``coordination:`` declared, one watcher among all machines is elected
(``operations.leads``) to refresh grants ahead of expiry; the others leave `refresh` actions
to it (tokens are still refreshed on demand by `reconcile token` and the runtime) and campaign
again every lease, so a watcher that stops or dies is replaced.

**Timer.** The next wake-up is the earliest refresh deadline of the plan's inputs: for every
OAuth grant that is ``ok``, ``plan.schedule.next_refresh`` (the rule the plan's ``refresh``
follows). Failed actions are held
back with exponential backoff; a hold ends early when that grant's inputs change.

**Links** that need a person run in a worker thread, one per grant; the browser is opened once
and the grant is skipped while the flow is pending, so the other grants keep being served.

**Signals.** SIGINT and SIGTERM let the action in progress finish (writes are atomic anyway),
then the loop stops and ``Watcher.run`` returns 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import watchfiles

from .. import operations
from ..errors import message_of
from ..model import Action, Actual, Desired, Plan
from ..plan.schedule import next_refresh
from .inputs import Inputs, Surveyor, ignored, relative

#: watchfiles ``step``: a batch is yielded once no new event came for this long (ms); an
#: edit is seen after 1-2 steps. Measured save-to-written medians (bench/watch_latency.py,
#: 5 secrets, ext4): step 5: ~26 ms, 10: ~30 ms, 25: ~52 ms, 50 (watchfiles' default):
#: ~93 ms. 10 ms still groups every editor's save sequence (they take well under 1 ms).
STEP_MS = 10
#: watchfiles ``debounce``: the longest a batch keeps growing (ms).
DEBOUNCE_MS = 250
#: How often (ms) the loop wakes without events (to check the timer; the first wake after a
#: watcher starts also catches what changed while none was listening).
TICK_MS = 200
#: Seconds between fingerprints taken without any event: a safety net for events the kernel
#: dropped (inotify queue overflow) or watchfiles lost (it clears its set on a timeout).
LOOK_ANYWAY = 5.0
#: A config that fails to load is read again after this long before the error is shown, in
#: case it was caught half-saved.
SETTLE_SECONDS = 0.1
#: Passes of load→plan→apply per cycle before waiting for the next change.
MAX_PASSES = 4
#: Backoff for failed actions, and the hold after a failed or abandoned link flow.
RETRY_FIRST = timedelta(seconds=30)
RETRY_MAX = timedelta(minutes=15)
LINK_RETRY = timedelta(hours=1)
#: When a deadline has passed and yet nothing could be done, look again this much later.
TIMER_FLOOR = timedelta(seconds=5)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    """One thing to tell the user: an outcome, an error, a link started, a state change.

    ``level`` is ``info`` (shown unless ``-q``), ``error`` (always shown) or ``debug``
    (shown with ``-v``); with ``-o json`` every event is one JSON line."""

    kind: str
    message: str
    level: str = "info"
    fields: Mapping[str, object] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The line shown to people, when it differs from ``message``.
    text: str | None = None

    @property
    def line(self) -> str:
        return self.message if self.text is None else self.text

    def to_json(self) -> dict:
        return {
            "event": self.kind,
            **self.fields,
            "message": self.message,
            "at": self.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }


Report = Callable[[Event], None]


def _outcome_event(outcome) -> Event:
    action = outcome.action
    return Event(
        "outcome",
        outcome.message,
        level="error" if outcome.result == "failed" else "info",
        fields={
            "name": action.name,
            "action": action.action,
            "reason": action.reason,
            "result": outcome.result,
        },
        text=f"{action.name}: {action.action}: {outcome.result}: {outcome.message}",
    )


# --------------------------------------------------------------------------- the timer


def next_wakeup(desired: Desired, actual: Actual) -> dict[str, datetime]:
    """When each OAuth grant next becomes due for a refresh (the plan's `refresh` rule)."""
    due: dict[str, datetime] = {}
    for name in desired.providers:
        grant = actual.grants.get(name)
        if grant is None or grant.kind != "oauth2" or grant.status != "ok":
            continue
        moment = next_refresh(grant, desired.refresh_before, desired.keepalive)
        if moment is not None:
            due[name] = moment
    return due


# --------------------------------------------------------------------------- the loop


@dataclass
class _Hold:
    """Don't retry ``name`` before ``until`` (None: until its inputs change) while its
    inputs are still ``key``."""

    key: tuple
    until: datetime | None
    failures: int = 1

    def active(self, key: tuple, now: datetime) -> bool:
        return key == self.key and (self.until is None or now < self.until)


def _now() -> datetime:

    return operations.utcnow()


class Watcher:
    def __init__(
        self,
        config_path: Path,
        report: Report,
        *,
        prune: bool = False,
        link: bool = True,
        browser=None,
        device: bool = False,
        environ: Mapping[str, str] | None = None,
        step_ms: int = STEP_MS,
        debounce_ms: int = DEBOUNCE_MS,
    ) -> None:
        self.config_path = Path(os.path.abspath(config_path))
        self.base = self.config_path.parent
        self.prune = prune
        self.link = link
        self.browser = browser
        self.device = device
        self.environ = environ
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self.stop = threading.Event()
        self._report_lock = threading.Lock()
        self._report = report
        self._lock = threading.Lock()
        self.pending: set[str] = set()
        self.holds: dict[str, _Hold] = {}
        #: The inputs the grant files reflect: the fingerprint of the last finished cycle.
        self.recorded: Inputs | None = None
        self.wake: datetime | None = None
        self._poke = threading.Event()
        self._survey = Surveyor(self.config_path, os.environ if environ is None else environ)
        self._shown: dict[str, object] = {}
        #: With coordination: another watcher is elected to refresh ahead of expiry.
        self._standby = False

    # ----------------------------------------------------------------- reporting

    def report(self, event: Event) -> None:
        # A broken pipe on stdout must not stop the watcher.
        with self._report_lock, contextlib.suppress(Exception):
            self._report(event)

    def _show_once(self, key: str, value: object, event: Event | None) -> None:
        """Report ``event`` only when ``value`` differs from what was shown under ``key``."""
        if self._shown.get(key) != value:
            self._shown[key] = value
            if event is not None:
                self.report(event)

    # ----------------------------------------------------------------- main loop

    def run(self) -> int:
        """Watch until SIGINT/SIGTERM; 0 then, 1 when the config file does not exist at all."""
        if not self.config_path.is_file():
            self.report(
                Event(
                    "error",
                    f"{self.config_path} does not exist; run `reconcile init` or pass -f PATH",
                    level="error",
                )
            )
            return 1
        with _stop_on_signals(self.stop):
            self.cycle("start")
            self._loop()
        self.report(Event("stopped", "stopped", fields={}))

        operations.flush_notifications()
        return 0

    def _loop(self) -> None:
        force_polling = None
        folders = (self.recorded or self._survey()).folders
        looked = time.monotonic()
        shown_folders: frozenset[str] | None = None
        while not self.stop.is_set():
            restarted = True
            try:
                batches = watchfiles.watch(
                    *sorted(folders),
                    watch_filter=lambda change, path: not ignored(change, path),
                    debounce=self.debounce_ms,
                    step=self.step_ms,
                    stop_event=self.stop,
                    rust_timeout=TICK_MS,
                    yield_on_timeout=True,
                    raise_interrupt=False,
                    recursive=False,
                    force_polling=force_polling,
                )
                for changes in batches:
                    if restarted and folders != shown_folders:
                        # The first yield: the watcher is listening now.
                        shown_folders = folders
                        self.report(
                            Event(
                                "watching",
                                "watching "
                                + ", ".join(relative(Path(f), self.base) for f in sorted(folders))
                                + " for changes (Ctrl-C to stop)",
                                fields={"folders": sorted(folders)},
                            )
                        )
                    if changes or restarted or time.monotonic() - looked >= LOOK_ANYWAY:
                        # Anything may have changed while no watcher was listening.
                        restarted = False
                        looked = time.monotonic()
                        current = self._survey()
                        if not current.same(self.recorded):
                            self.cycle(", ".join(current.changed(self.recorded, self.base)))
                    if self._poke.is_set():
                        self._poke.clear()
                        self.cycle("link finished")
                    if self.wake is not None and _now() >= self.wake and not self.stop.is_set():
                        self.cycle("timer")
                    latest = (self.recorded or self._survey()).folders
                    if latest != folders:
                        folders = latest
                        break  # watch the new set of folders
            except FileNotFoundError:
                # A watched folder vanished between the survey and the watch: look again.
                folders = self._survey().folders
                self.stop.wait(TICK_MS / 1000)
            except Exception as error:  # e.g. the inotify watch limit; never die of it
                if not force_polling:
                    how, force_polling = "polling instead", True
                else:
                    how = "trying again in 5 s"
                    self.stop.wait(5)
                self.report(
                    Event(
                        "error",
                        f"cannot watch for changes ({message_of(error)}); {how}",
                        level="error",
                        fields={"kind": "watch"},
                    )
                )
                folders = self._survey().folders

    # ----------------------------------------------------------------- one cycle

    def cycle(self, trigger: str) -> None:
        """Apply until a pass finds nothing left to do (or MAX_PASSES), like `reconcile apply`
        run again after each apply; record the inputs that pass saw. Never raises."""
        self.report(Event("reconcile", f"reconciling ({trigger})", "debug", {"trigger": trigger}))
        try:
            self._cycle()
        except Exception as error:
            self.report(Event("error", message_of(error), level="error"))
            self.recorded = self._survey()
            self.wake = _now() + RETRY_FIRST

    def _cycle(self) -> None:

        for _ in range(MAX_PASSES):
            if self.stop.is_set():
                return
            inputs = self._survey()
            try:
                state = operations.load_state(self.config_path, environ=self.environ)
            except Exception as error:
                if self._settling(inputs):
                    continue
                self.recorded = inputs
                self.wake = None  # nothing changes, not even refreshes, until it is fixed
                self._config_error(error)
                return
            now = _now()
            plan = operations.make_plan(state, now, prune=self.prune)
            self._show_problems(state, plan)
            actions = self._actionable(plan, inputs, now)
            if not self._elected(state):
                actions = tuple(a for a in actions if a.action != "refresh")
            if not actions:
                self.recorded = inputs
                self.wake = self._next_wake(state, now)
                if self._standby and state.desired.coordination is not None:
                    # Campaign again a lease from now: the elected watcher may have gone.
                    again = now + state.desired.coordination.lease
                    self.wake = again if self.wake is None else min(self.wake, again)
                wake = self.wake.strftime("%Y-%m-%dT%H:%M:%SZ") if self.wake else None
                self.report(
                    Event(
                        "idle",
                        "up to date" + (f"; next refresh check at {wake}" if wake else ""),
                        "debug",
                        {"next_wake": wake, "pending": sorted(self.pending)},
                    )
                )
                return
            interactive = [a for a in actions if self._interactive(state.desired, a)]
            for action in interactive:
                self._start_link(state, action, inputs)
            rest = tuple(a for a in actions if a not in interactive)
            if not rest:
                continue
            outcomes = operations.run_apply(
                state,
                Plan(rest, plan.notes),
                now,
                link=self.link,
                ask_secret=None,
                browser=None,
                device=self.device,
                environ=self.environ,
            )
            for outcome in outcomes:
                self._record(outcome, inputs)
                if self.stop.is_set():
                    outcomes.close()
                    return
        # Still not settled: wait for the next change or deadline rather than spin.
        self.recorded = self._survey()
        self.wake = _now() + TIMER_FLOOR

    def _elected(self, state) -> bool:
        """With ``coordination:``, whether this watcher is the one elected to refresh ahead
        of expiry (SPEC §7); the others leave refreshes to it and to on-demand reads."""
        if state.desired.coordination is None:
            return True
        try:
            elected = operations.leads(state, self.environ)
        except Exception as error:  # the engine away: refreshing would be refused anyway
            self._show_once("election", None, Event("error", message_of(error), "error"))
            elected = False
        if elected != (not self._standby) or "election" not in self._shown:
            self._standby = not elected
            self._shown["election"] = elected
            text = (
                "elected: this watcher refreshes grants ahead of expiry"
                if elected
                else "standby: another watcher refreshes ahead of expiry; grants are "
                "refreshed here on demand only"
            )
            self.report(Event("elected" if elected else "standby", text, fields={}))
        return elected

    def _settling(self, before: Inputs) -> bool:
        """True when the inputs changed during a short wait (a save caught half-way)."""
        if self.stop.wait(SETTLE_SECONDS):
            return False
        return not self._survey().same(before)

    def _config_error(self, error: Exception) -> None:
        message = message_of(error)
        self.report(
            Event(
                "error",
                message,
                level="error",
                fields={"kind": "config"},
                text=f"{message}\n(still watching: nothing changes until this is fixed)",
            )
        )

    def _show_problems(self, state, plan: Plan) -> None:

        for kind, problem in (
            ("unreadable", operations.unreadable_error(state.actual)),
            ("unresolved", operations.unresolved_error(state.desired)),
        ):
            text = str(problem) if problem else None
            event = Event("error", text, level="error", fields={"kind": kind}) if text else None
            self._show_once(kind, text, event)
        rekeys = tuple(a for a in plan.actions if a.action == "rekey")
        pending = (
            "rekey pending, not done while watching (a pulled change may have replaced the "
            "recipients): " + "; ".join(f"{a.name} ({a.reason})" for a in rekeys)
            + ". Check the change, then run `reconcile apply`."
        )  # fmt: skip
        fields = {"names": [a.name for a in rekeys]}
        self._show_once(
            "rekeys", rekeys, Event("rekey", pending, fields=fields) if rekeys else None
        )
        if self._shown.get("notes") != plan.notes:
            self._shown["notes"] = plan.notes
            for note in plan.notes:
                self.report(Event("note", f"note: {note}"))

    def _interactive(self, desired: Desired, action: Action) -> bool:
        if not self.link or action.action not in ("link", "relink"):
            return False
        provider = desired.providers.get(action.name)
        return provider is not None and (self.device or provider.flow != "client_credentials")

    def _key(self, name: str, inputs: Inputs) -> tuple:
        return (inputs.config_key, inputs.grant(name))

    def _actionable(self, plan: Plan, inputs: Inputs, now: datetime) -> tuple[Action, ...]:
        chosen = []
        with self._lock:
            for action in plan.actions:
                if action.name in self.pending or action.action == "rekey":
                    continue  # a rekey only on request: `_show_problems` reports it
                hold = self.holds.get(action.name)
                if hold is not None:
                    key = self._key(action.name, inputs)
                    if hold.active(key, now):
                        continue
                    if hold.key != key:
                        del self.holds[action.name]  # its inputs changed: start afresh
                chosen.append(action)
        return tuple(chosen)

    def _record(self, outcome, inputs: Inputs, *, link: bool = False) -> None:
        name = outcome.action.name
        with self._lock:
            if outcome.result == "done":
                self.holds.pop(name, None)
            elif outcome.result == "pending":
                self.holds[name] = _Hold(self._key(name, inputs), None)
            else:
                previous = self.holds.get(name)
                failures = previous.failures + 1 if previous else 1
                delay = LINK_RETRY if link else min(RETRY_FIRST * 2 ** (failures - 1), RETRY_MAX)
                self.holds[name] = _Hold(self._key(name, inputs), _now() + delay, failures)
        self.report(_outcome_event(outcome))

    def _next_wake(self, state, now: datetime) -> datetime | None:
        times = []
        due = next_wakeup(state.desired, state.actual)
        with self._lock:
            for name, when in due.items():
                if name in self.pending:
                    continue  # the finished link pokes the loop
                hold = self.holds.get(name)
                if hold is not None:
                    if hold.until is None:
                        continue  # waits for its inputs to change
                    when = max(when, hold.until)
                times.append(when)
            times.extend(
                hold.until
                for name, hold in self.holds.items()
                if hold.until is not None and name not in due
            )
        if not times:
            return None
        return max(min(times), now + TIMER_FLOOR) if min(times) <= now else min(times)

    # ----------------------------------------------------------------- link flows

    def _start_link(self, state, action: Action, inputs: Inputs) -> None:

        name = action.name
        with self._lock:
            self.pending.add(name)
        self.report(
            Event(
                "link",
                f"{name}: {action.action}: started ({action.reason}); waiting for the browser, "
                "other grants are still served",
                fields={"name": name, "action": action.action, "reason": action.reason},
            )
        )

        def work() -> None:
            try:
                outcomes = operations.run_apply(
                    state,
                    Plan((action,)),
                    _now(),
                    link=True,
                    ask_secret=None,
                    browser=self.browser,
                    device=self.device,
                    environ=self.environ,
                )
                for outcome in outcomes:
                    self._record(outcome, inputs, link=True)
            except Exception as error:  # never let a worker die silently
                with self._lock:
                    self.holds[name] = _Hold(self._key(name, inputs), _now() + LINK_RETRY)
                self.report(
                    Event(
                        "error",
                        f"{name}: {action.action}: failed: {message_of(error)}",
                        level="error",
                        fields={"name": name, "kind": "link"},
                    )
                )
            finally:
                with self._lock:
                    self.pending.discard(name)
                self._poke.set()

        threading.Thread(target=work, name=f"link-{name}", daemon=True).start()


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` instead of interrupting whatever is being written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
