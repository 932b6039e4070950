"""Stateful property test: random session lifecycles against a model of which tokens work.

Sessions are named S0, S1, ... in login order (S0 is ada's first, S1 grace's); a failing run
prints the steps and, for each step, the session it drew.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from support import (
    FAST_HASHER,
    LIFESPAN_TIMEOUT,
    PASSWORD,
    Api,
    FakeClock,
    drop_database,
    make_settings,
    new_database,
    refresh_cookie,
)

from tokenward.web import create_app

T = TypeVar("T")

USERS = ("ada@example.com", "grace@example.com")
REUSE_INTERVAL = 10  # seconds: the default refresh_reuse_interval
MAX_TOTAL_ADVANCE = 240  # seconds: far below the 15 min access-token lifetime
MAX_LIVE_SESSIONS = 6  # bounds the checks per step (every live session is checked each step)
# When to replay the previous token, in seconds after its rotation: inside the reuse interval,
# on its edge and past it.
REPLAY_AT = st.sampled_from([0, REUSE_INTERVAL - 1, REUSE_INTERVAL, REUSE_INTERVAL + 1, 15])
ENDED_SESSION_CALLS = (
    "refresh",
    "logout",
    "me",
    "sessions",
    "logout-all",
    "logout-others",
    "revoke",
    "password",
)


@dataclass(eq=False)
class ModelSession:
    """What the contract says about one login: its tokens, in order issued, and whether it lives."""

    number: int
    user: int
    sid: str
    refresh: list[str]  # every refresh token issued, oldest first; the last is current
    access: list[str]  # every access token issued, oldest first
    rotated_at: int | None = None  # model seconds of the last rotation
    alive: bool = True

    def __repr__(self) -> str:
        state = "live" if self.alive else "ended"
        return f"S{self.number}({USERS[self.user]}, {state}, {len(self.refresh)} refresh tokens)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints drawn sessions with this, not field by field."""
        printer.text(repr(self))


@dataclass
class Model:
    sessions: list[ModelSession] = field(default_factory=list)
    passwords: list[str] = field(default_factory=lambda: [PASSWORD] * len(USERS))
    now: int = 0  # seconds advanced on the app's clock

    def live(self, user: int | None = None) -> list[ModelSession]:
        return [s for s in self.sessions if s.alive and user in (None, s.user)]

    def ended(self) -> list[ModelSession]:
        return [s for s in self.sessions if not s.alive]

    def rotated(self, times: int) -> list[ModelSession]:
        """Live sessions rotated at least `times` times."""
        return [s for s in self.live() if len(s.refresh) > times]


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


def sid_of(access: str) -> str:
    return str(jwt.decode(access, options={"verify_signature": False})["sid"])


def draw(data: st.DataObject, sessions: list[ModelSession], label: str = "session") -> ModelSession:
    return data.draw(st.sampled_from(sessions), label=label)


def some(select: Callable[[Model], list[ModelSession]]) -> Callable[[SessionModel], bool]:
    """A precondition: the model has at least one session of this kind."""
    return lambda machine: bool(select(machine.model))


class SessionModel(RuleBasedStateMachine):
    """Logins, rotations, replays, logouts, revocations and password changes agree with a model."""

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.clock = FakeClock()
        self.password_changes = 0
        self.issued_refresh: set[str] = set()
        self.just_ended: list[ModelSession] = []
        self.checks = 0
        self.data_dir = Path(tempfile.mkdtemp(prefix="tokenward-model-"))
        self.database_url = new_database()  # each example starts empty on PostgreSQL too
        self.runner = asyncio.Runner()
        self.manager: LifespanManager | None = None
        self.client: httpx.AsyncClient | None = None
        self.api = Api(self.run(self._start()))

    # -- plumbing ----------------------------------------------------------------------------

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)

    async def _start(self) -> httpx.AsyncClient:
        database = {"database_url": self.database_url} if self.database_url else {}
        # Limits are not the contract here.
        settings = make_settings(self.data_dir, rate_limits=False, **database)
        app = create_app(settings, clock=self.clock, hasher=FAST_HASHER)
        self.manager = LifespanManager(
            app, startup_timeout=LIFESPAN_TIMEOUT, shutdown_timeout=LIFESPAN_TIMEOUT
        )
        await self.manager.__aenter__()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )
        self.client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        return self.client

    async def _stop(self) -> None:
        try:
            if self.client is not None:
                await self.client.aclose()
        finally:
            if self.manager is not None:
                await self.manager.__aexit__(None, None, None)

    def teardown(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self.runner.close()
            shutil.rmtree(self.data_dir, ignore_errors=True)
            drop_database(self.database_url)

    def post(self, url: str, access: str, **kw: Any) -> httpx.Response:
        return self.run(self.api.http.post(url, headers=bearer(access), **kw))

    def status_of_me(self, access: str) -> int:
        return self.run(self.api.me(access)).status_code

    def revoke_request(self, caller: ModelSession, victim: ModelSession) -> httpx.Response:
        url = f"/auth/sessions/{victim.sid}"
        return self.run(self.api.http.delete(url, headers=bearer(caller.access[-1])))

    def password_request(self, session: ModelSession) -> tuple[httpx.Response, str]:
        """POST /auth/password with the user's current password and a fresh new one."""
        self.password_changes += 1
        new = f"new passphrase number {self.password_changes}"
        body = {"current_password": self.model.passwords[session.user], "new_password": new}
        return self.post("/auth/password", session.access[-1], json=body), new

    # -- model updates -----------------------------------------------------------------------

    def advance(self, seconds: int) -> None:
        """Move the app's clock and the model's together, never past MAX_TOTAL_ADVANCE."""
        seconds = min(seconds, MAX_TOTAL_ADVANCE - self.model.now)
        self.clock.advance(seconds)
        self.model.now += seconds

    def end(self, sessions: list[ModelSession]) -> None:
        for session in sessions:
            if session.alive:
                session.alive = False
                self.just_ended.append(session)

    def new_refresh_token(self, response: httpx.Response) -> str:
        token = refresh_cookie(response)
        assert token not in self.issued_refresh, "a refresh token was issued twice"
        self.issued_refresh.add(token)
        return token

    def record_access(self, session: ModelSession, response: httpx.Response) -> None:
        access = response.json()["access_token"]
        assert sid_of(access) == session.sid
        session.access.append(access)

    def login(self, user: int) -> ModelSession:
        response = self.run(self.api.login(USERS[user], self.model.passwords[user]))
        assert response.status_code == 200, response.text
        access = response.json()["access_token"]
        session_id = sid_of(access)
        assert session_id not in {s.sid for s in self.model.sessions}
        refresh = self.new_refresh_token(response)
        session = ModelSession(len(self.model.sessions), user, session_id, [refresh], [access])
        self.model.sessions.append(session)
        return session

    def present(self, session: ModelSession, index: int) -> None:
        """Refresh with the session's index-th refresh token; check the answer against the model."""
        response = self.run(self.api.refresh(session.refresh[index]))
        latest = len(session.refresh) - 1
        if not session.alive:
            event("refresh: ended session")
            assert response.status_code == 401, response.text
        elif index == latest:
            event("refresh: current token")
            assert response.status_code == 200, response.text
            self.record_access(session, response)
            session.refresh.append(self.new_refresh_token(response))
            session.rotated_at = self.model.now
        elif index == latest - 1 and self.since_rotation(session) <= REUSE_INTERVAL:
            event("refresh: previous token within the interval")
            assert response.status_code == 200, response.text
            assert refresh_cookie(response) == session.refresh[latest], "the chain forked"
            self.record_access(session, response)
        else:
            event(
                "refresh: previous token after the interval"
                if index == latest - 1
                else "refresh: token two or more generations back"
            )
            assert response.status_code == 401, response.text
            self.end([session])

    def since_rotation(self, session: ModelSession) -> int:
        assert session.rotated_at is not None
        return self.model.now - session.rotated_at

    # -- rules -------------------------------------------------------------------------------

    @initialize()
    def sign_up(self) -> None:
        """Register every user and log each in once: S0 is ada's session, S1 grace's."""
        for email in USERS:
            assert self.run(self.api.register(email)).status_code == 201
        for user in range(len(USERS)):
            self.login(user)

    @precondition(lambda self: len(self.model.live()) < MAX_LIVE_SESSIONS)
    @rule(user=st.integers(0, len(USERS) - 1))
    def log_in(self, user: int) -> None:
        self.login(user)

    @precondition(some(Model.live))
    @rule(data=st.data(), times=st.integers(1, 3))
    def refresh_current(self, data: st.DataObject, times: int) -> None:
        """Refresh a live session with its current token, `times` times in a row."""
        session = draw(data, self.model.live())
        for _ in range(times):
            self.present(session, len(session.refresh) - 1)

    @precondition(some(lambda model: model.rotated(1)))
    @rule(data=st.data(), at=REPLAY_AT)
    def refresh_previous(self, data: st.DataObject, at: int) -> None:
        """Replay the token a live session rotated out last, `at` s after that rotation.

        The clock is moved forward to that moment (if it has already passed, it is now).
        """
        session = draw(data, self.model.rotated(1))
        self.advance(max(0, at - self.since_rotation(session)))
        self.present(session, len(session.refresh) - 2)

    @precondition(some(lambda model: model.rotated(2)))
    @rule(data=st.data(), back=st.integers(2, 4))
    def refresh_old(self, data: st.DataObject, back: int) -> None:
        """Replay a token `back` generations behind the current one (at most the first)."""
        session = draw(data, self.model.rotated(2))
        self.present(session, max(0, len(session.refresh) - 1 - back))

    @precondition(lambda self: self.model.now < MAX_TOTAL_ADVANCE)
    @rule(seconds=st.integers(1, 15))
    def advance_clock(self, seconds: int) -> None:
        self.advance(seconds)

    @precondition(some(Model.live))
    @rule(data=st.data(), back=st.integers(0, 3))
    def logout(self, data: st.DataObject, back: int) -> None:
        """Log out with a token `back` generations behind the current one (at most the first)."""
        session = draw(data, self.model.live())
        token = session.refresh[max(0, len(session.refresh) - 1 - back)]
        response = self.run(self.api.logout(token))
        assert response.status_code == 204, response.text
        self.end([session])

    @precondition(some(Model.live))
    @rule(data=st.data())
    def logout_all(self, data: st.DataObject) -> None:
        session = draw(data, self.model.live())
        response = self.post("/auth/logout-all", session.access[-1])
        assert response.status_code == 204, response.text
        self.end(self.model.live(session.user))

    @precondition(some(Model.live))
    @rule(data=st.data())
    def logout_others(self, data: st.DataObject) -> None:
        session = draw(data, self.model.live())
        response = self.post("/auth/logout-others", session.access[-1])
        assert response.status_code == 204, response.text
        self.end([s for s in self.model.live(session.user) if s is not session])

    @precondition(some(Model.live))
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        """DELETE any session (own, a sibling, ended, another user's) with a live session."""
        caller = draw(data, self.model.live(), "caller")
        victim = draw(data, self.model.sessions, "victim")
        response = self.revoke_request(caller, victim)
        if victim.alive and victim.user == caller.user:
            assert response.status_code == 204, response.text
            self.end([victim])
        else:
            assert response.status_code == 404, response.text

    @precondition(some(Model.live))
    @rule(data=st.data())
    def change_password(self, data: st.DataObject) -> None:
        session = draw(data, self.model.live())
        old = self.model.passwords[session.user]
        response, new = self.password_request(session)
        assert response.status_code == 204, response.text
        self.model.passwords[session.user] = new
        self.end([s for s in self.model.live(session.user) if s is not session])
        assert self.run(self.api.login(USERS[session.user], old)).status_code == 401

    @precondition(some(Model.ended))
    @rule(data=st.data(), call=st.sampled_from(ENDED_SESSION_CALLS), back=st.integers(0, 2))
    def use_ended_session(self, data: st.DataObject, call: str, back: int) -> None:
        """An ended session's tokens: refresh 401, logout 204, every Bearer call 401."""
        session = draw(data, self.model.ended())
        token = session.refresh[max(0, len(session.refresh) - 1 - back)]
        access = session.access[-1]
        if call == "refresh":
            self.present(session, session.refresh.index(token))
            return
        if call == "logout":
            assert self.run(self.api.logout(token)).status_code == 204
            return
        if call == "me":
            response = self.run(self.api.me(access))
        elif call == "sessions":
            response = self.run(self.api.http.get("/auth/sessions", headers=bearer(access)))
        elif call == "revoke":
            response = self.revoke_request(session, draw(data, self.model.sessions, "victim"))
        elif call == "password":
            response, _ = self.password_request(session)
        else:
            response = self.post(f"/auth/{call}", access)
        assert response.status_code == 401, response.text

    # -- invariants --------------------------------------------------------------------------

    def check_session_list(self, caller: ModelSession, live: list[ModelSession]) -> None:
        """GET /auth/sessions with the caller's newest access token lists exactly `live`."""
        response = self.run(self.api.http.get("/auth/sessions", headers=bearer(caller.access[-1])))
        assert response.status_code == 200, response.text
        listed = response.json()["sessions"]
        assert sorted(s["id"] for s in listed) == sorted(s.sid for s in live), caller
        assert [s["id"] for s in listed if s["current"]] == [caller.sid]

    def check_ended(self, session: ModelSession) -> None:
        """Every access token of an ended session, and its newest refresh token, is refused."""
        for access in session.access:
            assert self.status_of_me(access) == 401, session
        assert self.run(self.api.refresh(session.refresh[-1])).status_code == 401, session

    @invariant()
    def server_agrees_with_model(self) -> None:
        """Each user's session list is the model's live sessions, and their tokens work.

        The list is fetched with one live session's newest access token (which checks that
        token); every other live session's newest access token must pass /auth/me. A session
        that ended since the last check must have lost all its tokens.
        """
        self.checks += 1
        for user in range(len(USERS)):
            live = self.model.live(user)
            if not live:
                continue
            caller = live[self.checks % len(live)]  # a different caller from step to step
            self.check_session_list(caller, live)
            for session in live:
                if session is not caller:
                    assert self.status_of_me(session.access[-1]) == 200, session
        for session in self.just_ended:
            self.check_ended(session)
        self.just_ended.clear()


SessionModel.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSessionModel = SessionModel.TestCase
