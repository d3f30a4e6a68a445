"""One `reconcile apply` (the whole process, the console script) that refreshes N OAuth grants
against a loopback token endpoint: wall time, refresh requests per second, and the peak RSS of
the reconcile process (the largest of it and the refresh workers it forks, which share most of
their pages with it). Target: N = 1000 in ≤ 3 s on a 2-core machine.

Two providers' behaviours are measured, each on its own project:

- keep: the token endpoint answers without a new refresh token, so only this machine's token
  cache is written (SPEC §2, the churn rule: no grant file changes);
- rotate: every answer carries a new refresh token, so every grant file is rewritten.

Setup: N grant files written with `reconciler.vault.store.write_grant` (oauth2, flow
authorization_code, a refresh token, the access token expired an hour ago, granted scopes =
declared ones, client_id as in the config) and a providers.yaml with N providers, each with its
own token endpoint path on one loopback server. The server is a small threaded stdlib server
that implements the refresh_token grant: it checks `grant_type`, the client (HTTP Basic,
client_secret_basic), and that the refresh token is the current one for that grant (a rotated
token used twice is `invalid_grant`). Before each measured run the grant files are restored,
the token cache is emptied and the server's refresh tokens are reset; one warm-up run is not
counted. After each run the bench checks: exit code 0, one request per grant, no rejected
request, and the files (keep: untouched, one cache entry per grant; rotate: every file
rewritten, the sampled ones holding the server's current refresh token). Only the token
cache is emptied: the config is unchanged between runs, so its validation verdict (a
config already found valid is not validated again) is remembered, as it is for a user; the
warm-up run is the one that validates.

Baselines from the same run: `reconcile plan` on the same project (reads and decrypts every
grant file, no network), and the loopback server's own rate for the same requests from a plain
`http.client` loop (so the server is not what is measured).

    python bench/refresh_scale.py [--grants 1000] [--runs 3] [--modes keep,rotate]
                                  [--profile 25]

``--profile N`` runs one more apply per mode under cProfile and prints the N costliest
functions and a breakdown by cost centre (YAML, age, AES, HTTP client, fsync...).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    describe_command,
    load_average,
    new_workspace,
    reconcile_command,
    use_reconciler_of_command,
)

CLIENT_SECRET = "bench-client-secret-0123456789"
SCOPES = ("read", "write")
PROBE = "probe"  # a grant only the server knows: the server-rate baseline uses it


# --- the loopback token endpoint ---------------------------------------------------------------


@dataclass
class TokenEndpoint:
    """The authorization server's state: clients, current refresh tokens, what it saw."""

    rotate: bool
    clients: dict[str, str] = field(default_factory=dict)  # grant name -> client_id
    initial: dict[str, str] = field(default_factory=dict)  # grant name -> first refresh token
    current: dict[str, str] = field(default_factory=dict)
    calls: Counter = field(default_factory=Counter)
    rejected: list[str] = field(default_factory=list)
    serial: int = 0
    #: Seconds spent handling requests (request read → response written).
    busy: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.current = dict(self.initial)
            self.calls = Counter()
            self.rejected = []
            self.busy = 0.0

    def token(self, name: str, headers, body: bytes) -> tuple[int, dict]:
        """One token request → (HTTP status, JSON body), per RFC 6749 §5 and §6."""
        if name not in self.clients:
            return 404, {"error": "invalid_request", "error_description": "unknown endpoint"}
        if headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return 400, {"error": "invalid_request", "error_description": "form body expected"}
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type"}
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        try:
            client_id, _, secret = base64.b64decode(credentials).decode().partition(":")
        except ValueError:
            client_id = secret = ""
        if (
            scheme.lower() != "basic"
            or unquote(client_id) != self.clients[name]
            or unquote(secret) != CLIENT_SECRET
        ):
            return 401, {"error": "invalid_client"}
        with self.lock:
            if form.get("refresh_token") != self.current[name]:
                return 400, {"error": "invalid_grant", "error_description": "unknown token"}
            self.serial += 1
            answer = {
                "access_token": f"at-{name}-{self.serial}-" + "a" * 24,
                "token_type": "Bearer",
                "expires_in": 3600,
            }
            if self.rotate:
                answer["refresh_token"] = self.current[name] = (
                    f"rt-{name}-{self.serial}-" + "r" * 24
                )
            self.calls[name] += 1
        return 200, answer


class _Handler(socketserver.StreamRequestHandler):
    """HTTP/1.1 with keep-alive, parsed by hand: http.server's email-based header parsing
    would make the server, not reconcile, a visible share of each exchange."""

    server: _Server

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(8192)
            if not line.strip():
                return
            started = time.perf_counter()
            method, path, version = line.decode("latin-1").split()
            headers: dict[str, str] = {}
            while (header := self.rfile.readline(8192)) not in (b"\r\n", b"\n", b""):
                key, _, value = header.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            body = self.rfile.read(int(headers.get("content-length") or 0))
            endpoint = self.server.endpoint
            prefix = "/token/"
            if method != "POST" or not path.startswith(prefix):
                status, document = 405, {"error": "invalid_request"}
            else:
                status, document = endpoint.token(path[len(prefix) :], headers, body)
            data = json.dumps(document).encode()
            self.wfile.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                "Content-Type: application/json\r\nCache-Control: no-store\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            with endpoint.lock:
                endpoint.busy += time.perf_counter() - started
                if status != 200:
                    endpoint.rejected.append(f"{path}: {status} {document['error']}")
            if version == "HTTP/1.0" or headers.get("connection", "").lower() == "close":
                return


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Error"}


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, endpoint: TokenEndpoint) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.endpoint = endpoint

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def server_rate(server: _Server, requests: int) -> float:
    """Requests/s of the server alone: sequential refreshes of the probe grant, one connection
    each (as reconcile makes them)."""
    auth = base64.b64encode(f"{server.endpoint.clients[PROBE]}:{CLIENT_SECRET}".encode()).decode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Authorization": f"Basic {auth}",
        "Accept": "application/json",
    }
    start = time.perf_counter()
    for _ in range(requests):
        body = f"grant_type=refresh_token&refresh_token={server.endpoint.current[PROBE]}"
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        connection.request("POST", f"/token/{PROBE}", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        if response.status != 200:
            raise RuntimeError(f"the server refused the probe refresh: HTTP {response.status}")
    return requests / (time.perf_counter() - start)


# --- the project ---------------------------------------------------------------------------------


@dataclass
class Project:
    mode: str
    root: Path
    env: dict[str, str]
    server: _Server
    names: list[str]
    setup_seconds: float

    @property
    def store(self) -> Path:
        return self.root / "secrets"

    @property
    def pristine(self) -> Path:
        return self.root / "pristine"

    @property
    def cache(self) -> Path:
        return self.root / "home" / ".cache" / "oauth-reconciler" / "tokens"

    def reset(self) -> None:
        """Back to N due grants: files as written, no token cache, the server's first tokens.
        Putting the old files back is a rollback, so this machine's memory of newer versions
        (``vault.cache.remember_seen``) goes too."""
        shutil.rmtree(self.cache, ignore_errors=True)
        shutil.rmtree(self.cache.with_name("seen"), ignore_errors=True)
        for name in self.names:
            filename = f"{name}.sops.yaml"
            shutil.copyfile(self.pristine / filename, self.store / filename)
        self.server.endpoint.reset()


def setup(mode: str, count: int) -> Project:
    use_reconciler_of_command()
    from reconciler.model import Grant, Secret
    from reconciler.vault.store import write_grant

    started = time.perf_counter()
    endpoint = TokenEndpoint(rotate=mode == "rotate")
    server = _Server(endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root, env, recipient = new_workspace(f"refresh-scale-{mode}-")
    env["BENCH_CLIENT_SECRET"] = CLIENT_SECRET
    names = [f"g{index:05d}" for index in range(count)]
    lines = [
        "version: 1",
        "store:",
        "  dir: secrets",
        f"  recipients: [{recipient}]",
        "providers:",
    ]
    for name in names:
        lines += [
            f"  {name}:",
            f"    authorization_endpoint: {server.base_url}/authorize",
            f"    token_endpoint: {server.base_url}/token/{name}",
            f"    client_id: client-{name}",
            "    client_secret: env:BENCH_CLIENT_SECRET",
            f"    scopes: [{', '.join(SCOPES)}]",
        ]
    (root / "providers.yaml").write_text("\n".join(lines) + "\n")
    now = datetime.now(UTC).replace(microsecond=0)
    for name in [*names, PROBE]:
        endpoint.clients[name] = f"client-{name}"
        endpoint.initial[name] = f"rt-{name}-0-" + "r" * 24
    endpoint.reset()
    for name in names:
        grant = Grant(
            name=name,
            kind="oauth2",
            flow="authorization_code",
            client_id=f"client-{name}",
            token_endpoint=f"{server.base_url}/token/{name}",
            scopes=SCOPES,
            granted_scopes=SCOPES,
            token_type="Bearer",
            expires_at=now - timedelta(hours=1),
            obtained_at=now - timedelta(hours=2),
            access_token=Secret(f"at-{name}-0-" + "a" * 24),
            refresh_token=Secret(endpoint.initial[name]),
        )
        write_grant(root / "secrets" / f"{name}.sops.yaml", grant, [recipient])
    shutil.copytree(root / "secrets", root / "pristine")
    return Project(mode, root, env, server, names, time.perf_counter() - started)


# --- running and checking ------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    peak_rss_kib: int
    summary: str
    #: Seconds the loopback server spent answering during the run (included in ``seconds``).
    server_busy: float


def run_apply(project: Project, prefix: list[str] | None = None) -> Run:
    """One `reconcile apply` as a user runs it (progress on stderr), with its own peak RSS."""
    argv = [*(prefix or reconcile_command()), "apply"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=project.root, env=project.env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        failures = [line for line in stderr.splitlines() if "failed" in line or "error" in line]
        raise SystemExit(
            f"{project.mode}: reconcile apply exited {process.returncode}: "
            + "\n".join(failures[:5] or stderr.splitlines()[-5:])
        )
    summary = stdout.strip().splitlines()[-1] if stdout else ""
    return Run(seconds, usage.ru_maxrss, summary, project.server.endpoint.busy)


def check(project: Project, run: Run) -> None:
    """The run did what it claims: N refreshes, each grant once, files as the churn rule says."""
    count = len(project.names)
    endpoint = project.server.endpoint
    problems = []
    if f"Apply: {count} done, 0 failed" not in run.summary:
        problems.append(f"summary {run.summary!r}")
    if endpoint.rejected:
        problems.append(f"{len(endpoint.rejected)} rejected requests, e.g. {endpoint.rejected[0]}")
    calls = sum(endpoint.calls[name] for name in project.names)
    if calls != count or any(endpoint.calls[name] != 1 for name in project.names):
        problems.append(f"{calls} refresh requests for {count} grants")
    changed = [
        name
        for name in project.names
        if (project.store / f"{name}.sops.yaml").read_bytes()
        != (project.pristine / f"{name}.sops.yaml").read_bytes()
    ]
    entries = list(project.cache.glob("*.age"))
    if len(entries) != count:
        problems.append(f"{len(entries)} token cache entries for {count} grants")
    if project.mode == "keep" and changed:
        problems.append(f"{len(changed)} grant files rewritten though no refresh token rotated")
    if project.mode == "rotate":
        if len(changed) != count:
            problems.append(f"{len(changed)} of {count} grant files rewritten after rotation")
        problems += _check_rotated(project)
    if problems:
        raise SystemExit(f"{project.mode}: the run is not valid: " + "; ".join(problems))


def _check_rotated(project: Project, sample: int = 25) -> list[str]:
    from reconciler.vault.sops.keys import load_identities
    from reconciler.vault.store import read_grant

    identities = load_identities(project.env, required=True)
    step = max(1, len(project.names) // sample)
    problems = []
    for name in project.names[::step]:
        grant = read_grant(project.store / f"{name}.sops.yaml", identities)
        assert grant.refresh_token is not None
        if grant.refresh_token.reveal() != project.server.endpoint.current[name]:
            problems.append(f"{name}: the file does not hold the rotated refresh token")
    return problems


def time_plan(project: Project, runs: int) -> float:
    """`reconcile plan` on the due project: config + every grant file read and decrypted."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run(
            [*reconcile_command(), "plan", "-o", "json"],
            cwd=project.root, env=project.env, capture_output=True, text=True,
        )  # fmt: skip
        times.append(time.perf_counter() - start)
        if out.returncode != 0 or len(json.loads(out.stdout)["actions"]) != len(project.names):
            raise SystemExit(f"{project.mode}: plan did not list {len(project.names)} refreshes")
    return statistics.median(times)


# --- profile -------------------------------------------------------------------------------------

#: Cost centres: (label, file suffix or "" for any file, function names). The time of the
#: outermost matching call (cumulative) is counted once.
CENTRES = [
    ("imports (all, lazy ones too)", "", ("_find_and_load",)),
    ("config.load (whole providers.yaml)", "config/loader.py", ("load",)),
    ("vault.scan (read+decrypt all files)", "vault/store.py", ("scan",)),
    ("token cache read (cache.read)", "vault/cache.py", ("read",)),
    ("read_grant (the re-read under the lock)", "vault/store.py", ("read_grant",)),
    ("client secret resolution", "reconciler/apply/lifecycle.py", ("client_secret",)),
    ("tokens.refresh (HTTP exchange)", "oauth/tokens.py", ("refresh",)),
    ("  transport.http_client (client creation)", "oauth/transport.py", ("http_client",)),
    ("  TLS context creation", "", ("create_ssl_context", "load_verify_locations")),
    ("  httpx2 Client.request (send + receive)", "httpx2/_client.py", ("request",)),
    ("  httpx2 Client.close", "httpx2/_client.py", ("close",)),
    ("write_grant (rotate)", "vault/store.py", ("write_grant",)),
    ("cache.write", "vault/cache.py", ("write",)),
    ("os.fsync (all)", "", ("<built-in method posix.fsync>",)),
    ("age encrypt (pyrage, all)", "", ("<encrypt>",)),
    ("age decrypt (pyrage, all)", "", ("<decrypt>",)),
    ("file_lock (flock wait)", "", ("<built-in method fcntl.flock>",)),
]


def profile(project: Project, top: int) -> None:
    import pstats

    script = reconcile_command()
    if len(script) == 1:  # the console script: run it under its own interpreter
        interpreter = Path(script[0]).read_text().splitlines()[0].removeprefix("#!").strip()
        prefix = [interpreter, "-m", "cProfile", "-o"]
        tail = [script[0]]
    else:
        prefix = [script[0], "-m", "cProfile", "-o"]
        tail = ["-m", "reconciler"]
    with tempfile.NamedTemporaryFile(suffix=".prof", delete=False) as handle:
        output = handle.name
    project.reset()
    run = run_apply(project, [*prefix, output, *tail])
    check(project, run)
    stats = pstats.Stats(output)
    total = max(ct for (_, _, _, ct, _) in stats.stats.values())
    print(f"\n{project.mode}: cProfile of one apply ({run.seconds:.2f} s wall under the profiler, "
          f"{total:.2f} s profiled)")  # fmt: skip
    print(f"  {'cost centre':<42} {'cum s':>7} {'share':>6} {'calls':>7}")
    for label, suffix, names in CENTRES:
        seconds, calls = _centre(stats, suffix, names)
        if calls:
            print(f"  {label:<42} {seconds:7.2f} {seconds / total:6.1%} {calls:7d}")
    print(f"\n  top {top} by own time (tottime):")
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:top]
    for (file, line, name), (_, calls, own, cumulative, _) in rows:
        where = f"{_short(file)}:{line}" if line else _short(file)
        print(f"  {own:7.3f} s own {cumulative:7.3f} s cum {calls:7d}x  {name}  {where}")
    os.unlink(output)


def _centre(stats, suffix: str, names: tuple[str, ...]) -> tuple[float, int]:
    """Cumulative time of matching functions, not counting a match called by another match."""
    keys = {key for key in stats.stats if key[2] in names and key[0].endswith(suffix or key[0])}
    seconds = 0.0
    calls = 0
    for key in keys:
        _, count, _, cumulative, callers = stats.stats[key]
        inner = sum(v[3] for caller, v in callers.items() if caller in keys)
        seconds += cumulative - inner
        calls += count
    return seconds, calls


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grants", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="keep,rotate")
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--keep-files", action="store_true", help="leave the projects in /tmp")
    args = parser.parse_args()
    count = args.grants
    print(describe_command())
    print(f"python {sys.version.split()[0]}, {load_average()} at start; {count} grants due")
    results = {}
    for mode in args.modes.split(","):
        project = setup(mode, count)
        print(f"\n{mode}: setup {project.setup_seconds:.1f} s ({project.root})")
        rate = server_rate(project.server, min(count, 1000))
        print(
            f"  loopback server alone: {rate:,.0f} refreshes/s (http.client, one connection each)"
        )
        plan = time_plan(project, max(1, args.runs))
        print(f"  reconcile plan (read + decrypt {count} grants, no network): {plan:.2f} s")
        runs = []
        for index in range(args.runs + 1):
            project.reset()
            run = run_apply(project)
            check(project, run)
            label = "warm-up" if index == 0 else f"run {index}"
            print(f"  {label:<8} apply {run.seconds:6.2f} s  {count / run.seconds:7.0f} refreshes/s"
                  f"  peak RSS {run.peak_rss_kib / 1024:6.1f} MiB  server busy "
                  f"{run.server_busy:.2f} s  [{run.summary}]")  # fmt: skip
            if index:
                runs.append(run)
        wall = statistics.median(r.seconds for r in runs)
        rss = max(r.peak_rss_kib for r in runs) / 1024
        results[mode] = (wall, rss, plan)
        if args.profile:
            profile(project, args.profile)
        project.server.shutdown()
        if not args.keep_files:
            shutil.rmtree(project.root, ignore_errors=True)

    print(f"\nsummary ({args.runs} measured runs per mode, median; {load_average()} at the end)")
    for mode, (wall, rss, plan) in results.items():
        target = 3.0 * count / 1000  # 3 s for 1000 grants, pro rata for another N
        verdict = "ok" if wall <= target else "OVER"
        print(f"  {mode:<7} {wall:6.2f} s  {count / wall:6.0f} refreshes/s  peak RSS {rss:6.1f} MiB"
              f"  (target 3 s per 1000 grants: {verdict}); apply - plan = {wall - plan:.2f} s, "
              f"{(wall - plan) / count * 1000:.2f} ms per refresh")  # fmt: skip


if __name__ == "__main__":
    main()
