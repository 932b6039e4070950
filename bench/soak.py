"""Load soak: many simulated users against a real `tokenward serve`, on SQLite or PostgreSQL.

Each user loops: log in, call /auth/me a few times, refresh a few times (following the cookie
chain), and now and then log out. The run must end with zero 5xx answers, zero lost sessions
(a user's newest refresh cookie always works until that user logs out) and flat memory (the
server's RSS at the end within 10% of its RSS after warm-up). Per-endpoint p50/p99 latency
is reported. ``make soak`` runs it on SQLite and on PostgreSQL, with the rate limits off, then
once with them on (429s expected, still no 5xx).

    .venv/bin/python bench/soak.py --database sqlite --users 200 --duration 120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from servers import running, tokenward_server

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "violet tangerine ladder 42"
COOKIE = "tw_refresh"


@dataclass
class Gate:
    """Lets the soak pause its users, so that memory is read with no request in flight:
    argon2 takes 64 MiB per login while it runs, which says nothing about leaks."""

    open: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0

    def enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self.idle.set()

    async def quiet_rss(self, pid: int) -> int:
        self.open.clear()
        await self.idle.wait()
        await asyncio.sleep(1.0)
        rss = rss_kib(pid)
        self.open.set()
        return rss


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    latency: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    lost_sessions: int = 0
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    requests: int = 0

    def record(self, name: str, response: httpx.Response, seconds: float) -> None:
        self.requests += 1
        self.statuses[f"{name} {response.status_code}"] += 1
        self.latency[name].append(seconds)
        if response.status_code >= 500:
            self.server_errors.append(f"{name} {response.status_code} {response.text[:200]}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


GATE: Gate | None = None


async def timed(tally: Tally, name: str, call: Awaitable[httpx.Response]) -> httpx.Response:
    assert GATE is not None
    await GATE.open.wait()
    GATE.enter()
    started = time.perf_counter()
    try:
        response = await call
    finally:
        GATE.leave()
    tally.record(name, response, time.perf_counter() - started)
    return response


async def user(client: httpx.AsyncClient, email: str, tally: Tally, stop: asyncio.Event) -> None:
    rng = random.Random(email)  # load shape, not security
    while not stop.is_set():
        try:
            await one_visit(client, email, tally, stop, rng)
        except httpx.TransportError as error:  # a dropped connection: counted, and a failure
            tally.transport_errors.append(f"{type(error).__name__}: {error}")


async def one_visit(
    client: httpx.AsyncClient,
    email: str,
    tally: Tally,
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    """Log in, use the session for a while, sometimes log out."""
    credentials = {"email": email, "password": PASSWORD}
    if stop.is_set():
        return
    login = await timed(tally, "login", client.post("/auth/login", json=credentials))
    if login.status_code != 200:
        await asyncio.sleep(1)  # rate-limited or busy: back off like a person would
        return
    cookie = login.cookies[COOKIE]
    access = login.json()["access_token"]
    for _ in range(rng.randint(3, 8)):
        if stop.is_set():
            return
        for _ in range(rng.randint(1, 4)):
            me = await timed(
                tally,
                "me",
                client.get("/auth/me", headers={"Authorization": f"Bearer {access}"}),
            )
            if me.status_code == 401:
                tally.lost_sessions += 1
        refreshed = await timed(
            tally,
            "refresh",
            client.post("/auth/refresh", headers={"Cookie": f"{COOKIE}={cookie}"}),
        )
        if refreshed.status_code == 200:
            cookie = refreshed.cookies[COOKIE]
            access = refreshed.json()["access_token"]
        elif refreshed.status_code == 401:
            tally.lost_sessions += 1  # the newest cookie of a live session was refused
            break
        await asyncio.sleep(rng.uniform(0.05, 0.3))
    if rng.random() < 0.3:
        await timed(
            tally,
            "logout",
            client.post("/auth/logout", headers={"Cookie": f"{COOKIE}={cookie}"}),
        )


async def register_all(base: str, emails: list[str], tally: Tally) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        semaphore = asyncio.Semaphore(16)

        async def one(email: str) -> None:
            async with semaphore:
                payload = {"email": email, "password": PASSWORD}
                response = await timed(
                    tally, "register", client.post("/auth/register", json=payload)
                )
                if response.status_code not in (201, 429):
                    raise RuntimeError(f"register {email}: {response.status_code} {response.text}")

        await asyncio.gather(*(one(email) for email in emails))


async def soak(
    base: str, pid: int, users: int, duration: float, warmup: float
) -> dict[str, object]:
    global GATE  # one soak per process
    GATE = Gate()
    GATE.open.set()
    GATE.idle.set()
    tally = Tally()
    emails = [f"soak{n}@example.com" for n in range(users)]
    await register_all(base, emails, tally)
    # Idle connections expire on our side (2 s) before uvicorn closes them (5 s), so a request
    # never races the server's keep-alive timeout on a connection it is closing.
    limits = httpx.Limits(
        max_connections=users, max_keepalive_connections=users, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(user(client, email, tally, stop)) for email in emails]
        await asyncio.sleep(warmup)
        rss_after_warmup = await GATE.quiet_rss(pid)
        requests_at_warmup = tally.requests
        samples = [rss_after_warmup]
        started = time.monotonic()
        while time.monotonic() - started < duration:
            await asyncio.sleep(min(15.0, duration))
            samples.append(await GATE.quiet_rss(pid))
        stop.set()
        await asyncio.gather(*tasks)
    await asyncio.sleep(1.0)
    rss_end = rss_kib(pid)
    latency = {
        name: {
            "count": len(values),
            "p50_ms": round(statistics.median(values) * 1000, 1),
            "p99_ms": round(statistics.quantiles(values, n=100)[98] * 1000, 1)
            if len(values) >= 100
            else None,
        }
        for name, values in sorted(tally.latency.items())
    }
    return {
        "users": users,
        "seconds": duration,
        "requests": tally.requests,
        "requests_after_warmup": tally.requests - requests_at_warmup,
        "server_errors": len(tally.server_errors),
        "first_server_errors": tally.server_errors[:5],
        "transport_errors": len(tally.transport_errors),
        "first_transport_errors": tally.transport_errors[:5],
        "lost_sessions": tally.lost_sessions,
        "rate_limited": sum(n for key, n in tally.statuses.items() if key.endswith(" 429")),
        "rss_kib_after_warmup": rss_after_warmup,
        "rss_kib_end": rss_end,
        "rss_growth": round(rss_end / rss_after_warmup - 1, 3),
        "rss_samples_kib": samples,
        "latency": latency,
        "statuses": dict(sorted(tally.statuses.items())),
    }


@contextmanager
def database(kind: str, data_dir: Path) -> Iterator[dict[str, str]]:
    env = {"TOKENWARD_DATA_DIR": str(data_dir)}
    if kind == "sqlite":
        yield env
        return
    sys.path.insert(0, str(REPO / "tests"))
    from support.pgcluster import PostgresCluster

    cluster = PostgresCluster(durable=True)
    try:
        cluster.start()
        cluster.psql("CREATE DATABASE soak")
        yield {
            **env,
            "TOKENWARD_DATABASE_URL": cluster.url("soak"),
            "TOKENWARD_SECRET_KEY": secrets.token_urlsafe(48),
        }
    finally:
        cluster.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds after warm-up")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--rate-limits", action="store_true", help="keep the rate limits on")
    parser.add_argument("--json", type=Path, help="also write the result here")
    options = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="tokenward-soak-") as folder,
        database(options.database, Path(folder) / "data") as env,
    ):
        data_dir = Path(env.pop("TOKENWARD_DATA_DIR"))
        settings = {name.removeprefix("TOKENWARD_").lower(): value for name, value in env.items()}
        server = tokenward_server(
            data_dir,
            name=f"tokenward soak ({options.database})",
            pinned=False,
            rate_limits="true" if options.rate_limits else "false",
            access_ttl="15m",  # the default: the soak's users refresh as real clients do
            **settings,
        )
        with running([server]):
            result = asyncio.run(
                soak(server.base_url, server.pid, options.users, options.duration, options.warmup)
            )
    result = {"database": options.database, "rate_limits": options.rate_limits, **result}
    text = json.dumps(result, indent=2)
    print(text)
    if options.json:
        options.json.write_text(text + "\n")
    failed = (
        result["server_errors"]
        or result["transport_errors"]
        or (result["lost_sessions"] and not options.rate_limits)
    )
    flat = float(result["rss_growth"]) <= 0.10  # type: ignore[arg-type]
    if not flat:
        print("RSS grew more than 10% after warm-up", file=sys.stderr)
    return 1 if failed or not flat else 0


if __name__ == "__main__":
    sys.exit(main())
