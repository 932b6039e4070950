"""Side by side: tokenward against the tutorial's Express server, as written and tuned.

Run from the repository root (``make bench`` does exactly this)::

    .venv/bin/python bench/run.py

It installs wrk if it is missing, copies ``../shared/peers/seed-express`` into ``bench/.work``
(``npm ci`` once), starts the three servers pinned to core 0, drives them one at a time with
wrk pinned to core 1 (warm-up, then alternating rounds), writes ``bench/RESULTS.md`` and stops
every server it started, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
import login_timing
import verifier as verifier_bench
from login_timing import LoginTiming

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
WORK = BENCH / ".work"
LUA = BENCH / "lua"
RESULTS = BENCH / "RESULTS.md"
PEER_SOURCE = REPO / ".." / "shared" / "peers" / "seed-express"
PEER_COPY = WORK / "seed-express"
VENV_BIN = REPO / ".venv" / "bin"

SERVER_CORE = "0"
LOAD_CORE = "1"
EMAIL = "bench@example.com"
PASSWORD = "violet tangerine ladder 42"  # >= 15 characters and not on the blocklist
RESULT_MARKER = "BENCH_RESULT "
TOKENWARD = "tokenward"
EXPRESS = "express (as written)"
EXPRESS_TUNED = "express (tuned)"


# -- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    rounds: int
    duration: int
    warmup: int
    protected_threads: int
    protected_connections: int
    refresh_sessions: int


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per server")
    parser.add_argument("--duration", type=int, default=8, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server")
    parser.add_argument("--protected-threads", type=int, default=2)
    parser.add_argument("--protected-connections", type=int, default=16)
    parser.add_argument(
        "--refresh-sessions",
        type=int,
        default=4,
        help="wrk threads = connections = sessions for the refresh scenario",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("--rounds and --duration must be >= 1, --warmup >= 0")
    if args.protected_connections < args.protected_threads or args.refresh_sessions < 1:
        parser.error("wrk needs at least as many connections as threads")
    return Options(
        rounds=args.rounds,
        duration=args.duration,
        warmup=args.warmup,
        protected_threads=args.protected_threads,
        protected_connections=args.protected_connections,
        refresh_sessions=args.refresh_sessions,
    )


@dataclass(frozen=True)
class Api:
    """Where one kind of server keeps its routes, and what its login answers with."""

    register: str
    login: str
    protected: str
    refresh: str
    ready: str
    cookie: str
    token_field: str


TOKENWARD_API = Api(
    register="/auth/register",
    login="/auth/login",
    protected="/auth/me",
    refresh="/auth/refresh",
    ready="/healthz",
    cookie="tw_refresh",
    token_field="access_token",
)
EXPRESS_API = Api(
    register="/register",
    login="/login",
    protected="/protected",
    refresh="/refresh",
    ready="/protected",  # no health route: any HTTP answer (401) means it listens
    cookie="refreshToken",
    token_field="accessToken",
)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    script: Path
    threads: int
    connections: int

    def path(self, api: Api) -> str:
        return api.protected if self.key == "protected" else api.refresh


def scenarios(options: Options) -> list[Scenario]:
    sessions = options.refresh_sessions
    return [
        Scenario(
            "protected",
            "protected route (GET, one Bearer token)",
            LUA / "protected.lua",
            options.protected_threads,
            options.protected_connections,
        ),
        Scenario(
            "refresh",
            "refresh (POST, cookie; tokenward rotates on every call)",
            LUA / "refresh.lua",
            sessions,
            sessions,
        ),
    ]


# -- small helpers -------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, flush=True)


def command_output(argv: Sequence[str]) -> str:
    """First line of a command's output (stdout or stderr), whatever its exit status."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of the file
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- setup ---------------------------------------------------------------------------------


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    log("wrk is missing: apt-get update && apt-get install -y wrk")
    subprocess.run(["apt-get", "update"], check=True)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)


def copy_tree(source: Path, target: Path) -> bool:
    """Copy files (not their read-only modes); return True when package-lock.json changed."""
    lock = target / "package-lock.json"
    old_lock = lock.read_bytes() if lock.exists() else b""
    for item in sorted(source.rglob("*")):
        relative = item.relative_to(source)
        if "node_modules" in relative.parts:
            continue
        if item.is_dir():
            (target / relative).mkdir(parents=True, exist_ok=True)
        else:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            destination = target / relative
            destination.unlink(missing_ok=True)
            shutil.copyfile(item, destination)
    return lock.read_bytes() != old_lock


def ensure_express() -> None:
    source = PEER_SOURCE.resolve()
    if not (source / "server.js").is_file():
        raise SystemExit(f"bench: no Express peer at {source}")
    PEER_COPY.mkdir(parents=True, exist_ok=True)
    if copy_tree(source, PEER_COPY):
        shutil.rmtree(PEER_COPY / "node_modules", ignore_errors=True)
    if not (PEER_COPY / "node_modules").is_dir():
        log(f"npm ci in {PEER_COPY.relative_to(REPO)}")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER_COPY, check=True)


def fresh_data_dir() -> Path:
    for old in WORK.glob("tokenward-data-*"):
        shutil.rmtree(old, ignore_errors=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return WORK / f"tokenward-data-{stamp}-{os.getpid()}"


# -- servers -------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    api: Api
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TOKENWARD_")}


def tokenward_server(data_dir: Path) -> Server:
    return Server(
        name=TOKENWARD,
        api=TOKENWARD_API,
        argv=[str(VENV_BIN / "tokenward"), "serve", "--host", "127.0.0.1", "--port", "{port}"],
        # Rate limits would answer this load with 429s (refresh: 30/minute per session):
        # the setting that turns them off is meant for benchmarks. Older builds ignore it.
        env={**base_env(), "TOKENWARD_DATA_DIR": str(data_dir), "TOKENWARD_RATE_LIMITS": "false"},
        cwd=WORK,  # not the repo root: a developer's .env there must not change the settings
        port=free_port(),
        log_path=WORK / "logs" / "tokenward.log",
    )


def express_server(name: str, script: str) -> Server:
    env = {
        **base_env(),
        "ACCESS_SECRET": secrets.token_urlsafe(32),
        "REFRESH_SECRET": secrets.token_urlsafe(32),
    }
    port = free_port()
    env["PORT"] = str(port)
    return Server(
        name=name,
        api=EXPRESS_API,
        argv=["node", script],
        env=env,
        cwd=PEER_COPY,
        port=port,
        log_path=WORK / "logs" / f"{Path(script).stem}.log",
    )


def start(server: Server) -> None:
    argv = [arg.replace("{port}", str(server.port)) for arg in server.argv]
    server.log_path.parent.mkdir(parents=True, exist_ok=True)
    with server.log_path.open("wb") as output:
        server.process = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *argv],
            cwd=server.cwd,
            env=server.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we stop exactly what we started
        )


def wait_ready(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited early; see {server.log_path}")
        try:
            if httpx.get(server.base_url + server.api.ready, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s; see {server.log_path}")


def stop(server: Server) -> None:
    process = server.process
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@contextmanager
def running(servers: Sequence[Server]) -> Iterator[None]:
    """Start every server and stop them all on the way out, whatever happens."""
    with ExitStack() as stack:
        for server in servers:
            stack.callback(stop, server)
            start(server)
        for server in servers:
            wait_ready(server)
            log(f"  {server.name}: ready on :{server.port} (pid {server.pid})")
        yield


# -- sessions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    access_token: str
    refresh_token: str


def cookie_value(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key.strip() == name:
            return rest.split(";", 1)[0]
    raise RuntimeError(f"no {name} cookie in the login response")


def register(server: Server) -> None:
    body = {"email": EMAIL, "password": PASSWORD}
    response = httpx.post(server.base_url + server.api.register, json=body, timeout=30)
    if response.status_code not in (200, 201):
        raise RuntimeError(f"{server.name}: register -> {response.status_code} {response.text}")


def login(server: Server) -> Session:
    body = {"email": EMAIL, "password": PASSWORD}
    response = httpx.post(server.base_url + server.api.login, json=body, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"{server.name}: login -> {response.status_code} {response.text}")
    token = response.json()[server.api.token_field]
    return Session(access_token=token, refresh_token=cookie_value(response, server.api.cookie))


def check_session(server: Server, session: Session) -> None:
    """One request of each kind by hand, so that a broken contract fails before wrk runs."""
    headers = {"Authorization": f"Bearer {session.access_token}"}
    protected = httpx.get(server.base_url + server.api.protected, headers=headers, timeout=10)
    if protected.status_code != 200:
        raise RuntimeError(f"{server.name}: protected route -> {protected.status_code}")
    cookies = {server.api.cookie: session.refresh_token}
    refreshed = httpx.post(server.base_url + server.api.refresh, cookies=cookies, timeout=10)
    if refreshed.status_code != 200:
        raise RuntimeError(f"{server.name}: refresh -> {refreshed.status_code}")
    if server.api is TOKENWARD_API and cookie_value(refreshed, TOKENWARD_API.cookie) in (
        "",
        session.refresh_token,
    ):
        raise RuntimeError(f"{server.name}: refresh did not rotate the cookie")


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Run:
    server: str
    scenario: str
    round: int  # 0 is the warm-up
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: dict[str, int]
    counters: dict[str, int]
    server_cpu: float  # share of one core during the run
    wrk_cpu: float
    problems: list[str] = field(default_factory=list)

    @property
    def per_cpu_second(self) -> float:
        """Requests per second of server CPU: the cost side, less sensitive to a busy core."""
        return self.rps / self.server_cpu if self.server_cpu > 0 else float("nan")


def wrk_env(server: Server, scenario: Scenario, bearer: str) -> dict[str, str]:
    """The variables the Lua script reads; refresh gets fresh sessions for every run."""
    env = dict(os.environ)
    if scenario.key == "protected":
        env["BENCH_BEARER"] = bearer
    else:
        tokens = [login(server).refresh_token for _ in range(scenario.threads)]
        env["BENCH_TOKENS"] = " ".join(tokens)
        env["BENCH_COOKIE"] = server.api.cookie
    return env


def wrk_command(server: Server, scenario: Scenario, seconds: int) -> list[str]:
    return [
        "taskset",
        "-c",
        LOAD_CORE,
        "wrk",
        "-t",
        str(scenario.threads),
        "-c",
        str(scenario.connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(scenario.script),
        server.base_url + scenario.path(server.api),
    ]


def parse_wrk(stdout: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line.removeprefix(RESULT_MARKER))
            return result
    raise RuntimeError(f"wrk printed no {RESULT_MARKER.strip()} line:\n{stdout}")


def problems_of(server: Server, scenario: Scenario, result: dict[str, Any]) -> list[str]:
    found = [f"{name} errors: {count}" for name, count in result["errors"].items() if count]
    counters = result["counters"]
    if counters.get("non200"):
        found.append(f"non-200 responses: {counters['non200']}")
    rotating = server.api is TOKENWARD_API and scenario.key == "refresh"
    if rotating and counters.get("rotated") != counters.get("ok"):
        found.append(f"rotated {counters.get('rotated')} of {counters.get('ok')} answers")
    if result["requests"] == 0:
        found.append("no request completed")
    return found


def measure(server: Server, scenario: Scenario, seconds: int, index: int, bearer: str) -> Run:
    env = wrk_env(server, scenario, bearer)
    server_before, wrk_before = cpu_seconds(server.pid), children_cpu_seconds()
    started = time.monotonic()
    done = subprocess.run(
        wrk_command(server, scenario, seconds),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 60,
    )
    wall = time.monotonic() - started
    server_cpu = (cpu_seconds(server.pid) - server_before) / wall
    wrk_cpu = (children_cpu_seconds() - wrk_before) / wall
    with (WORK / "logs" / "wrk.log").open("a") as wrk_log:
        wrk_log.write(f"## {scenario.key} / {server.name} / round {index}\n{done.stdout}\n")
        wrk_log.write(done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    elapsed = result["duration_us"] / 1e6
    latency = result["latency_us"]
    return Run(
        server=server.name,
        scenario=scenario.key,
        round=index,
        seconds=elapsed,
        requests=result["requests"],
        rps=result["requests"] / elapsed,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        errors=result["errors"],
        counters=result["counters"],
        server_cpu=server_cpu,
        wrk_cpu=wrk_cpu,
        problems=problems_of(server, scenario, result),
    )


def describe(run: Run, rounds: int) -> str:
    label = "warm-up" if run.round == 0 else f"round {run.round}/{rounds}"
    line = (
        f"  [{run.scenario} {label}] {run.server:<21} {run.rps:8.0f} req/s  "
        f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:7.2f} ms  "
        f"cpu server {run.server_cpu:4.0%} wrk {run.wrk_cpu:4.0%}"
    )
    return line + ("  PROBLEM: " + "; ".join(run.problems) if run.problems else "")


def rotate_order(servers: Sequence[Server], shift: int) -> list[Server]:
    shift %= len(servers)
    return [*servers[shift:], *servers[:shift]]


def run_scenario(scenario: Scenario, servers: Sequence[Server], options: Options) -> list[Run]:
    """Warm each server up, then alternate: every round visits every server once."""
    log(f"\n{scenario.title}: wrk -t {scenario.threads} -c {scenario.connections}")
    bearers = {server.name: login(server).access_token for server in servers}
    runs: list[Run] = []
    plan = [(0, list(servers))] if options.warmup else []
    plan += [(n, rotate_order(servers, n - 1)) for n in range(1, options.rounds + 1)]
    for index, order in plan:
        seconds = options.warmup if index == 0 else options.duration
        for server in order:
            run = measure(server, scenario, seconds, index, bearers[server.name])
            log(describe(run, options.rounds))
            runs.append(run)
    return runs


# -- summary and report --------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    server: str
    scenario: str
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu: float
    wrk_cpu: float
    per_cpu_second: float
    per_round: list[float]
    requests: int
    non2xx: int


def summarize(runs: Sequence[Run], server: str, scenario: str) -> Summary:
    mine = [r for r in runs if r.server == server and r.scenario == scenario and r.round > 0]
    return Summary(
        server=server,
        scenario=scenario,
        rps=median([r.rps for r in mine]),
        p50_ms=median([r.p50_ms for r in mine]),
        p99_ms=median([r.p99_ms for r in mine]),
        server_cpu=median([r.server_cpu for r in mine]),
        wrk_cpu=median([r.wrk_cpu for r in mine]),
        per_cpu_second=median([r.per_cpu_second for r in mine]),
        per_round=[r.rps for r in sorted(mine, key=lambda r: r.round)],
        requests=sum(r.requests for r in mine),
        non2xx=sum(r.errors.get("status", 0) + r.counters.get("non200", 0) for r in mine),
    )


def machine_facts(data_dir: Path) -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = command_output(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    dirty = command_output(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"])
    peers = PEER_COPY / "node_modules"
    versions = {
        name: json.loads((peers / name / "package.json").read_text())["version"]
        for name in ("express", "jsonwebtoken", "bcryptjs")
    }
    load = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "nproc": f"{len(os.sched_getaffinity(0))} (os.cpu_count {os.cpu_count()})",
        "CPU": cpu,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "Node": command_output(["node", "--version"]),
        "wrk": command_output(["wrk", "-v"]),
        "tokenward commit": commit + (" (src/ has uncommitted changes)" if dirty else ""),
        "Express peer": ", ".join(f"{name} {version}" for name, version in versions.items()),
        "tokenward data dir": str(data_dir.relative_to(REPO)),
        "load average at start (1/5/15 min)": load,
    }


def results_table(summaries: Sequence[Summary]) -> list[str]:
    lines = [
        "| scenario | server | median req/s | p50 ms | p99 ms | server CPU | wrk CPU "
        "| req per server CPU-s | req/s per round | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for s in summaries:
        rounds = ", ".join(f"{rps:.0f}" for rps in s.per_round)
        lines.append(
            f"| {s.scenario} | {s.server} | {s.rps:,.0f} | {s.p50_ms:.2f} | {s.p99_ms:.2f} "
            f"| {s.server_cpu:.0%} | {s.wrk_cpu:.0%} | {s.per_cpu_second:,.0f} | {rounds} "
            f"| {s.non2xx} |"
        )
    return lines


def ratio_table(summaries: Sequence[Summary], names: Sequence[str]) -> list[str]:
    by_key = {(s.scenario, s.server): s for s in summaries}
    lines = [
        "| scenario | metric | tokenward / express (as written) | tokenward / express (tuned) |",
        "|---|---|---:|---:|",
    ]
    metrics = (("median req/s", "rps"), ("req per server CPU-s", "per_cpu_second"))
    for scenario in names:
        for label, attribute in metrics:
            ours = getattr(by_key[(scenario, TOKENWARD)], attribute)
            written = ours / getattr(by_key[(scenario, EXPRESS)], attribute)
            tuned = ours / getattr(by_key[(scenario, EXPRESS_TUNED)], attribute)
            lines.append(f"| {scenario} | {label} | {written:.2f}x | {tuned:.2f}x |")
    return lines


def noise_lines(runs: Sequence[Run]) -> list[str]:
    measured = [r for r in runs if r.round > 0]
    starved = [r for r in measured if r.server_cpu < 0.8]
    return [
        f"- {len(starved)} of {len(measured)} measured runs had the server below 80% of core "
        f"{SERVER_CORE} while wrk kept it busy: other processes on this shared machine took "
        "the rest. req/s moves with that share; req per server CPU-s much less.",
    ]


def method_lines(options: Options, plan: Sequence[Scenario]) -> list[str]:
    protected, refresh = plan
    return [
        f"- Each server runs alone on core {SERVER_CORE} (`taskset -c {SERVER_CORE}`), wrk on "
        f"core {LOAD_CORE} (`taskset -c {LOAD_CORE}`). All three servers are started once at "
        "the beginning and idle while another one is measured: one server under load at a time.",
        f"- Per scenario: {options.warmup} s warm-up per server, then {options.rounds} rounds "
        f"of {options.duration} s; every round visits every server once, and the order rotates "
        "from round to round. Medians are over the rounds (warm-up excluded); p50 and p99 are "
        "the medians of the per-round wrk percentiles.",
        f"- protected: `wrk -t {protected.threads} -c {protected.connections}` with one access "
        "token for all connections (bench/lua/protected.lua, a static request). tokenward: "
        "`GET /auth/me` (ES256 verify + a SQLite read of the session and user, then JSON); "
        "Express: `GET /protected` (HS256 verify, no storage).",
        f"- refresh: `wrk -t {refresh.threads} -c {refresh.connections}`, one connection and "
        f"one session per thread ({refresh.threads} sessions, logged in before each run, "
        "outside the timing) with bench/lua/refresh.lua: `setup()` hands each thread its "
        "token, `request()` sends the current cookie, `response()` takes the new `tw_refresh` "
        "from `Set-Cookie`, so each tokenward session is one unbroken rotation chain (a SQLite "
        "write transaction plus an audit row per call). Express `POST /refresh` is stateless: "
        "it verifies the JWT and signs a new access token, sets no new cookie, stores nothing. "
        "Both sides use the same script; its `response()` callback makes wrk parse headers "
        "into Lua, which costs wrk some CPU (see the wrk CPU column).",
        "- Server CPU is the server process's CPU time (all threads) over the run's wall time, "
        "from /proc; wrk CPU likewise from the child rusage. 100% means one core saturated. "
        "req per server CPU-s is req/s divided by that share (the median over rounds): the "
        "inverse of the CPU cost of one request, which a neighbour stealing core time "
        "changes much less than req/s.",
        "- tokenward runs as shipped (`tokenward serve`: uvicorn, uvloop, httptools, one "
        "process, uvicorn access log on, written to bench/.work/logs/tokenward.log) with one "
        "setting changed: `TOKENWARD_RATE_LIMITS=false`, since its limits (e.g. 30 refreshes "
        "per minute per session) would otherwise answer this load with 429s. Express runs "
        "`node server.js` / `node server-tuned.js` with NODE_ENV unset.",
    ]


def command_line() -> str:
    if len(sys.argv) > 1:
        return f"`.venv/bin/python bench/run.py {' '.join(sys.argv[1:])}`"
    return "`make bench`, i.e. `.venv/bin/python bench/run.py`"


def write_report(
    runs: Sequence[Run],
    facts: dict[str, str],
    options: Options,
    plan: Sequence[Scenario],
    timing: LoginTiming,
    verifier_table: str,
) -> None:
    names = [s.key for s in plan]
    servers = [TOKENWARD, EXPRESS, EXPRESS_TUNED]
    summaries = [summarize(runs, server, scenario) for scenario in names for server in servers]
    problems = [
        f"{r.scenario} / {r.server} / round {r.round}: {p}" for r in runs for p in r.problems
    ]
    lines = [
        "# tokenward vs the tutorial's Express server: first side-by-side benchmark",
        "",
        f"Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"Command (from the repository root): {command_line()}",
        "",
        "The machine is shared and noisy: read medians and ratios, not single numbers.",
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in facts.items()],
        "- load average at end (1/5/15 min): "
        + " / ".join(f"{value:.2f}" for value in os.getloadavg()),
        "",
        "## Method",
        "",
        *method_lines(options, plan),
        "",
        "## Results",
        "",
        *results_table(summaries),
        "",
        "## Ratios (median req/s; above 1 means tokenward serves more)",
        "",
        *ratio_table(summaries, names),
        "",
        "## Checks",
        "",
        *noise_lines(runs),
        *(
            [f"- PROBLEM: {p}" for p in problems]
            if problems
            else ["- No socket errors, timeouts or non-2xx answers in any run (warm-ups included)."]
        ),
        *[
            f"- refresh / {s.server}: {s.requests:,} requests measured, {s.non2xx} non-200"
            for s in summaries
            if s.scenario == "refresh"
        ],
        "",
        "## Login timing: unknown email vs wrong password (enumeration)",
        "",
        "Measured against the same tokenward server after the scenarios above "
        "(`bench/login_timing.py`, also runnable alone), one request at a time, alternating:",
        "",
        timing.markdown(),
        "",
        "## Verifier: tokenward.verify per token vs the raw signature check",
        "",
        "In-process, pinned to the server core, after the HTTP scenarios "
        "(`bench/verifier.py`, also runnable alone): the floor is `cryptography`'s ECDSA "
        "P-256 verify on the same key and message.",
        "",
        verifier_table,
        "",
        "Raw per-run numbers: bench/.work/last-run.json; wrk output: bench/.work/logs/wrk.log.",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    raw = {"facts": facts, "options": asdict(options), "runs": [asdict(r) for r in runs]}
    (WORK / "last-run.json").write_text(json.dumps(raw, indent=2))


# -- main ----------------------------------------------------------------------------------


def _terminate(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: servers stop


def estimate_seconds(options: Options, plan: Sequence[Scenario]) -> int:
    per_server = options.warmup + options.rounds * options.duration
    return len(plan) * 3 * (per_server + options.rounds + 1)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started in background
    os.chdir(REPO)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "logs" / "wrk.log").unlink(missing_ok=True)
    ensure_wrk()
    ensure_express()
    plan = scenarios(options)
    data_dir = fresh_data_dir()
    servers = [
        tokenward_server(data_dir),
        express_server(EXPRESS, "server.js"),
        express_server(EXPRESS_TUNED, "server-tuned.js"),
    ]
    log(f"starting servers (about {estimate_seconds(options, plan) / 60:.1f} min to go)")
    facts = machine_facts(data_dir)
    with running(servers):
        for server in servers:
            register(server)
            check_session(server, login(server))
        runs = [run for scenario in plan for run in run_scenario(scenario, servers, options)]
        log("login timing: unknown email vs wrong password")
        timing = login_timing.measure(servers[0].base_url)
    log("verifier: per-token cost vs the raw signature check")
    os.sched_setaffinity(0, {int(SERVER_CORE)})
    verifier_table = verifier_bench.measure()
    write_report(runs, facts, options, plan, timing, verifier_table)
    log(f"\nwrote {RESULTS.relative_to(REPO)}")
    problems = [p for r in runs for p in r.problems]
    if problems:
        log(f"{len(problems)} problem(s) found: see the Checks section")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
