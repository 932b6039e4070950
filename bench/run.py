"""Side by side: tokenward against the tutorial's Express server, as written and tuned.

Run from the repository root (``make bench`` does exactly this)::

    .venv/bin/python bench/run.py                       # everything, about 15 minutes
    .venv/bin/python bench/run.py --only refresh,login --rounds 1 --duration 3

It installs wrk if it is missing, copies ``../shared/peers/seed-express`` into ``bench/.work``
(``npm ci`` once), then runs the scenarios in stages, each with the servers it compares:

- 1a/1b/2/3: tokenward and both Express servers pinned to core 0, wrk on core 1 (warm-up,
  then alternating rounds): the protected route with one token and with a 10,000-token pool,
  refresh with rotation, sequential logins next to the password hash;
- 5: tokenward with 1,000 and with 1,000,000 sessions seeded into its SQLite file (refresh);
- 6: tokenward on a real PostgreSQL (refresh), then pgbench running the same rotation as raw
  SQL against the same database with the same pinning;
- 7: ``tokenward serve --workers 2`` and both Express servers, nothing pinned;
- 9: two tokenward servers pinned as in 1a, one with Prometheus metrics off and one with them
  on (``TOKENWARD_METRICS``): the protected route with one token and refresh with rotation,
  then one scrape of the metrics listener to check that it counted;
- 4: the in-process verifier benchmark (bench/verifier.py).

It records the workers' memory after every run (8), writes ``bench/RESULTS.md`` and stops
every server it started, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

import accounts
import forgot_timing
import growth
import httpx
import login_cost
import login_timing
import pools
import postgres
import report
import verifier as verifier_bench
from load import Rounds, Scenario, run_scenario
from prometheus_client.parser import text_string_to_metric_families
from report import Results
from servers import (
    LOAD_CORE,
    LOGS,
    PEER_COPY,
    PEER_SOURCE,
    REPO,
    SERVER_CORE,
    TOKENWARD_CLI,
    TOKENWARD_METRICS_OFF,
    TOKENWARD_METRICS_ON,
    WORK,
    Server,
    express_servers,
    free_port,
    log,
    pinned_to,
    running,
    tokenward_server,
)

DATA = WORK / "data"
STAGES = (
    "protected",
    "protected-pool",
    "refresh",
    "login",
    "growth",
    "postgres",
    "workers",
    "metrics",
)
CHOICES = (*STAGES, "verifier")
GROWTH_SMALL = 1_000
METRICS_ROUNDS = 6
"""Rounds of 9a/9b at least: their target (within 5%) is finer than one round's noise."""


# -- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    rounds: Rounds
    only: frozenset[str]
    protected_threads: int
    protected_connections: int
    refresh_sessions: int
    growth_sessions: int
    login_samples: int


def selection(text: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = chosen - set(CHOICES)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(sorted(unknown))}; choose from {', '.join(CHOICES)}"
        )
    return chosen


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--only",
        type=selection,
        default=frozenset(CHOICES),
        metavar="SCENARIO[,SCENARIO]",
        help=f"run these only: {', '.join(CHOICES)}",
    )
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per server")
    parser.add_argument("--duration", type=int, default=8, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server")
    parser.add_argument("--protected-threads", type=int, default=2)
    parser.add_argument("--protected-connections", type=int, default=16)
    parser.add_argument(
        "--refresh-sessions",
        type=int,
        default=4,
        help="wrk threads = connections = sessions for the refresh scenarios",
    )
    parser.add_argument(
        "--growth-sessions",
        type=int,
        default=1_000_000,
        help=f"sessions in the large database of the growth scenario (the small: {GROWTH_SMALL})",
    )
    parser.add_argument("--login-samples", type=int, default=20, help="logins per server")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("--rounds and --duration must be >= 1, --warmup >= 0")
    if args.protected_connections < args.protected_threads or args.refresh_sessions < 1:
        parser.error("wrk needs at least as many connections as threads")
    if args.growth_sessions <= GROWTH_SMALL or args.login_samples < 2:
        parser.error(f"--growth-sessions must be > {GROWTH_SMALL}, --login-samples >= 2")
    return Options(
        rounds=Rounds(args.rounds, args.duration, args.warmup),
        only=args.only,
        protected_threads=args.protected_threads,
        protected_connections=args.protected_connections,
        refresh_sessions=args.refresh_sessions,
        growth_sessions=args.growth_sessions,
        login_samples=args.login_samples,
    )


def scenarios(options: Options) -> dict[str, Scenario]:
    protected = (options.protected_threads, options.protected_connections)
    refresh = (options.refresh_sessions, options.refresh_sessions)
    large = f"{options.growth_sessions:,}"
    plan = [
        Scenario("protected", "1a. Protected route, one token", "protected", *protected),
        Scenario(
            "protected-pool", f"1b. Protected route, {pools.POOL_SIZE:,} tokens", "pool", *protected
        ),
        Scenario("refresh", "2. Refresh with rotation (SQLite)", "refresh", *refresh),
        Scenario(
            "growth",
            f"5. Growth: refresh with {GROWTH_SMALL:,} vs {large} stored sessions",
            "refresh",
            *refresh,
            baseline="refresh",
        ),
        Scenario("postgres", "6. Refresh on PostgreSQL", "refresh", *refresh, baseline="refresh"),
        Scenario(
            "workers-protected",
            "7a. Protected route, one token: --workers 2, nothing pinned",
            "protected",
            *protected,
            pinned=False,
        ),
        Scenario(
            "workers-refresh",
            "7b. Refresh with rotation: --workers 2, nothing pinned",
            "refresh",
            *refresh,
            pinned=False,
        ),
        Scenario(
            "metrics-protected",
            "9a. Metrics on vs off: protected route, one token",
            "protected",
            *protected,
        ),
        Scenario(
            "metrics-refresh", "9b. Metrics on vs off: refresh with rotation", "refresh", *refresh
        ),
    ]
    return {scenario.key: scenario for scenario in plan}


# -- setup ---------------------------------------------------------------------------------


def command_output(argv: Sequence[str], first_line: bool = True) -> str:
    """A command's output (stdout or stderr), whatever its exit status."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).strip()
    if not text:
        return "unknown"
    return text.splitlines()[0] if first_line else text


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


def fresh_work_dirs() -> None:
    for old in [DATA, *WORK.glob("tokenward-data-*"), pools.POOLS]:  # older runs' layouts too
        shutil.rmtree(old, ignore_errors=True)
    (LOGS / "wrk.log").unlink(missing_ok=True)
    DATA.mkdir(parents=True)


def machine_facts(options: Options) -> dict[str, str]:
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
    facts = {
        "nproc": f"{len(os.sched_getaffinity(0))} (os.cpu_count {os.cpu_count()})",
        "CPU": cpu,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "Node": command_output(["node", "--version"]),
        "wrk": command_output(["wrk", "-v"]),
        "tokenward commit": commit
        + (" (src/ has uncommitted changes)" if dirty != "unknown" else ""),
        "Express peer": ", ".join(f"{name} {version}" for name, version in versions.items()),
        "SQLite (Python's)": sqlite3.sqlite_version,
        "data dirs": str(DATA.relative_to(REPO)),
    }
    if "postgres" in options.only:
        facts["PostgreSQL"] = postgres.version()
    load = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    facts["load average at start (1/5/15 min)"] = load
    return facts


def access_log_words() -> str:
    """How this build's `tokenward serve` logs requests (the default changed twice)."""
    help_text = command_output([str(TOKENWARD_CLI), "serve", "--help"], False)
    words = " ".join(help_text.replace("\u2502", " ").split())  # rich's box, wrapped lines
    if "tokenward's access line" in words:
        return (
            "one process unless said otherwise; tokenward's access line on (its default, log "
            "level info: one line per request, to the server's log in bench/.work/logs), "
            "uvicorn's own (`--access-log`) off"
        )
    if "--access-log" in words:
        return "one process unless said otherwise, no access log (its default)"
    return "one process unless said otherwise, uvicorn's access log on, to bench/.work/logs"


def scrape_requests(listen: str) -> dict[str, int]:
    """``tokenward_http_requests_total`` from a metrics listener, summed by route label.

    Each worker writes the requests it tallied once a second: the scrape waits that long."""
    time.sleep(1.5)
    try:
        response = httpx.get(f"http://{listen}/metrics", timeout=10)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise RuntimeError(f"metrics listener {listen}: {error}") from None
    counted: dict[str, int] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "tokenward_http_requests_total":
                route = sample.labels.get("route", "")
                counted[route] = counted.get(route, 0) + round(sample.value)
    return counted


def command_line() -> str:
    if len(sys.argv) > 1:
        return f"`.venv/bin/python bench/run.py {' '.join(sys.argv[1:])}`"
    return "`make bench`, i.e. `.venv/bin/python bench/run.py`"


# -- stages --------------------------------------------------------------------------------


class Bench:
    """The selected scenarios, stage by stage, each stage with the servers it compares."""

    def __init__(self, options: Options, results: Results) -> None:
        self.options = options
        self.plan = scenarios(options)
        self.results = results

    def wanted(self, key: str) -> bool:
        return key in self.options.only

    def measure(self, key: str, servers: Sequence[Server], *, at_least: int = 0) -> None:
        """``at_least`` rounds (more than the run's when it asks fewer): a comparison whose
        target is a few percent needs more rounds than this machine's noise."""
        scenario = self.plan[key]
        self.results.scenarios.append(scenario)
        rounds = self.options.rounds
        rounds = replace(rounds, count=max(rounds.count, at_least))
        self.results.runs += run_scenario(scenario, servers, rounds)

    def side_by_side(self) -> None:
        """1a, 1b, 2 and 3: tokenward and both Express servers, pinned."""
        servers = [tokenward_server(DATA / "main"), *express_servers()]
        with running(servers):
            for server in servers:
                accounts.prepare(server)
            if self.wanted("protected"):
                self.measure("protected", servers)
            if self.wanted("protected-pool"):  # Express's tokens live 15 min: use them now
                self.results.pools = pools.make_pools(servers[0], servers[1:])
                self.measure("protected-pool", servers)
            if self.wanted("refresh"):
                self.measure("refresh", servers)
            if self.wanted("login"):
                log("\nlogin: sequential logins, and the password hash in-process")
                self.results.logins = login_cost.measure(servers, self.options.login_samples)
                log("login timing: unknown email vs wrong password")
                with pinned_to(LOAD_CORE):
                    self.results.enumeration = login_timing.measure(servers[0].base_url)
                log("forgot-password timing: an account vs no account")
                with pinned_to(LOAD_CORE):
                    self.results.forgot = forgot_timing.measure(servers[0].base_url, accounts.EMAIL)

    def growth(self) -> None:
        """5: the same refresh against a small and a large SQLite file."""
        sizes = (GROWTH_SMALL, self.options.growth_sessions)
        databases = [
            (f"tokenward, {n:,} sessions", growth.build(DATA / f"growth-{n}", n)) for n in sizes
        ]
        servers = [tokenward_server(db.data_dir, name=name) for name, db in databases]
        with running(servers):
            for server in servers:
                accounts.check_session(server, accounts.login(server))
            self.measure("growth", servers)
        self.results.growth = databases

    def postgres(self) -> None:
        """6: refresh with tokenward's data on a real PostgreSQL."""
        log("\nstarting PostgreSQL")
        with postgres.database() as database:
            server = tokenward_server(
                DATA / "postgres",
                name="tokenward (PostgreSQL)",
                database_url=database.url,
                secret_key=secrets.token_urlsafe(36),  # 48 characters
            )
            server.database_pid = database.postmaster_pid
            with running([server]):
                accounts.prepare(server)
                self.measure("postgres", [server])
            log("\npgbench: the same rotation as raw SQL, against the same PostgreSQL")
            self.results.pgbench = postgres.pgbench(database, self.options.rounds)
        self.results.notes["postgres"] = [
            f"PostgreSQL's postmaster and the processes it had started were pinned to core "
            f"{SERVER_CORE} (os.sched_setaffinity) before tokenward connected; the backends it "
            "forks later inherit that, so tokenward and its database share one core, as with "
            "SQLite. Server CPU counts tokenward's process and PostgreSQL's. The Express rows "
            "are scenario 2's, from the same run."
        ]

    def workers(self) -> None:
        """7: `--workers 2` and both Express servers, with nothing pinned."""
        servers = [
            tokenward_server(
                DATA / "workers", name="tokenward --workers 2", workers=2, pinned=False
            ),
            *express_servers(pinned=False),
        ]
        with running(servers):
            for server in servers:
                accounts.prepare(server)
            self.measure("workers-protected", servers)
            self.measure("workers-refresh", servers)

    def metrics(self) -> None:
        """9: the same tokenward with Prometheus metrics off and on, pinned, side by side."""
        listen = f"127.0.0.1:{free_port()}"
        servers = [
            tokenward_server(DATA / "metrics-off", name=TOKENWARD_METRICS_OFF, metrics="off"),
            tokenward_server(
                DATA / "metrics-on", name=TOKENWARD_METRICS_ON, metrics="on", metrics_listen=listen
            ),
        ]
        with running(servers):
            for server in servers:
                accounts.prepare(server)
            self.measure("metrics-protected", servers, at_least=METRICS_ROUNDS)
            self.measure("metrics-refresh", servers, at_least=METRICS_ROUNDS)
            counted = scrape_requests(listen)
        for key, route in (
            ("metrics-protected", servers[1].api.protected),
            ("metrics-refresh", servers[1].api.refresh),
        ):
            self.results.notes[key] = [self.counted_words(key, listen, route, counted)]

    def counted_words(self, key: str, listen: str, route: str, counted: dict[str, int]) -> str:
        """What the metrics-on server counted for ``route``, next to what wrk completed."""
        runs = [r for r in self.results.runs if r.scenario == key]
        sent = sum(r.requests for r in runs if r.server == TOKENWARD_METRICS_ON)
        count = counted.get(route, 0)
        if count < sent:
            self.results.failures.append(
                f"metrics: tokenward_http_requests_total counted {count:,} {route}, "
                f"fewer than the {sent:,} wrk completed"
            )
        return (
            f"Counted: one scrape of the metrics-on server's listener (`http://{listen}/metrics`) "
            f'after both scenarios: `tokenward_http_requests_total{{route="{route}"}}` = '
            f"{count:,} (all statuses), for {sent:,} requests wrk completed against it in this "
            "scenario, warm-up included; the difference is the bench's own requests (one check "
            "per route) and answers still in flight when wrk stopped."
        )

    def verifier(self) -> None:
        log("\nverifier: per-token cost vs the raw signature check")
        with pinned_to(SERVER_CORE):
            self.results.verifier = verifier_bench.measure_result()

    def run(self) -> None:
        """Every selected stage; one that fails is reported and the others still run."""
        stages = [(self.side_by_side, {"protected", "protected-pool", "refresh", "login"})]
        stages += [
            (getattr(self, name), {name}) for name in ("growth", "postgres", "workers", "metrics")
        ]
        stages += [(self.verifier, {"verifier"})]
        for stage, keys in stages:
            if not keys & self.options.only:
                continue
            try:
                stage()
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                log(f"\nSTAGE FAILED: {stage.__name__}: {exc}")
                self.results.failures.append(f"{stage.__name__}: {exc}")


def estimate_minutes(options: Options) -> float:
    rounds = options.rounds

    def per_server(count: int) -> float:
        return rounds.warmup + count * (rounds.duration + 1.5) + 3

    server_runs = {"protected": 3, "protected-pool": 3, "refresh": 3, "growth": 2}
    server_runs |= {"postgres": 3, "workers": 6}
    fixed = {"protected-pool": 60, "login": 50, "growth": 45, "postgres": 10, "verifier": 10}
    fixed |= {"metrics": 10 + 4 * per_server(max(rounds.count, METRICS_ROUNDS))}
    seconds = sum(
        server_runs.get(key, 0) * per_server(rounds.count) + fixed.get(key, 0)
        for key in options.only
    )
    return seconds / 60


# -- main ----------------------------------------------------------------------------------


def _terminate(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: servers stop


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    options = parse_options(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started in background
    os.chdir(REPO)
    WORK.mkdir(parents=True, exist_ok=True)
    ensure_wrk()
    ensure_express()
    fresh_work_dirs()
    log(f"bench: {', '.join(sorted(options.only))} (about {estimate_minutes(options):.0f} min)")
    results = Results(
        command=command_line(),
        facts=machine_facts(options),
        rounds=options.rounds,
        access_log=access_log_words(),
    )
    Bench(options, results).run()
    results.seconds = time.monotonic() - started
    report.write(results)
    log(f"\nwrote {report.RESULTS.relative_to(REPO)} after {results.seconds / 60:.1f} min")
    problems = [p for r in results.runs for p in r.problems] + results.failures
    if problems:
        log(f"{len(problems)} problem(s) found: see the Checks section")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
