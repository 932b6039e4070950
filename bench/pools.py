"""Token pools for the protected-route scenario with many tokens (bench/lua/protected_pool.lua).

tokenward: log in to a few sessions, then refresh each session many times; every refresh
returns a new access token and the earlier ones stay valid while the session lives (the
servers run with TOKENWARD_ACCESS_TTL=1h, so none expires mid-run). The sessions' chains run
concurrently.

Express: its own register, login and refresh. Its tokens carry only id, email, iat and exp,
and iat counts whole seconds, so one user yields one new token per second: its users refresh
once a second for as long as tokenward's pool takes, and the file repeats the tokens it got.
The tutorial's verify has no cache, so repetition does not change what a request costs it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from accounts import EMAIL, PASSWORD, cookie_value
from servers import LOAD_CORE, WORK, Server, log, pinned_to, slug

POOL_SIZE = 10_000
TOKENWARD_SESSIONS = 10
EXPRESS_USERS = 10
POOLS = WORK / "pools"


@dataclass(frozen=True)
class Pool:
    server: str
    lines: int
    distinct: int
    seconds: float


def pool_path(server: Server) -> Path:
    return POOLS / f"{slug(server.name)}.txt"


async def _post(
    client: httpx.AsyncClient,
    path: str,
    *,
    json: object = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    response = await client.post(path, json=json, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"{path} -> {response.status_code} {response.text[:200]}")
    return response


async def _log_in(client: httpx.AsyncClient, server: Server, email: str) -> httpx.Response:
    return await _post(client, server.api.login, json={"email": email, "password": PASSWORD})


async def _refresh(client: httpx.AsyncClient, server: Server, cookie: str) -> httpx.Response:
    # An explicit Cookie header wins over the client's jar, which the chains share.
    headers = {"Cookie": f"{server.api.cookie}={cookie}"}
    return await _post(client, server.api.refresh, headers=headers)


async def _tokenward_chain(client: httpx.AsyncClient, server: Server, refreshes: int) -> list[str]:
    """One session: its login's access token, then one more per rotation."""
    response = await _log_in(client, server, EMAIL)
    tokens = [response.json()[server.api.token_field]]
    for _ in range(refreshes):
        response = await _refresh(client, server, cookie_value(response, server.api.cookie))
        tokens.append(response.json()[server.api.token_field])
    return tokens


async def tokenward_tokens(server: Server, count: int, sessions: int) -> list[str]:
    refreshes = -(-count // sessions) - 1  # ceil: the login gives each session its first
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        chains = await asyncio.gather(
            *(_tokenward_chain(client, server, refreshes) for _ in range(sessions))
        )
    return [token for chain in chains for token in chain]


async def express_tokens(server: Server, users: int, enough: asyncio.Event) -> list[str]:
    """Register and log in ``users``, then refresh them all once a second until ``enough``."""
    found: set[str] = set()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        cookies = []
        for n in range(users):
            email = f"pool-{n}@example.com"
            body = {"email": email, "password": PASSWORD}
            await _post(client, server.api.register, json=body)
            response = await _log_in(client, server, email)
            found.add(response.json()[server.api.token_field])
            cookies.append(cookie_value(response, server.api.cookie))
        while True:
            tick = time.monotonic()
            answers = await asyncio.gather(*(_refresh(client, server, c) for c in cookies))
            found.update(answer.json()[server.api.token_field] for answer in answers)
            if enough.is_set():
                return sorted(found)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


async def _collect(tokenward: Server, express: list[Server]) -> dict[str, list[str]]:
    enough = asyncio.Event()
    others = [asyncio.create_task(express_tokens(s, EXPRESS_USERS, enough)) for s in express]
    try:
        ours = await tokenward_tokens(tokenward, POOL_SIZE, TOKENWARD_SESSIONS)
    finally:
        enough.set()  # the Express collectors stop after their current tick
    theirs = await asyncio.gather(*others)
    return {tokenward.name: ours} | {s.name: t for s, t in zip(express, theirs, strict=True)}


def write_pool(path: Path, tokens: list[str]) -> int:
    """Shuffled (neighbouring requests: other sessions), repeated up to POOL_SIZE lines."""
    distinct = sorted(set(tokens))
    random.Random(0).shuffle(distinct)
    lines = list(itertools.islice(itertools.cycle(distinct), POOL_SIZE))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return len(distinct)


def check_pool(server: Server, tokens: list[str], samples: int = 20) -> None:
    """A few tokens by hand: a pool the server refuses would measure 401s."""
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for token in random.Random(1).sample(tokens, min(samples, len(tokens))):
            headers = {"Authorization": f"Bearer {token}"}
            status = client.get(server.api.protected, headers=headers).status_code
            if status != 200:
                raise RuntimeError(f"{server.name}: a pool token -> {status}")


def make_pools(tokenward: Server, express: list[Server]) -> list[Pool]:
    """Collect, write and check a pool file for every server; Express tokens live 15 min."""
    log(f"\ntoken pools: {POOL_SIZE:,} lines per server")
    started = time.monotonic()
    with pinned_to(LOAD_CORE):  # the clients keep off the servers' core
        collected = asyncio.run(_collect(tokenward, express))
    seconds = time.monotonic() - started
    made = []
    for server in [tokenward, *express]:
        tokens = collected[server.name]
        distinct = write_pool(pool_path(server), tokens)
        check_pool(server, tokens)
        made.append(Pool(server.name, POOL_SIZE, distinct, seconds))
        log(f"  {server.name}: {distinct:,} distinct tokens in {seconds:.0f} s")
    return made
