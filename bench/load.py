"""Driving the servers with wrk: scenarios, one measured run, warm-up plus alternating rounds.

Every run leaves a ``Run``: wrk's counts and latency percentiles (from the ``BENCH_RESULT``
line the Lua scripts print), the server's CPU share over the run and its workers' memory after.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pools
from accounts import login
from servers import LOAD_CORE, LOGS, Server, log, tree_cpu_seconds, workers_rss_kib

LUA = Path(__file__).resolve().parent / "lua"
RESULT_MARKER = "BENCH_RESULT "
SCRIPTS = {"protected": "protected.lua", "pool": "protected_pool.lua", "refresh": "refresh.lua"}


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    route: str  # a key of SCRIPTS: "protected" (one token), "pool" (a token file), "refresh"
    threads: int
    connections: int
    pinned: bool = True
    baseline: str | None = None
    """The scenario whose Express runs the ratios use, when this one runs no Express."""

    @property
    def script(self) -> Path:
        return LUA / SCRIPTS[self.route]

    def path(self, server: Server) -> str:
        return server.api.refresh if self.route == "refresh" else server.api.protected


@dataclass(frozen=True)
class Rounds:
    count: int
    duration: int  # seconds per measured run
    warmup: int  # seconds of warm-up per server, 0 for none


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
    server_cpu: float  # share of one core during the run (2.0: both cores)
    wrk_cpu: float
    rss_kib: int  # the server's worker processes after the run
    problems: list[str] = field(default_factory=list)

    @property
    def per_cpu_second(self) -> float:
        """Requests per second of server CPU: the cost side, less sensitive to a busy core."""
        return self.rps / self.server_cpu if self.server_cpu > 0 else float("nan")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def scenario_env(server: Server, scenario: Scenario) -> dict[str, str]:
    """The part of the Lua script's environment that stays the same for every run."""
    if scenario.route == "protected":
        return {"BENCH_BEARER": login(server).access_token}
    if scenario.route == "pool":
        return {"BENCH_TOKEN_FILE": str(pools.pool_path(server))}
    return {"BENCH_COOKIE": server.api.cookie}


def run_env(server: Server, scenario: Scenario, fixed: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **fixed}
    if scenario.route == "refresh":  # fresh sessions, logged in outside the timing
        tokens = [login(server).refresh_token for _ in range(scenario.threads)]
        env["BENCH_TOKENS"] = " ".join(tokens)
    return env


def wrk_command(server: Server, scenario: Scenario, seconds: int) -> list[str]:
    pin = ["taskset", "-c", LOAD_CORE] if scenario.pinned else []
    return [
        *pin,
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
        server.base_url + scenario.path(server),
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
    rotating = server.is_tokenward and scenario.route == "refresh"
    if rotating and counters.get("rotated") != counters.get("ok"):
        found.append(f"rotated {counters.get('rotated')} of {counters.get('ok')} answers")
    if result["requests"] == 0:
        found.append("no request completed")
    return found


def measure(
    server: Server, scenario: Scenario, seconds: int, index: int, fixed: dict[str, str]
) -> Run:
    env = run_env(server, scenario, fixed)
    server_before, wrk_before = tree_cpu_seconds(server), children_cpu_seconds()
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
    server_cpu = (tree_cpu_seconds(server) - server_before) / wall
    wrk_cpu = (children_cpu_seconds() - wrk_before) / wall
    with (LOGS / "wrk.log").open("a") as wrk_log:
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
        rss_kib=workers_rss_kib(server),
        problems=problems_of(server, scenario, result),
    )


def describe(run: Run, rounds: int) -> str:
    label = "warm-up" if run.round == 0 else f"round {run.round}/{rounds}"
    line = (
        f"  [{run.scenario} {label}] {run.server:<24} {run.rps:8.0f} req/s  "
        f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:7.2f} ms  "
        f"cpu server {run.server_cpu:4.0%} wrk {run.wrk_cpu:4.0%}  rss {run.rss_kib / 1024:.0f} MiB"
    )
    return line + ("  PROBLEM: " + "; ".join(run.problems) if run.problems else "")


def rotate_order(servers: Sequence[Server], shift: int) -> list[Server]:
    shift %= len(servers)
    return [*servers[shift:], *servers[:shift]]


def run_scenario(scenario: Scenario, servers: Sequence[Server], rounds: Rounds) -> list[Run]:
    """Warm each server up, then alternate: every round visits every server once."""
    log(f"\n{scenario.title}: wrk -t {scenario.threads} -c {scenario.connections}")
    fixed = {server.name: scenario_env(server, scenario) for server in servers}
    runs: list[Run] = []
    plan = [(0, list(servers))] if rounds.warmup else []
    plan += [(n, rotate_order(servers, n - 1)) for n in range(1, rounds.count + 1)]
    for index, order in plan:
        seconds = rounds.warmup if index == 0 else rounds.duration
        for server in order:
            run = measure(server, scenario, seconds, index, fixed[server.name])
            log(describe(run, rounds.count))
            runs.append(run)
    return runs
