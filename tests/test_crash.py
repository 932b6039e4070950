"""Crash safety of a real `tokenward serve`: SIGKILL in the middle of traffic, SIGTERM with
requests in flight. On each database (``pytest`` and ``pytest --database=postgresql``).

After a SIGKILL, whatever a client was told happened did happen, and nothing happened by
halves: each user, session and rotation is in the database together with its audit event, or
not at all. After a SIGTERM, uvicorn stops accepting, answers every request it had already
read, runs the app's shutdown and exits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import signal
import sqlite3
import time
import uuid
from collections import Counter
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from support import (
    COOKIE,
    FAST_HASHER,
    PASSWORD,
    TOKENWARD,
    Server,
    make_settings,
    refresh_cookie,
    server_process,
)

from tokenward.app.service import AuthService
from tokenward.core.events import ClientInfo

# Rate limits out of the way (this is about the database), and a reuse interval that outlasts
# the restart, so that a rotation which committed just before the kill never makes the
# client's newest token look stolen (see the chain checks below).
ENV = {"TOKENWARD_RATE_LIMITS": "false", "TOKENWARD_REFRESH_REUSE_INTERVAL": "120"}
TABLES = ("users", "sessions", "events", "signing_keys", "clients", "alembic_version")


def running(data_dir: Path) -> AbstractContextManager[Server]:
    """`tokenward serve` with one worker, its process handed out to be killed or stopped."""
    return server_process(data_dir, args=["--workers", "1"], **ENV)


class Tables:
    """The test's database read directly, not through tokenward: sqlite3 on the file, or
    asyncpg on the PostgreSQL database that TOKENWARD_DATABASE_URL names."""

    def __init__(self, data_dir: Path) -> None:
        url = os.environ.get("TOKENWARD_DATABASE_URL")
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1) if url else None
        self.path = data_dir / "tokenward.db"

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.dsn is None:
            with contextlib.closing(sqlite3.connect(self.path)) as db:
                return db.execute(sql).fetchall()
        connection = await asyncpg.connect(self.dsn)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    async def value(self, sql: str) -> Any:
        [(value,)] = await self.rows(sql)
        return value

    async def check_sound(self, *, cli: bool = False) -> None:
        """The storage itself is whole, and the schema at the head migration (also according
        to ``tokenward db check``, with ``cli``)."""
        if self.dsn is None:
            assert await self.rows("PRAGMA integrity_check") == [("ok",)]
        else:
            # The dead server's connections are gone, and with them its locks.
            deadline = time.monotonic() + 10
            while await self.value(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ):
                assert time.monotonic() < deadline, "the killed server's backends linger"
                await asyncio.sleep(0.1)
        for table in TABLES:
            await self.rows(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed names
        assert await self.value("SELECT count(*) FROM alembic_version") == 1
        if not cli:
            return
        check = await asyncio.create_subprocess_exec(
            TOKENWARD,
            "db",
            "check",
            env={**os.environ, "TOKENWARD_DATA_DIR": str(self.path.parent), **ENV},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await check.communicate()
        assert check.returncode == 0, output.decode()
        assert b"migrations current" in output

    async def check_all_or_nothing(self) -> None:
        """Every row that a request writes is there with the audit event of the same
        transaction: no user, session or rotation without its event, nor the other way."""
        for name, sql in {
            "user without its user.registered event": (
                "SELECT count(*) FROM users AS u WHERE (SELECT count(*) FROM events AS e"
                " WHERE e.user_id = u.id AND e.type = 'user.registered') <> 1"
            ),
            "user.registered event without its user": (
                "SELECT count(*) FROM events AS e WHERE e.type = 'user.registered'"
                " AND NOT EXISTS (SELECT 1 FROM users AS u WHERE u.id = e.user_id)"
            ),
            "session without its login.succeeded event": (
                "SELECT count(*) FROM sessions AS s WHERE (SELECT count(*) FROM events AS e"
                " WHERE e.session_id = s.id AND e.type = 'login.succeeded') <> 1"
            ),
            "login.succeeded event without its session": (
                "SELECT count(*) FROM events AS e WHERE e.type = 'login.succeeded'"
                " AND NOT EXISTS (SELECT 1 FROM sessions AS s WHERE s.id = e.session_id)"
            ),
            "generation that is not the number of session.refreshed events": (
                "SELECT count(*) FROM sessions AS s WHERE s.generation <> (SELECT count(*)"
                " FROM events AS e WHERE e.session_id = s.id AND e.type = 'session.refreshed')"
            ),
            "ended session (nothing here ends one)": (
                "SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL"
            ),
            "event of another kind (a failure, a reuse)": (
                "SELECT count(*) FROM events WHERE type NOT IN"
                " ('user.registered', 'login.succeeded', 'session.refreshed')"
            ),
        }.items():
            assert await self.value(sql) == 0, name

    async def generations(self) -> dict[str, int]:
        return dict(await self.rows("SELECT id, generation FROM sessions"))

    async def sessions_per_email(self) -> Counter[str]:
        rows = await self.rows(
            "SELECT u.email, count(s.id) FROM users AS u"
            " LEFT JOIN sessions AS s ON s.user_id = u.id GROUP BY u.email"
        )
        return Counter(dict(rows))


def parse_refresh_token(token: str) -> tuple[str, int]:
    """(session id, generation) of a refresh token; the layout is in tokenward/refresh.py."""
    body = token.removeprefix("twr_")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return str(uuid.UUID(bytes=raw[1:17])), int.from_bytes(raw[17:25], "big")


def _cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={token}"}


def _credentials(email: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD}


# -- SIGKILL -----------------------------------------------------------------------------------

CHAINS = 16  # refresh loops, each on a session of its own (one user's)
REGISTER_LOOPS = 2  # new emails, one after another
LOGIN_LOOPS = 2  # logins of one user each, again and again
CHAIN_USER = "chains@example.com"


async def _chain_sessions(data_dir: Path) -> list[str]:
    """CHAINS sessions of CHAIN_USER, made in-process with cheap argon2 (the server's real
    argon2 would spend seconds on them); the refresh tokens of their first generation."""
    service = await AuthService.open(make_settings(data_dir, rate_limits=False), hasher=FAST_HASHER)
    client = ClientInfo(ip="127.0.0.1", user_agent="seed")
    try:
        await service.accounts.register(CHAIN_USER, PASSWORD, client)
        return [
            (await service.sessions.login(CHAIN_USER, PASSWORD, client)).refresh_token
            for _ in range(CHAINS)
        ]
    finally:
        await service.close()


@dataclass
class Chain:
    token: str  # the newest token answered with 200
    in_flight: bool = False  # its refresh was cut off by the kill

    @property
    def session_id(self) -> str:
        return parse_refresh_token(self.token)[0]

    @property
    def generation(self) -> int:
        return parse_refresh_token(self.token)[1]


@dataclass
class Traffic:
    chains: list[Chain]
    killed: bool = False
    registered: set[str] = field(default_factory=set)
    uncertain_registrations: set[str] = field(default_factory=set)
    logins: Counter[str] = field(default_factory=Counter)
    uncertain_logins: Counter[str] = field(default_factory=Counter)
    in_flight: Counter[str] = field(default_factory=Counter)
    rotations: int = 0
    cut_off: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, error class)
    unexpected: list[str] = field(default_factory=list)

    async def send(self, kind: str, request: Any) -> httpx.Response | None:
        """The response, or None when the kill cut the request off (then the caller stops)."""
        self.in_flight[kind] += 1
        try:
            return await request
        except httpx.TransportError as exc:
            if not self.killed:
                self.unexpected.append(f"{kind}: {exc!r} before the kill")
            self.cut_off[kind, type(exc).__name__] += 1
            return None
        finally:
            self.in_flight[kind] -= 1

    async def register_loop(self, client: httpx.AsyncClient, loop: int) -> None:
        for number in itertools.count():
            if self.killed:
                return
            email = f"new{loop}-{number}@example.com"
            response = await self.send(
                "register", client.post("/auth/register", json=_credentials(email))
            )
            if response is None:
                self.uncertain_registrations.add(email)
                return
            if response.status_code == 201:
                self.registered.add(email)
            else:
                self.unexpected.append(f"register: {response.status_code} {response.text}")

    async def login_loop(self, client: httpx.AsyncClient, email: str) -> None:
        while not self.killed:
            response = await self.send(
                "login", client.post("/auth/login", json=_credentials(email))
            )
            if response is None:
                self.uncertain_logins[email] += 1
                return
            if response.status_code == 200:
                self.logins[email] += 1
            else:
                self.unexpected.append(f"login: {response.status_code} {response.text}")

    async def refresh_loop(self, client: httpx.AsyncClient, chain: Chain) -> None:
        while not self.killed:
            response = await self.send(
                "refresh", client.post("/auth/refresh", headers=_cookie(chain.token))
            )
            if response is None:
                chain.in_flight = True
                return
            if response.status_code == 200:
                chain.token = refresh_cookie(response)
                self.rotations += 1
            else:
                self.unexpected.append(f"refresh: {response.status_code} {response.text}")
                return


async def test_sigkill_mid_traffic_loses_nothing_answered_and_leaves_nothing_half_done(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    database = Tables(data_dir)
    login_users = [f"login{n}@example.com" for n in range(LOGIN_LOOPS)]
    parallel = CHAINS + REGISTER_LOOPS + LOGIN_LOOPS
    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)

    traffic = Traffic(chains=[Chain(token) for token in await _chain_sessions(data_dir)])
    with running(data_dir) as server:
        async with httpx.AsyncClient(base_url=server.base, timeout=60, limits=limits) as client:
            registrations = await asyncio.gather(
                *(client.post("/auth/register", json=_credentials(e)) for e in login_users)
            )
            assert {response.status_code for response in registrations} == {201}

            tasks = [
                *(
                    asyncio.create_task(traffic.register_loop(client, n))
                    for n in range(REGISTER_LOOPS)
                ),
                *(asyncio.create_task(traffic.login_loop(client, e)) for e in login_users),
                *(asyncio.create_task(traffic.refresh_loop(client, c)) for c in traffic.chains),
            ]
            started = time.monotonic()
            await asyncio.sleep(1.5)
            # Argon2 is slow here: let a few registrations and logins through first, so that
            # there is something to lose, and a rotation per chain on average.
            while (
                len(traffic.registered) < 2
                or traffic.logins.total() < 2
                or traffic.rotations < CHAINS
            ):
                assert time.monotonic() - started < 20, traffic
                assert not traffic.unexpected, traffic.unexpected
                await asyncio.sleep(0.05)
            # A refresh takes well under a millisecond of the server's time: kill while one
            # is on its way (and a slow request too), not between two of them.
            while not (traffic.in_flight["refresh"] and traffic.in_flight["login"]):
                assert time.monotonic() - started < 30, traffic
                await asyncio.sleep(0)
            server.process.kill()
            traffic.killed = True
            in_flight_at_kill = +traffic.in_flight
            assert await asyncio.to_thread(server.process.wait, 10) == -signal.SIGKILL
            await asyncio.wait_for(asyncio.gather(*tasks), 30)

    # The kill really cut requests off, of each kind, while the server was working on them.
    assert not traffic.unexpected, traffic.unexpected
    # Connections lost mid-request (not refused: ConnectError), for cheap and slow requests.
    dropped = Counter(kind for kind, error in traffic.cut_off.elements() if error != "ConnectError")
    assert dropped["refresh"] >= 1, traffic.cut_off
    assert dropped["register"] + dropped["login"] >= 1, traffic.cut_off

    # The database as the kill left it, read before anything opens it again.
    await database.check_sound(cli=True)
    await database.check_all_or_nothing()
    emails = set(await database.sessions_per_email())
    assert traffic.registered <= emails  # every 201 is a user
    assert emails - traffic.registered - {CHAIN_USER, *login_users} <= (
        traffic.uncertain_registrations
    )
    sessions = await database.sessions_per_email()
    assert sessions[CHAIN_USER] == CHAINS
    for email in login_users:  # one session per login answered 200, plus any cut off
        answered, uncertain = traffic.logins[email], traffic.uncertain_logins[email]
        assert answered <= sessions[email] <= answered + uncertain, (email, sessions, traffic)
    generations = await database.generations()
    for chain in traffic.chains:
        # The newest rotation answered is there; one more only if one was cut off.
        stored = generations[chain.session_id]
        assert chain.generation <= stored <= chain.generation + chain.in_flight, (chain, stored)
    cut_rotations = sum(
        generations[chain.session_id] - chain.generation for chain in traffic.chains
    )

    with running(data_dir) as server:
        async with httpx.AsyncClient(base_url=server.base, timeout=60, limits=limits) as client:
            assert (await client.get("/readyz")).status_code == 200

            async def continue_chain(chain: Chain) -> None:
                # The newest token answered 200 still refreshes, to generation + 1 whether the
                # cut-off rotation committed (the same successor again) or not (a new one):
                # one successor per token, never two.
                first = await client.post("/auth/refresh", headers=_cookie(chain.token))
                assert first.status_code == 200, (chain, first.text)
                successor = refresh_cookie(first)
                assert parse_refresh_token(successor) == (
                    chain.session_id,
                    chain.generation + 1,
                )
                second = await client.post("/auth/refresh", headers=_cookie(successor))
                assert second.status_code == 200, (chain, second.text)
                chain.token = refresh_cookie(second)

            async def sign_in_again(email: str) -> None:
                response = await client.post("/auth/login", json=_credentials(email))
                assert response.status_code == 200, (email, response.text)

            async def register_again(email: str) -> None:
                # A registration the kill cut off before it committed left nothing behind.
                response = await client.post("/auth/register", json=_credentials(email))
                assert response.status_code == 201, (email, response.text)

            await asyncio.gather(
                *(continue_chain(chain) for chain in traffic.chains),
                *(sign_in_again(email) for email in traffic.registered),
                *(
                    sign_in_again(email) if email in emails else register_again(email)
                    for email in traffic.uncertain_registrations
                ),
            )

    await database.check_sound()
    await database.check_all_or_nothing()
    generations = await database.generations()
    for chain in traffic.chains:
        assert generations[chain.session_id] == chain.generation
    print(  # shown with -s: what the kill interrupted
        f"in flight at the kill: {dict(in_flight_at_kill)}; cut off: {dict(traffic.cut_off)}; "
        f"rotations before: {traffic.rotations}, committed but unanswered: {cut_rotations}; "
        f"registered: {len(traffic.registered)}, logins: {traffic.logins.total()}"
    )


# -- SIGTERM -----------------------------------------------------------------------------------

LOGINS = 12


async def _refused(base: str, deadline: float) -> float:
    """When a new connection to ``base`` was first not served: refused (the listener is
    closed), or taken from the kernel's backlog at the last moment and closed unanswered."""
    while True:
        try:
            async with httpx.AsyncClient(base_url=base, timeout=5) as probe:
                await probe.get("/healthz")
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
            return time.monotonic()
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        await asyncio.sleep(0.02)


async def test_sigterm_answers_every_request_in_flight_then_exits(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    email = "ada@example.com"
    with running(data_dir) as server:
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
            response = await client.post("/auth/register", json=_credentials(email))
            assert response.status_code == 201

        sent = 0
        all_sent = asyncio.Event()

        async def trace(event: str, _info: dict[str, Any]) -> None:
            nonlocal sent
            if event == "http11.send_request_body.complete":
                sent += 1
                if sent == LOGINS:
                    all_sent.set()

        async def login(client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
            response = await client.post(
                "/auth/login", json=_credentials(email), extensions={"trace": trace}
            )
            return response, time.monotonic()

        limits = httpx.Limits(max_connections=LOGINS, max_keepalive_connections=LOGINS)
        async with httpx.AsyncClient(base_url=server.base, timeout=60, limits=limits) as client:
            tasks = [asyncio.create_task(login(client)) for _ in range(LOGINS)]
            # Every request is out on the wire (and read by the server's loop) before the signal.
            await asyncio.wait_for(all_sent.wait(), 30)
            await asyncio.sleep(0.1)
            answered_before = sum(task.done() for task in tasks)
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            refused = await _refused(server.base, signalled + 10)
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            returncode = await asyncio.to_thread(server.process.wait, 30)
            stopped = time.monotonic()

        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        assert not errors, errors  # no request already sent was dropped
        answers = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        assert [response.status_code for response, _ in answers] == [200] * LOGINS
        answered_after = [at for _, at in answers if at > signalled]
        assert LOGINS - answered_before == len(answered_after) >= 1  # really in flight
        # It stopped taking connections while still answering the ones it had.
        assert refused < max(answered_after), (refused, answered_after)
        # Answers written after the shutdown began close their connection.
        for response, at in answers:
            if at > refused + 0.2:
                assert response.headers.get("connection") == "close", response.headers
        # uvicorn ends by raising the SIGTERM it caught again, once the app shut down cleanly.
        assert returncode in (0, -signal.SIGTERM), returncode
        assert stopped - signalled < 30
        log = server.log.read_text()
        assert "Waiting for connections to close" in log
        assert "Application shutdown complete" in log
        assert "Traceback" not in log, log

    # The logins answered during the drain were committed: their tokens work after a restart.
    with running(data_dir) as server:
        async with httpx.AsyncClient(base_url=server.base, timeout=60, limits=limits) as client:
            assert (await client.get("/readyz")).status_code == 200
            refreshed = await asyncio.gather(
                *(
                    client.post("/auth/refresh", headers=_cookie(refresh_cookie(response)))
                    for response, _ in answers
                )
            )
            assert [response.status_code for response in refreshed] == [200] * LOGINS
            login_again = await client.post("/auth/login", json=_credentials(email))
            assert login_again.status_code == 200
    await Tables(data_dir).check_sound()
