"""Races and gaps from the adversarial review (issue 13), each attacked as it was found.

Every test here failed on the code before its fix. They run on SQLite and, with
``--database=postgresql``, on a real PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import bcrypt
import httpx
import pytest
from asgi_lifespan import LifespanManager
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import select, text, update
from support import (
    FAST_HASHER,
    LIFESPAN_TIMEOUT,
    PASSWORD,
    Api,
    FakeClock,
    make_settings,
    refresh_cookie,
)

from tokenward.core.passwords import ImportedHashError, PasswordHasher, check_imported_hash
from tokenward.infra.config import Settings
from tokenward.infra.ratelimit import client_key
from tokenward.storage import Database, SessionRow, UserRow
from tokenward.web import create_app

NEW_PASSWORD = "another long passphrase 8"
WRONG = "definitely not the password"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class GatedHasher(PasswordHasher):
    """FAST_HASHER's parameters, but a verification of ``gated`` waits for ``release``.

    Holds a login exactly where the race was: after the hash was read, before the session is
    written. Only the first such verification is held.
    """

    def __init__(self, gated: str) -> None:
        super().__init__(Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1))
        self.gated = gated
        self.entered = threading.Event()
        self.release = threading.Event()
        self._held = False

    def verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        result = super().verify(password, password_hash)
        if password == self.gated and not self._held:
            self._held = True
            self.entered.set()
            assert self.release.wait(30)
        return result


async def _wait(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 30)


@asynccontextmanager
async def _app_client(
    settings: Settings, clock: FakeClock, hasher: PasswordHasher, ip: str = "203.0.113.7"
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(settings, clock=clock, hasher=hasher)
    async with LifespanManager(
        app, startup_timeout=LIFESPAN_TIMEOUT, shutdown_timeout=LIFESPAN_TIMEOUT
    ):
        # A held verification keeps its hash slot: give the racing request slots of its own.
        app.state.service.hash_slots = asyncio.Semaphore(4)
        transport = httpx.ASGITransport(app=app, client=(ip, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield app, http


def client_from(app: Any, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


# -- a password change against a racing login -----------------------------------------------


async def test_a_login_that_verified_the_old_password_loses_to_a_password_change(
    settings: Settings, clock: FakeClock
) -> None:
    """The login verified the old password, then the owner changed it: no session results."""
    hasher = GatedHasher(gated=PASSWORD)
    async with _app_client(settings, clock, hasher) as (app, http):
        await http.post("/auth/register", json={"email": "a@x.io", "password": PASSWORD})
        hasher._held = True  # the owner's own login passes the gate
        owner = await http.post("/auth/login", json={"email": "a@x.io", "password": PASSWORD})
        access = owner.json()["access_token"]
        hasher._held = False

        attacker = asyncio.create_task(
            http.post("/auth/login", json={"email": "a@x.io", "password": PASSWORD})
        )
        await _wait(hasher.entered)  # the attacker's hash matched the old password
        hasher._held = True  # the owner's own check of the current password passes the gate
        changed = await http.post(
            "/auth/password",
            headers=bearer(access),
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        )
        assert changed.status_code == 204, changed.text
        hasher.release.set()
        late = await attacker
        assert late.status_code == 401, late.text
        async with app.state.service.db.read() as db:
            live = (
                await db.execute(select(SessionRow.id).where(SessionRow.revoked_at.is_(None)))
            ).all()
        assert len(live) == 1  # the owner's current session only


async def test_a_racing_login_never_writes_a_rehash_of_the_old_password_over_the_new(
    settings: Settings, clock: FakeClock
) -> None:
    """An imported bcrypt hash is due for an upgrade: the racing login must not write it."""
    hasher = GatedHasher(gated=PASSWORD)
    async with _app_client(settings, clock, hasher) as (app, http):
        service = app.state.service
        legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
        report = await service.accounts.import_users([{"email": "b@x.io", "password_hash": legacy}])
        assert report.imported == 1
        hasher._held = True
        owner = await http.post("/auth/login", json={"email": "b@x.io", "password": PASSWORD})
        assert owner.status_code == 200
        # The owner's login upgraded the hash; make it legacy again so that the race rehashes.
        async with service.db.write() as db:
            await db.execute(update(UserRow).values(password_hash=legacy))
        hasher._held = False

        attacker = asyncio.create_task(
            http.post("/auth/login", json={"email": "b@x.io", "password": PASSWORD})
        )
        await _wait(hasher.entered)
        hasher._held = True
        changed = await http.post(
            "/auth/password",
            headers=bearer(owner.json()["access_token"]),
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        )
        assert changed.status_code == 204, changed.text
        hasher.release.set()
        assert (await attacker).status_code == 401

        new = await http.post("/auth/login", json={"email": "b@x.io", "password": NEW_PASSWORD})
        old = await http.post("/auth/login", json={"email": "b@x.io", "password": PASSWORD})
        assert new.status_code == 200, new.text
        assert old.status_code == 401, old.text


async def test_a_login_that_verified_before_the_user_was_disabled_gets_no_session(
    settings: Settings, clock: FakeClock
) -> None:
    from tokenward.app.operators import Admin

    hasher = GatedHasher(gated=PASSWORD)
    async with _app_client(settings, clock, hasher) as (app, http):
        await http.post("/auth/register", json={"email": "c@x.io", "password": PASSWORD})
        attempt = asyncio.create_task(
            http.post("/auth/login", json={"email": "c@x.io", "password": PASSWORD})
        )
        await _wait(hasher.entered)
        await Admin(app.state.service).set_disabled("c@x.io", True)
        hasher.release.set()
        assert (await attempt).status_code == 401
        async with app.state.service.db.read() as db:
            assert (await db.execute(select(SessionRow.id))).first() is None


async def test_two_password_changes_with_the_same_current_password_do_not_both_win(
    settings: Settings, clock: FakeClock
) -> None:
    """The second change verified a hash that the first replaced: it must not overwrite it."""
    hasher = GatedHasher(gated=PASSWORD)
    async with _app_client(settings, clock, hasher) as (_, http):
        await http.post("/auth/register", json={"email": "d@x.io", "password": PASSWORD})
        hasher._held = True
        login = await http.post("/auth/login", json={"email": "d@x.io", "password": PASSWORD})
        headers = bearer(login.json()["access_token"])
        hasher._held = False
        first = asyncio.create_task(
            http.post(
                "/auth/password",
                headers=headers,
                json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            )
        )
        await _wait(hasher.entered)
        hasher._held = True
        third = "a third long passphrase 9"
        second = await http.post(
            "/auth/password",
            headers=headers,
            json={"current_password": PASSWORD, "new_password": third},
        )
        assert second.status_code == 204
        hasher.release.set()
        assert (await first).status_code == 401
        works = await http.post("/auth/login", json={"email": "d@x.io", "password": third})
        assert works.status_code == 200


# -- the revocation feed's order -------------------------------------------------------------


async def _client_credentials(app: Any) -> httpx.BasicAuth:
    from tokenward.app.resource_servers import ClientService

    client, secret = await ClientService(app.state.service).create("api")
    return httpx.BasicAuth(client.id, secret)


async def _hold_session_row(url: str, session_id: str) -> AsyncIterator[None]:
    """Another connection holds what ending ``session_id`` needs (SQLite: the write lock)."""
    other = Database(url)
    try:
        async with other.write() as db:
            await db.execute(
                text("UPDATE sessions SET last_ip = last_ip WHERE id = :id"), {"id": session_id}
            )
            yield
    finally:
        await other.dispose()


async def test_a_revocation_that_commits_late_is_still_served_by_the_feed(
    tmp_path: Any,
) -> None:
    """Instance A (its clock 30 s behind B's) ends a session whose commit waits 5 s for a
    lock; B's feed is polled meanwhile. The feed must still serve it afterwards."""
    settings = make_settings(tmp_path / "data")
    clock_a, clock_b = FakeClock(), FakeClock()
    clock_a.advance(-30)
    async with (
        _app_client(settings, clock_a, FAST_HASHER) as (app_a, http_a),
        _app_client(settings, clock_b, FAST_HASHER) as (app_b, http_b),
    ):
        credentials = await _client_credentials(app_b)
        api = Api(http_a)
        _, token = await api.signed_up("e@x.io")
        sid = app_a.state.service.refresh_tokens.parse(token).session_id

        def feed(cursor: str | None) -> Any:
            params = {"after": cursor} if cursor is not None else {}
            return http_b.get("/auth/revocations", params=params, auth=credentials)

        cursor = (await feed(None)).json()["cursor"]
        holder = _hold_session_row(settings.sqlalchemy_url, sid)
        await holder.__anext__()
        logout = asyncio.create_task(api.logout(token))  # takes its time now, then waits
        await asyncio.sleep(0.3)
        for _ in range(5):  # B serves pages while A's revocation waits to commit
            clock_a.advance(1)
            clock_b.advance(1)
            page = (await feed(cursor)).json()
            assert sid not in [r["sid"] for r in page["revoked"]]
            cursor = page["cursor"]
        with pytest.raises(StopAsyncIteration):
            await holder.__anext__()
        assert (await logout).status_code == 204
        page = (await feed(cursor)).json()
        assert sid in [r["sid"] for r in page["revoked"]], page


async def test_the_feed_refuses_a_cursor_it_never_handed_out(api: Api, app: Any) -> None:
    credentials = await _client_credentials(app)
    answer = await api.http.get("/auth/revocations", params={"after": "999999"}, auth=credentials)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    old_style = await api.http.get(
        "/auth/revocations", params={"after": "1733450000000000:abc"}, auth=credentials
    )
    assert old_style.status_code == 400  # the verifier starts again from the whole window


# -- failure limits count before the hash ----------------------------------------------------


async def test_concurrent_wrong_passwords_cannot_all_pass_the_failure_limit(
    api: Api, app: Any
) -> None:
    """25 wrong passwords at once against a limit of 10: 10 are checked, 15 refused."""
    await api.register("f@x.io")
    answers = await asyncio.gather(*(api.login("f@x.io", WRONG) for _ in range(25)))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(401) == 10, codes
    assert codes.count(429) == 15, codes
    assert (await api.login("f@x.io")).status_code == 429  # the right one too, now


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_login_failures_account": "3/hour"}])
async def test_a_right_password_gives_its_reservation_back(api: Api) -> None:
    """fail, fail, success, fail: three failures, so the next one is the first refused."""
    await api.register("g@x.io")
    assert (await api.login("g@x.io", WRONG)).status_code == 401
    assert (await api.login("g@x.io", WRONG)).status_code == 401
    assert (await api.login("g@x.io")).status_code == 200
    assert (await api.login("g@x.io", WRONG)).status_code == 401
    assert (await api.login("g@x.io", WRONG)).status_code == 429


# -- /auth/password under the account's limits -----------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_login_failures_account": "5/hour"}])
async def test_a_locked_account_cannot_be_guessed_through_the_password_endpoint(
    api: Api, app: Any
) -> None:
    access, _ = await api.signed_up("h@x.io")
    for n in range(5):  # a distributed guess locks the account
        async with client_from(app, f"198.51.100.{n + 1}") as http:
            response = await http.post("/auth/login", json={"email": "h@x.io", "password": WRONG})
            assert response.status_code == 401
    async with client_from(app, "192.0.2.50") as http:
        for current in (WRONG, PASSWORD):
            answer = await http.post(
                "/auth/password",
                headers=bearer(access),
                json={"current_password": current, "new_password": NEW_PASSWORD},
            )
            assert answer.status_code == 429, answer.text
    assert (await api.login("h@x.io")).status_code == 429  # nothing was changed either


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_password_change_account": "3/hour"}])
async def test_password_changes_have_a_limit_of_their_own(api: Api) -> None:
    access, _ = await api.signed_up("i@x.io")
    passwords = [PASSWORD, NEW_PASSWORD, "a third long passphrase 9", "a fourth long passphrase"]
    for current, new in itertools.pairwise(passwords):
        answer = await api.http.post(
            "/auth/password",
            headers=bearer(access),
            json={"current_password": current, "new_password": new},
        )
        assert answer.status_code == 204, answer.text
    refused = await api.http.post(
        "/auth/password",
        headers=bearer(access),
        json={"current_password": passwords[-1], "new_password": "a fifth long passphrase"},
    )
    assert refused.status_code == 429


# -- IPv6 clients by network -----------------------------------------------------------------


def test_ipv6_addresses_are_keyed_by_their_network() -> None:
    assert (
        client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == ("2001:db8:1:2::/64")
    )
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("2001:db8:1:2::1", 48) == "2001:db8:1::/48"
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("192.0.2.1") == "192.0.2.1"
    assert client_key(None) == "unknown"


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_register_ip": "5/hour"}])
async def test_registrations_from_one_ipv6_network_share_a_limit(app: Any) -> None:
    codes = []
    for n in range(8):
        async with client_from(app, f"2001:db8:aa:bb::{n + 1:x}") as http:
            answer = await http.post(
                "/auth/register", json={"email": f"v6-{n}@x.io", "password": PASSWORD}
            )
            codes.append(answer.status_code)
    assert codes == [201] * 5 + [429] * 3
    async with client_from(app, "2001:db8:aa:cc::1") as http:  # another /64
        answer = await http.post(
            "/auth/register", json={"email": "v6-other@x.io", "password": PASSWORD}
        )
        assert answer.status_code == 201


# -- imported hashes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password_hash",
    [
        "$2b$03$" + "a" * 53,  # cost below bcrypt's own minimum: unverifiable
        bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode(),  # weak
        "$2b$31$" + "a" * 53,  # a login would take days
        "$2b$10$" + "a" * 20,  # truncated
        "$argon2id$v=19$m=65536,t=3,p=4$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",  # no salt
        "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHRzYWx0$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",  # weak
        "$argon2id$v=19$m=4194304,t=10,p=4$c29tZXNhbHRzYWx0$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
        "$argon2d$v=19$m=65536,t=3,p=4$c29tZXNhbHRzYWx0$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
        "md5$5f4dcc3b5aa765d61d8327deb882cf99",
    ],
)
def test_import_refuses_broken_weak_and_costly_hashes(password_hash: str) -> None:
    with pytest.raises(ImportedHashError):
        check_imported_hash(password_hash)


def test_import_takes_the_hashes_other_systems_make() -> None:
    check_imported_hash(bcrypt.hashpw(b"x", bcrypt.gensalt(10)).decode())
    check_imported_hash(bcrypt.hashpw(b"x", bcrypt.gensalt(12, prefix=b"2a")).decode())
    check_imported_hash(PasswordHasher().hash("x"))


async def test_a_corrupt_stored_hash_is_a_wrong_password_not_a_500(api: Api, service: Any) -> None:
    await api.register("j@x.io")
    async with service.db.write() as db:
        await db.execute(update(UserRow).values(password_hash="$2b$03$" + "a" * 53))
    assert (await api.login("j@x.io")).status_code == 401
    async with service.db.write() as db:
        await db.execute(update(UserRow).values(password_hash="$argon2id$v=19$m=65536,t=3,p=4$"))
    assert (await api.login("j@x.io")).status_code == 401


@pytest.mark.sqlite_only
def test_an_imported_bcrypt_account_answers_no_faster_than_an_unknown_email() -> None:
    """A bcrypt-10 check (a third of an argon2id one) waits out the floor: one verification
    at today's parameters. The floor follows those verifications, never the padded ones.
    (The timing itself, side by side: bench/enumeration.py.)"""
    hasher = PasswordHasher()
    legacy = bcrypt.hashpw(b"right password", bcrypt.gensalt(10)).decode()
    started = time.perf_counter()
    bcrypt.checkpw(b"a wrong password", legacy.encode())
    assert time.perf_counter() - started < 0.3  # unpadded, bcrypt 10 is well under the floor

    hasher.floor = 0.3
    started = time.perf_counter()
    assert hasher.verify("a wrong password", legacy) == (False, None)
    assert time.perf_counter() - started >= 0.3
    assert hasher.floor == 0.3  # a padded check does not move the floor

    hasher.floor = 100.0  # an unknown email: one real verification, never padded
    started = time.perf_counter()
    assert hasher.verify("a wrong password", None) == (False, None)
    elapsed = time.perf_counter() - started
    assert elapsed < 10
    assert hasher.floor == pytest.approx(100.0 + (elapsed - 100.0) / 5, abs=0.5)


# -- caps: sessions per user, events per user ------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"max_sessions_per_user": 3}])
async def test_a_new_sign_in_past_the_cap_ends_the_oldest_session(api: Api, clock: Any) -> None:
    await api.register("k@x.io")
    tokens = []
    for _ in range(5):
        clock.advance(1)
        response = await api.login("k@x.io")
        tokens.append((response.json()["access_token"], refresh_cookie(response)))
    codes = [(await api.me(access)).status_code for access, _ in tokens]
    assert codes == [401, 401, 200, 200, 200]
    assert (await api.refresh(tokens[0][1])).status_code == 401
    sessions = await api.http.get("/auth/sessions", headers=bearer(tokens[-1][0]))
    assert len(sessions.json()["sessions"]) == 3


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_user_actions": "4/minute"}])
async def test_event_writing_actions_are_limited_per_user(api: Api) -> None:
    access, _ = await api.signed_up("l@x.io")  # a sign-in is one action
    for _ in range(3):
        answer = await api.http.post("/auth/logout-others", headers=bearer(access))
        assert answer.status_code == 204, answer.text
    refused = await api.http.post("/auth/logout-others", headers=bearer(access))
    assert refused.status_code == 429, refused.text
    revoke = await api.http.delete("/auth/sessions/some-id", headers=bearer(access))
    assert revoke.status_code == 429, revoke.text


# -- the same race against a real server -----------------------------------------------------


def test_a_password_change_ends_every_session_of_logins_racing_it(tmp_path: Any) -> None:
    """The review's repro on a real `tokenward serve` with production argon2: clients log in
    with the old password without pause while the owner changes it; afterwards not one of
    the sessions those logins got is alive, and the old password no longer works."""
    from concurrent.futures import ThreadPoolExecutor

    from support import serving

    with serving(tmp_path / "data", TOKENWARD_RATE_LIMITS="false") as (base, _):
        with httpx.Client(base_url=base, timeout=30) as owner:
            owner.post("/auth/register", json={"email": "m@x.io", "password": PASSWORD})
            access = owner.post(
                "/auth/login", json={"email": "m@x.io", "password": PASSWORD}
            ).json()["access_token"]
        stop = threading.Event()

        def racer() -> list[str]:
            tokens = []
            with httpx.Client(base_url=base, timeout=30) as client:
                while not stop.is_set():
                    answer = client.post(
                        "/auth/login", json={"email": "m@x.io", "password": PASSWORD}
                    )
                    if answer.status_code == 200:
                        tokens.append(answer.json()["access_token"])
            return tokens

        with ThreadPoolExecutor(3) as pool:
            racing = [pool.submit(racer) for _ in range(3)]
            time.sleep(0.6)
            with httpx.Client(base_url=base, timeout=30) as owner:
                changed = owner.post(
                    "/auth/password",
                    headers=bearer(access),
                    json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                )
            assert changed.status_code == 204, changed.text
            time.sleep(0.6)
            stop.set()
            tokens = [token for future in racing for token in future.result()]
        assert tokens  # the racers did get sessions before the change
        with httpx.Client(base_url=base, timeout=30) as check:
            alive = [
                t for t in tokens if check.get("/auth/me", headers=bearer(t)).status_code == 200
            ]
            assert alive == []
            old = check.post("/auth/login", json={"email": "m@x.io", "password": PASSWORD})
            new = check.post("/auth/login", json={"email": "m@x.io", "password": NEW_PASSWORD})
        assert (old.status_code, new.status_code) == (401, 200)
