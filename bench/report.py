"""bench/RESULTS.md: one table per scenario, its target, memory, checks, machine and method."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from forgot_timing import ForgotTiming
from growth import SeededDatabase
from load import Rounds, Run, Scenario
from login_cost import LoginCost
from login_timing import LoginTiming
from pools import EXPRESS_USERS, POOL_SIZE, TOKENWARD_SESSIONS, Pool
from postgres import PGBENCH_CLIENTS, SCRIPTS, TARGET_SCRIPT, PgbenchResult
from servers import (
    BENCH,
    EXPRESS_NAMES,
    LOAD_CORE,
    SERVER_CORE,
    TOKENWARD,
    TOKENWARD_METRICS_OFF,
    TOKENWARD_METRICS_ON,
    WORK,
)
from verifier import JWKS, STATIC
from verifier import Result as VerifierResult

RESULTS = BENCH / "RESULTS.md"
LOGIN_OVERHEAD_TARGET = 0.10
VERIFIER_TARGET = 1.3
GROWTH_TARGET = 1.2
PROTECTED_TARGET = 1.0  # req/s at least the tuned Express's, p99 no worse
REFRESH_TARGET = 0.75  # req/s at least 0.75x the tuned Express's stateless refresh
PGBENCH_TARGET = 0.25  # refresh on PostgreSQL: at least 0.25x pgbench's rotation transaction
POSTGRES_TARGET = 0.6  # refresh on PostgreSQL: at least 0.6x refresh on SQLite
METRICS_RPS_TARGET = 0.95  # metrics on: req/s at least 0.95x off (within 5%)
METRICS_P50_TARGET = 1.05  # metrics on: p50 at most 1.05x off
METRICS_KEYS = ("metrics-protected", "metrics-refresh")
"""Scenarios comparing tokenward with itself, metrics on over off: no Express, no baseline."""
TARGETED = (
    "protected",
    "protected-pool",
    "refresh",
    "growth",
    "postgres",
    "login",
    "forgot",
    "verifier",
    *METRICS_KEYS,
)


@dataclass
class Results:
    """Everything one `bench/run.py` gathered; what was not run stays empty."""

    command: str
    facts: dict[str, str]
    rounds: Rounds
    access_log: str  # how tokenward serve logs requests in this build
    scenarios: list[Scenario] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    pools: list[Pool] = field(default_factory=list)
    logins: list[LoginCost] = field(default_factory=list)
    enumeration: LoginTiming | None = None
    forgot: ForgotTiming | None = None
    verifier: VerifierResult | None = None
    growth: list[tuple[str, SeededDatabase]] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    """Extra lines under a scenario's table, by scenario key."""
    pgbench: list[PgbenchResult] = field(default_factory=list)
    """The database's own figure for the rotation (scenario 6), script by script."""
    failures: list[str] = field(default_factory=list)
    """Stages that stopped with an error (a server that did not start, say)."""
    seconds: float = 0.0


# -- summaries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    server: str
    scenario: str
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu: float
    per_cpu_second: float
    per_round: list[float]
    requests: int
    non2xx: int


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs: Sequence[Run], scenario: str, server: str) -> Summary | None:
    mine = [r for r in runs if r.server == server and r.scenario == scenario and r.round > 0]
    if not mine:
        return None
    return Summary(
        server=server,
        scenario=scenario,
        rps=median([r.rps for r in mine]),
        p50_ms=median([r.p50_ms for r in mine]),
        p99_ms=median([r.p99_ms for r in mine]),
        server_cpu=median([r.server_cpu for r in mine]),
        per_cpu_second=median([r.per_cpu_second for r in mine]),
        per_round=[r.rps for r in sorted(mine, key=lambda r: r.round)],
        requests=sum(r.requests for r in mine),
        non2xx=sum(r.errors.get("status", 0) + r.counters.get("non200", 0) for r in mine),
    )


def servers_of(runs: Sequence[Run], scenario: str) -> list[str]:
    return list(dict.fromkeys(r.server for r in runs if r.scenario == scenario))


def is_tokenward(server: str) -> bool:
    return server.startswith(TOKENWARD)


# -- verdicts ------------------------------------------------------------------------------


FORGOT_RATIO_BAND = (0.8, 1.25)
"""Forgot-password timing, account / no account: docs/email.md's "the same work"."""


def verdict(measured: float, target: float, unit: str = "x") -> str:
    """'met' or 'not met', and by how much, for a target that is a ceiling."""
    if unit == "%":
        gap = f"{abs(target - measured) * 100:.1f} points"
        shown = f"{measured:.1%} (target <= {target:.0%})"
    else:
        gap = f"{abs(target - measured) / target:.0%}"
        shown = f"{measured:.2f}x (target <= {target:g}x)"
    if measured <= target:
        return f"**met**: {shown}, {gap} under"
    return f"**not met**: {shown}, {gap} over"


def growth_ratio(results: Results) -> float | None:
    names = servers_of(results.runs, "growth")
    if len(names) != 2:
        return None
    small, large = (summarize(results.runs, "growth", name) for name in names)
    if small is None or large is None:
        return None
    return large.p50_ms / small.p50_ms


def login_overhead(results: Results) -> float | None:
    ours = [cost.overhead for cost in results.logins if cost.overhead is not None]
    return ours[0] if ours else None


def floor_verdict(measured: float, target: float) -> str:
    """'met' or 'not met', and by how much, for a target that is a floor."""
    shown = f"{measured:.2f}x (target >= {target:.2f}x)"
    gap = f"{abs(measured - target) / target:.0%}"
    if measured >= target:
        return f"**met**: {shown}, {gap} over"
    return f"**not met**: {shown}, {gap} short"


def versus_tuned(results: Results, key: str) -> tuple[float, float] | None:
    """(req/s ratio, p99 ratio) of tokenward over the tuned Express in one scenario."""
    ours = summarize(results.runs, key, TOKENWARD)
    tuned = summarize(results.runs, key, EXPRESS_NAMES[-1])
    if ours is None or tuned is None:
        return None
    return ours.rps / tuned.rps, ours.p99_ms / tuned.p99_ms


def metrics_pair(results: Results, key: str) -> tuple[Summary, Summary] | None:
    """(metrics on, metrics off) in one of the METRICS_KEYS scenarios."""
    on = summarize(results.runs, key, TOKENWARD_METRICS_ON)
    off = summarize(results.runs, key, TOKENWARD_METRICS_OFF)
    if on is None or off is None:
        return None
    return on, off


def paired_words(results: Results, key: str) -> str:
    """The median over rounds of on / off within each round (the two runs of a round are a
    few seconds apart; the machine's speed drifts more than that between rounds)."""
    by_round: dict[int, dict[str, float]] = {}
    for run in results.runs:
        if run.scenario == key and run.round > 0:
            by_round.setdefault(run.round, {})[run.server] = run.rps
    ratios = [
        pair[TOKENWARD_METRICS_ON] / pair[TOKENWARD_METRICS_OFF]
        for pair in by_round.values()
        if TOKENWARD_METRICS_ON in pair and TOKENWARD_METRICS_OFF in pair
    ]
    if not ratios:
        return ""
    shown = ", ".join(f"{ratio:.2f}" for ratio in ratios)
    return f"; round by round, on / off: {shown} (median {median(ratios):.2f}x)"


def postgres_ratios(results: Results) -> tuple[float, float] | None:
    """tokenward's refresh on PostgreSQL over (pgbench's rotation, tokenward's on SQLite)."""
    names = servers_of(results.runs, "postgres")
    ours = summarize(results.runs, "postgres", names[0]) if names else None
    sqlite = summarize(results.runs, "refresh", TOKENWARD)
    reference = [r for r in results.pgbench if r.script == TARGET_SCRIPT]
    if ours is None or sqlite is None or not reference:
        return None
    return ours.rps / reference[0].tps, ours.rps / sqlite.rps


def pgbench_table(results: Results) -> list[str]:
    if not results.pgbench:
        return []
    names = servers_of(results.runs, "postgres")
    ours = summarize(results.runs, "postgres", names[0]) if names else None
    lines = [
        f"pgbench against the same PostgreSQL, pinned to core {LOAD_CORE} as wrk is, "
        f"{PGBENCH_CLIENTS} clients (one session and one user each, as each wrk connection "
        "has one session), `--protocol=prepared`, the same rounds and durations:",
        "",
        "| pgbench script | median tx/s | tx/s per round | tokenward's refresh / it |",
        "|---|---:|---|---:|",
    ]
    for result in results.pgbench:
        rounds = ", ".join(f"{tps:.0f}" for tps in result.tps_per_round)
        ratio = f"{ours.rps / result.tps:.2f}x" if ours else ""
        lines.append(f"| {result.script} | {result.tps:,.0f} | {rounds} | {ratio} |")
    lines += ["", "The scripts (`:client_id` is pgbench's client number):", ""]
    for result in results.pgbench:
        lines += [f"- {result.script}:", "", "```sql", SCRIPTS[result.script], "```", ""]
    return lines[:-1]


def target_line(key: str, results: Results) -> str:
    if key in ("protected", "protected-pool") and (ratios := versus_tuned(results, key)):
        rps, p99 = ratios
        p99_verdict = "no worse" if p99 <= 1 else f"{p99:.2f}x worse"
        return (
            "Target: req/s >= 1.0x the tuned Express, p99 no worse: "
            + floor_verdict(rps, PROTECTED_TARGET)
            + f"; p99 {p99:.2f}x the tuned Express's ({p99_verdict})"
        )
    if key == "refresh" and (ratios := versus_tuned(results, key)):
        return "Target: req/s >= 0.75x the tuned Express's refresh: " + floor_verdict(
            ratios[0], REFRESH_TARGET
        )
    if key == "postgres" and (ratios := postgres_ratios(results)):
        to_pgbench, to_sqlite = ratios
        return (
            "Target: req/s >= 0.25x pgbench's rotation transaction: "
            + floor_verdict(to_pgbench, PGBENCH_TARGET)
            + "; req/s >= 0.6x tokenward's refresh on SQLite (scenario 2): "
            + floor_verdict(to_sqlite, POSTGRES_TARGET)
        )
    if key in METRICS_KEYS and (pair := metrics_pair(results, key)):
        on, off = pair
        return (
            "Target: median req/s with metrics on >= 0.95x off (within 5%): "
            + floor_verdict(on.rps / off.rps, METRICS_RPS_TARGET)
            + "; p50 with metrics on <= 1.05x off: "
            + verdict(on.p50_ms / off.p50_ms, METRICS_P50_TARGET)
            + f"; req per server CPU-s {on.per_cpu_second / off.per_cpu_second:.2f}x off"
            + paired_words(results, key)
        )
    if key == "growth" and (ratio := growth_ratio(results)) is not None:
        small, large = servers_of(results.runs, "growth")
        return f"Target: refresh p50 of '{large}' <= 1.2x that of '{small}': " + verdict(
            ratio, GROWTH_TARGET
        )
    if key == "login" and (overhead := login_overhead(results)) is not None:
        return "Target: login overhead over the hash <= 10%: " + verdict(
            overhead, LOGIN_OVERHEAD_TARGET, "%"
        )
    if key == "forgot" and results.forgot is not None:
        ratio = results.forgot.ratio
        within = FORGOT_RATIO_BAND[0] <= ratio <= FORGOT_RATIO_BAND[1]
        low, high = FORGOT_RATIO_BAND
        return (
            f"Target: account / no account median within [{low}, {high}]: "
            + ("**met**" if within else "**not met**")
            + f": {ratio:.3f}"
        )
    if key == "verifier" and results.verifier is not None:
        static = results.verifier.ratios[STATIC]
        return (
            "Target: `Verifier` <= 1.3x the raw signature check: static key "
            + verdict(static, VERIFIER_TARGET)
            + f"; JWKS (warm) {results.verifier.ratios[JWKS]:.2f}x"
        )
    return "Target: none set for this scenario; the ratios above are the comparison."


# -- tables --------------------------------------------------------------------------------

HEADER = [
    "| server | median req/s | p50 ms | p99 ms | server CPU | req per server CPU-s "
    "| req/s per round | non-2xx |",
    "|---|---:|---:|---:|---:|---:|---|---:|",
]


def summary_row(s: Summary, label: str) -> str:
    rounds = ", ".join(f"{rps:.0f}" for rps in s.per_round)
    return (
        f"| {label} | {s.rps:,.0f} | {s.p50_ms:.2f} | {s.p99_ms:.2f} | {s.server_cpu:.0%} "
        f"| {s.per_cpu_second:,.0f} | {rounds} | {s.non2xx} |"
    )


def ratio_row(ours: Summary, theirs: Summary, label: str | None = None) -> str:
    def over(attribute: str) -> str:
        return f"{getattr(ours, attribute) / getattr(theirs, attribute):.2f}x"

    label = label or f"{ours.server} / {theirs.server}"
    return (
        f"| *{label}* | {over('rps')} | {over('p50_ms')} "
        f"| {over('p99_ms')} | | {over('per_cpu_second')} | | |"
    )


def scenario_table(scenario: Scenario, results: Results) -> list[str]:
    runs = results.runs
    own = [summarize(runs, scenario.key, name) for name in servers_of(runs, scenario.key)]
    lines = [*HEADER, *(summary_row(s, s.server) for s in own if s)]
    if scenario.key in METRICS_KEYS:  # tokenward against itself: no Express rows or ratios
        pair = metrics_pair(results, scenario.key)
        return lines + ([ratio_row(*pair, label="metrics on / metrics off")] if pair else [])
    express = [summarize(runs, scenario.key, name) for name in EXPRESS_NAMES]
    if scenario.baseline:  # this scenario ran no Express: borrow the baseline's runs
        express = [summarize(runs, scenario.baseline, name) for name in EXPRESS_NAMES]
        lines += [
            summary_row(s, f"{s.server}, from {scenario.baseline} above") for s in express if s
        ]
    lines += [
        ratio_row(ours, theirs)
        for ours in own
        if ours and is_tokenward(ours.server)
        for theirs in express
        if theirs
    ]
    return lines


def login_table(costs: Sequence[LoginCost]) -> list[str]:
    lines = [
        "| server | logins | login p50 ms | login p90 ms | password hash | hash p50 ms "
        "| overhead over the hash |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for c in costs:
        hash_ms = f"{c.hash_p50_ms:.1f}" if c.hash_p50_ms is not None else "in the login"
        overhead = f"{c.overhead:+.1%}" if c.overhead is not None else ""
        lines.append(
            f"| {c.server} | {c.samples} | {c.login_p50_ms:.1f} | {c.login_p90_ms:.1f} "
            f"| {c.hash_name} | {hash_ms} | {overhead} |"
        )
    return lines


def growth_table(databases: Sequence[tuple[str, SeededDatabase]]) -> list[str]:
    lines = [
        "| server | sessions seeded | seeding | `tokenward db prune` | sessions after prune "
        "(live) | users | events | database file | of it free pages |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, d in databases:
        lines.append(
            f"| {name} | {d.seeded:,} | {d.seed_seconds:.1f} s | {d.prune_report} "
            f"({d.prune_seconds:.1f} s) | {d.sessions:,} ({d.live_sessions:,}) | {d.users:,} "
            f"| {d.events:,} | {d.file_bytes / 2**20:,.1f} MiB | {d.free_bytes / 2**20:,.1f} MiB |"
        )
    return lines


def pool_lines(pools: Sequence[Pool]) -> list[str]:
    if not pools:
        return []
    made = "; ".join(f"{p.server} {p.distinct:,} distinct" for p in pools)
    return [
        f"Pools ({pools[0].lines:,} lines per server, collected in {pools[0].seconds:.0f} s): "
        f"{made}."
    ]


def growth_words(warm: float, first: float, last: float) -> str:
    """Whether memory grew past the warm-up, and whether it kept growing over the rounds."""

    def grew(before: float, after: float) -> bool:
        return after - before > max(2.0, 0.05 * before)

    if not grew(warm, last):
        return "no"
    return "yes, still over the rounds" if grew(first, last) else "yes, then flat"


def memory_table(runs: Sequence[Run], scenarios: Sequence[Scenario]) -> list[str]:
    lines = [
        "| scenario | server | after warm-up | after each round (MiB) | after the last round "
        "| change | grew? |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for scenario in scenarios:
        for server in filter(is_tokenward, servers_of(runs, scenario.key)):
            mine = sorted(
                (r for r in runs if r.scenario == scenario.key and r.server == server),
                key=lambda r: r.round,
            )
            mib = [r.rss_kib / 1024 for r in mine]
            measured = [r.rss_kib / 1024 for r in mine if r.round > 0]
            rounds = ", ".join(f"{value:.0f}" for value in measured)
            lines.append(
                f"| {scenario.key} | {server} | {mib[0]:.0f} MiB | {rounds} | {mib[-1]:.0f} MiB "
                f"| {mib[-1] - mib[0]:+.0f} MiB | {growth_words(mib[0], measured[0], mib[-1])} |"
            )
    return lines


# -- words ---------------------------------------------------------------------------------


def description(scenario: Scenario) -> str:
    wrk = f"`wrk -t {scenario.threads} -c {scenario.connections}`"
    if scenario.key.startswith("workers"):
        return (
            f"{wrk}. `tokenward serve --workers 2` and both Express servers started without "
            "taskset, and wrk without it: everything shares both cores. Server CPU counts all "
            "of a server's processes (200% is both cores); Node runs the tutorial's JavaScript "
            "on one thread however many cores there are."
        )
    return {
        "protected": f"{wrk}, one access token on every connection (bench/lua/protected.lua, "
        "a static request). tokenward: `GET /auth/me`; Express: `GET /protected` (HS256 "
        "verify, no storage).",
        "protected-pool": f"{wrk}, another token on every request from a file of "
        f"{POOL_SIZE:,} (bench/lua/protected_pool.lua; each wrk thread walks the file from "
        f"its own start). tokenward's: {TOKENWARD_SESSIONS} sessions logged in, each "
        "refreshed about a thousand times (every refresh returns a new access token and the "
        "earlier ones stay valid while the session lives), all distinct. Express's come from "
        "its own login and refresh; they hold only id, email and iat in whole seconds, so "
        f"{EXPRESS_USERS} users give {EXPRESS_USERS} new tokens a second while tokenward's "
        "pool is collected, and the file repeats them: the tutorial verifies every request "
        "afresh, so repetition changes nothing for it.",
        "refresh": f"{wrk}, one connection and one session per thread (sessions logged in "
        "before each run, outside the timing) with bench/lua/refresh.lua: each request sends "
        "the cookie the previous answer set, so each tokenward session is one unbroken "
        "rotation chain (a write transaction plus an audit row per call). Express `POST "
        "/refresh` is stateless: it verifies the JWT and signs a new access token, sets no "
        "new cookie, stores nothing.",
        "growth": f"{wrk}: scenario 2 against two tokenward servers that differ only in how "
        "many sessions their SQLite file holds (seeded straight into the file: "
        "bench/growth.py; the table under this one), alternating round by round.",
        "postgres": f"{wrk}: scenario 2 against tokenward on a real PostgreSQL "
        "(`TOKENWARD_DATABASE_URL`, `TOKENWARD_SECRET_KEY` set; the pgserver wheel's "
        "binaries started by tests/support/pgcluster.py, durable: fsync on).",
        "metrics-protected": f"{wrk}: scenario 1a (`GET /auth/me`, one token, "
        "bench/lua/protected.lua) against two tokenward servers that differ only in "
        "`TOKENWARD_METRICS` (off; on, with `TOKENWARD_METRICS_LISTEN` on a port of its own), "
        f"both pinned to core {SERVER_CORE} and each with its own data dir, alternating round "
        "by round. With metrics on, every request also counts into "
        "`tokenward_http_requests_total` and the duration histogram (prometheus_client's "
        "multiprocess mode, which `tokenward serve` uses even with one worker: values in "
        "memory-mapped files); nothing scrapes the listener during the runs. Both write "
        "tokenward's access line. No Express here: the ratio row is metrics on over off.",
        "metrics-refresh": f"{wrk}: scenario 2 (refresh with rotation, bench/lua/refresh.lua, "
        "fresh sessions per run) against the same two servers, alternating round by round. "
        "With metrics on, each refresh also counts its request, its result "
        "(`tokenward_refreshes_total`) and its security event. The ratio row is metrics on "
        "over off.",
    }[scenario.key]


def method_lines(results: Results) -> list[str]:
    rounds = results.rounds
    return [
        f"- Pinned scenarios: the server under test on core {SERVER_CORE} (`taskset -c "
        f"{SERVER_CORE}`), wrk on core {LOAD_CORE}. The servers a scenario compares run side "
        "by side and idle while another one is measured: one server under load at a time.",
        f"- Per scenario: {rounds.warmup} s warm-up per server, then {rounds.count} rounds of "
        f"{rounds.duration} s; every round visits every server once, and the order rotates "
        "from round to round. Medians are over the rounds (warm-up excluded); p50 and p99 are "
        "the medians of the per-round wrk percentiles.",
        "- Server CPU: the CPU time of the server's processes (all threads, all workers) over "
        "the run's wall time, from /proc; 100% is one core. req per server CPU-s is req/s "
        "over that share: the CPU cost side, which a neighbour stealing core time changes "
        "much less than req/s.",
        "- tokenward runs as shipped (`tokenward serve`: uvicorn, uvloop, httptools; "
        f"{results.access_log}) with two settings: `TOKENWARD_RATE_LIMITS=false` (its limits, "
        "e.g. 30 refreshes per minute per session, would answer this load with 429s) and "
        "`TOKENWARD_ACCESS_TTL=1h` (token pools are made before the runs that use them). "
        "Express runs `node server.js` / `node server-tuned.js` with NODE_ENV unset.",
        "- The Lua scripts print one `BENCH_RESULT` JSON line from `done()`; scripts with "
        "`request()`/`response()` callbacks cost wrk more CPU than a static request.",
    ]


# -- the file ------------------------------------------------------------------------------


def check_lines(results: Results) -> list[str]:
    runs, scenarios = results.runs, results.scenarios
    pinned_keys = {s.key for s in scenarios if s.pinned}
    pinned = [r for r in runs if r.round > 0 and r.scenario in pinned_keys]
    starved = [r for r in pinned if r.server_cpu < 0.8]
    problems = [f"stage failed: {failure}" for failure in results.failures]
    problems += [
        f"{r.scenario} / {r.server} / round {r.round}: {p}" for r in runs for p in r.problems
    ]
    noise = [
        f"- {len(starved)} of {len(pinned)} measured pinned runs had the server below 80% of "
        f"core {SERVER_CORE} while wrk kept it busy: other processes on this shared machine "
        "took the rest. req/s moves with that share; req per server CPU-s much less."
    ]
    return [
        *(noise if pinned else []),
        *(
            [f"- PROBLEM: {p}" for p in problems]
            if problems
            else ["- No socket errors, timeouts or non-2xx answers in any run (warm-ups included)."]
        ),
    ]


def section(title: str, *parts: Sequence[str]) -> list[str]:
    lines = [f"## {title}", ""]
    for part in parts:
        if part:
            lines += [*part, ""]
    return lines


def scenario_sections(results: Results, keys: Sequence[str]) -> list[str]:
    lines: list[str] = []
    for scenario in (s for s in results.scenarios if s.key in keys):
        notes = results.notes.get(scenario.key, [])
        extra = pool_lines(results.pools) if scenario.route == "pool" else []
        if scenario.key == "growth":
            extra = growth_table(results.growth)
        if scenario.key == "postgres":
            extra = pgbench_table(results)
        lines += section(
            scenario.title,
            [description(scenario)],
            notes,
            scenario_table(scenario, results),
            extra,
            [target_line(scenario.key, results)],
        )
    return lines


def other_sections(results: Results) -> list[str]:
    lines: list[str] = []
    if results.logins:
        lines += section(
            "3. Login: sequential logins against the password hash",
            results.notes.get("login", []),
            login_table(results.logins),
            [target_line("login", results)],
        )
    if results.enumeration:
        lines += section(
            "3b. Login timing: unknown email vs wrong password (enumeration)",
            [
                "Against the same tokenward server (`bench/login_timing.py`, also runnable "
                "alone), one request at a time, alternating:"
            ],
            [results.enumeration.markdown()],
        )
    if results.forgot:
        lines += section(
            "3c. Forgot password: an address with an account vs one without (enumeration)",
            [
                "Against the same tokenward server (`bench/forgot_timing.py`, also runnable "
                "alone), one request at a time, alternating; each queues one job row and "
                "answers the same 202 (docs/email.md). Target: the ratio of medians within "
                "[0.8, 1.25] (tests/test_email_process.py checks the bytes and the work):"
            ],
            [results.forgot.markdown()],
            [target_line("forgot", results)],
        )
    if results.verifier:
        lines += section(
            "4. Verifier: tokenward.verify per token vs the raw signature check",
            [
                "In-process, pinned to the server core, after the HTTP scenarios "
                "(`bench/verifier.py`, also runnable alone): the floor is `cryptography`'s "
                "ECDSA P-256 verify on the same key and message."
            ],
            [results.verifier.table.strip()],
            [target_line("verifier", results)],
        )
    return lines


def target_summary(results: Results) -> list[str]:
    keys = [s.key for s in results.scenarios]
    keys += ["login"] if results.logins else []
    keys += ["forgot"] if results.forgot else []
    keys += ["verifier"] if results.verifier else []
    lines = [
        f"- {key}: {target_line(key, results).removeprefix('Target: ')}"
        for key in keys
        if key in TARGETED
    ]
    untargeted = [key for key in keys if key not in TARGETED]
    return lines + ([f"- no target set for: {', '.join(untargeted)}"] if untargeted else [])


def write(results: Results) -> None:
    end_load = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    lines = [
        "# tokenward vs the tutorial's Express server",
        "",
        f"Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"the whole run took {results.seconds / 60:.1f} min.",
        "",
        f"Command (from the repository root): {results.command}",
        "",
        "The machine is shared and noisy: read medians and ratios, not single numbers. "
        "Ratios are tokenward's value over Express's (in 9a and 9b, metrics on over "
        "metrics off): above 1 is better for req/s and req per CPU-s, worse for latency.",
        "",
        *section("Targets", target_summary(results)),
        *scenario_sections(results, ("protected", "protected-pool", "refresh")),
        *other_sections(results),  # 3 and 4
        *scenario_sections(results, ("growth", "postgres", "workers-protected", "workers-refresh")),
        *section(
            "8. Memory: RSS of tokenward's worker processes after each round",
            [
                "VmRSS from /proc after every run; with `--workers 2` the sum of both "
                "workers (not the supervisor). 'Grew' means more than 2 MiB and 5% above "
                "the warm-up; 'still' means the same again from the first round to the last."
            ],
            memory_table(results.runs, results.scenarios),
        ),
        *scenario_sections(results, METRICS_KEYS),
        *section("Checks", check_lines(results)),
        *section(
            "Machine",
            [f"- {key}: {value}" for key, value in results.facts.items()]
            + [f"- load average at end (1/5/15 min): {end_load}"],
        ),
        *section("Method", method_lines(results)),
        "Raw per-run numbers: bench/.work/last-run.json; wrk output: bench/.work/logs/wrk.log.",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    raw: dict[str, Any] = {
        "facts": results.facts,
        "runs": [asdict(r) for r in results.runs],
        "logins": [asdict(c) for c in results.logins],
        "growth": [
            {"server": n, **asdict(d), "data_dir": str(d.data_dir)} for n, d in results.growth
        ],
    }
    (WORK / "last-run.json").write_text(json.dumps(raw, indent=2))
