"""Prometheus metrics in-process: scraped from the metrics listener, parsed with
prometheus_client's parser. A real Prometheus scraping ``tokenward serve --workers 2``:
test_metrics_prometheus.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from support import (
    FAST_HASHER,
    LIFESPAN_TIMEOUT,
    PASSWORD,
    Api,
    FakeClock,
    make_settings,
    refresh_cookie,
)
from support.smtp import SmtpServer, mail_settings_for

from tokenward.core.events import LOGIN_OUTCOMES, EventType
from tokenward.core.refresh import RefreshResult
from tokenward.core.sessions import EndReason
from tokenward.infra import metrics
from tokenward.infra.mail import MailTemplate
from tokenward.infra.metrics import DatabaseErrorKind, Metrics
from tokenward.infra.ratelimit import Limit
from tokenward.storage.db import _translate
from tokenward.web import create_app

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
EMAIL = "ada@example.com"
CLIENT_IP = "203.0.113.7"  # the conftest api's peer address


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"metrics": True, "metrics_listen": "127.0.0.1:0"}


async def scrape(app: Any) -> Samples:
    """Every sample the metrics listener serves, by name and labels."""
    port = app.state.metrics_listener.port
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


async def test_counts_logins_refreshes_reuse_and_requests(
    api: Api, app: Any, clock: FakeClock
) -> None:
    """The scripted traffic of the Prometheus test, in-process: 3 failed logins, a login, 2
    refreshes, a grace replay, one reuse; each counted where it happened."""
    assert (await api.register(EMAIL)).status_code == 201
    for _ in range(3):
        assert (await api.login(EMAIL, "not the password at all")).status_code == 401
    _, first = await _login(api)
    second = await _refreshed(api, first)
    assert (await api.refresh(first)).status_code == 200  # within the reuse interval: grace
    third = await _refreshed(api, second)
    clock.advance(60)
    assert (await api.refresh(first)).status_code == 401  # long rotated out: reuse, ended
    assert (await api.refresh(third)).status_code == 401  # its session ended: expired
    assert (await api.refresh("twr_" + "A" * 76)).status_code == 401  # forged: invalid

    samples = await scrape(app)
    logins = "tokenward_logins_total"
    assert value(samples, logins, result="failed", method="password") == 3
    assert value(samples, logins, result="succeeded", method="password") == 1
    assert value(samples, logins, result="succeeded", method="passkey") == 0
    refreshes = "tokenward_refreshes_total"
    assert value(samples, refreshes, result="rotated") == 2
    assert value(samples, refreshes, result="grace") == 1
    assert value(samples, refreshes, result="reuse_detected") == 1
    assert value(samples, refreshes, result="expired") == 1
    assert value(samples, refreshes, result="invalid") == 1
    events = "tokenward_security_events_total"
    assert value(samples, events, type="login.failed") == 3
    assert value(samples, events, type="login.succeeded") == 1
    assert value(samples, events, type="session.reuse_detected") == 1
    assert value(samples, events, type="user.registered") == 1
    ended = "tokenward_sessions_ended_total"
    assert value(samples, ended, reason="reuse_detected") == 1
    assert value(samples, ended, reason="logout") == 0
    requests = "tokenward_http_requests_total"
    assert value(samples, requests, route="/auth/login", method="POST", status="401") == 3
    assert value(samples, requests, route="/auth/login", method="POST", status="200") == 1
    assert value(samples, requests, route="/auth/refresh", method="POST", status="200") == 3
    latency = "tokenward_http_request_duration_seconds_count"
    assert value(samples, latency, route="/auth/login") == 4
    # The password hashes (4 logins, 1 registration), and none waiting now.
    assert value(samples, "tokenward_password_hash_duration_seconds_count") == 5
    assert value(samples, "tokenward_password_hash_wait_seconds_count") == 5
    assert value(samples, "tokenward_password_hashes_waiting") == 0


async def test_every_vocabulary_is_there_from_the_start(app: Any, service: Any) -> None:
    """Every event type, login result and method, refresh result, end reason, rate limit,
    mail template and database error kind is a series at 0 before anything happened: an
    alert on a count that has not happened yet sees 0, not nothing."""
    samples = await scrape(app)
    names = {name for name, _ in samples}
    for kind in EventType:
        assert value(samples, "tokenward_security_events_total", type=kind.value) == 0
    logins = {
        dict(labels)["result"] + "/" + dict(labels)["method"]
        for name, labels in samples
        if name == "tokenward_logins_total"
    }
    assert logins == {f"{result}/{method}" for result, method in LOGIN_OUTCOMES}
    for result, method in LOGIN_OUTCOMES:
        labels = {"result": result.value, "method": method.value}
        assert value(samples, "tokenward_logins_total", **labels) == 0
    for refresh in RefreshResult:
        assert value(samples, "tokenward_refreshes_total", result=refresh.value) == 0
    for reason in EndReason:
        assert value(samples, "tokenward_sessions_ended_total", reason=reason.value) == 0
    for limit in Limit:
        assert value(samples, "tokenward_rate_limit_hits_total", limit=limit.value) == 0
    for template in MailTemplate:
        for result in ("sent", "retried", "failed"):
            labels = {"template": template.value, "result": result}
            assert value(samples, "tokenward_outbox_mails_total", **labels) == 0
    for kind in DatabaseErrorKind:
        assert value(samples, "tokenward_database_errors_total", kind=kind.value) == 0
    [(_, build)] = [key for key in samples if key[0] == "tokenward_build_info"]
    assert dict(build)["version"]
    signer = service.access.keyring.signer(service.now())
    made = value(samples, "tokenward_signing_key_created_timestamp_seconds")
    assert signer.created_at is not None
    assert made == signer.created_at.timestamp() == service.now().timestamp()
    assert {"tokenward_outbox_pending", "tokenward_outbox_oldest_pending_age_seconds"} <= names


async def test_labels_are_bounded(api: Api, app: Any) -> None:
    """Route templates, never paths; no user, email, IP or session id in any label."""
    access, refresh = await _signed_up(api)
    user_id = (await api.me(access)).json()["id"]
    sessions = await api.http.get("/auth/sessions", headers=_bearer(access))
    session_id = sessions.json()["sessions"][0]["id"]
    ended = await api.http.delete(f"/auth/sessions/{session_id}", headers=_bearer(access))
    assert ended.status_code == 204
    assert (await api.http.get(f"/no/such/{EMAIL}")).status_code == 404
    assert (await api.http.request("BREW", "/auth/me")).status_code == 405
    assert (await api.http.get("/static/tokenward.js")).status_code == 200
    samples = await scrape(app)
    requests = "tokenward_http_requests_total"
    # A static file is served by no API route: unmatched, never its path.
    assert value(samples, requests, route="unmatched", method="GET", status="200") == 1
    template = "/auth/sessions/{session_id}"
    assert value(samples, requests, route=template, method="DELETE", status="204") == 1
    assert value(samples, requests, route="unmatched", method="GET", status="404") == 1
    assert value(samples, requests, route="/auth/me", method="other", status="405") == 1
    for _, labels in samples:
        for _, shown in labels:
            for personal in (EMAIL, "ada@", CLIENT_IP, session_id, user_id, refresh[:12]):
                assert personal not in shown


async def test_the_app_port_does_not_serve_metrics(api: Api) -> None:
    assert (await api.http.get("/metrics")).status_code == 404


@pytest.mark.parametrize("settings_overrides", [{}])
async def test_off_by_default(app: Any, api: Api, settings_overrides: dict[str, Any]) -> None:
    """No listener, nothing counted: the recorder keeps nothing."""
    assert app.state.metrics_listener is None
    assert not metrics.current().enabled
    assert (await api.http.get("/metrics")).status_code == 404


@pytest.mark.parametrize(
    "settings_overrides",
    [{"metrics": True, "metrics_listen": "127.0.0.1:0", "rate_limit_login_ip": "2/minute"}],
)
async def test_rate_limit_hits_by_limit(api: Api, app: Any, settings_overrides: Any) -> None:
    assert (await api.register(EMAIL)).status_code == 201
    answers = [(await api.login(EMAIL)).status_code for _ in range(3)]
    assert answers == [200, 200, 429]
    samples = await scrape(app)
    assert value(samples, "tokenward_rate_limit_hits_total", limit="login_ip") == 1
    assert value(samples, "tokenward_rate_limit_hits_total", limit="refresh_ip") == 0


async def test_sessions_ended_by_reason(api: Api, app: Any) -> None:
    _, refresh = await _signed_up(api)
    assert (await api.logout(refresh)).status_code == 204
    access, _ = await _login(api)
    await _login(api)
    await _login(api)
    everywhere = await api.http.post("/auth/logout-all", headers=_bearer(access))
    assert everywhere.status_code == 204, everywhere.text
    samples = await scrape(app)
    assert value(samples, "tokenward_sessions_ended_total", reason="logout") == 1
    assert value(samples, "tokenward_sessions_ended_total", reason="logout_all") == 3


async def test_the_outbox_backlog_and_deliveries(tmp_path: Path, clock: FakeClock) -> None:
    """Pending mails and the oldest one's age while the relay is down; retried, then sent,
    by template."""
    smtp = SmtpServer()
    smtp.start()
    smtp.stop()
    overrides = mail_settings_for(
        smtp, app_url="https://app.example", email_verification="optional"
    )
    settings = make_settings(
        tmp_path / "data", metrics=True, metrics_listen="127.0.0.1:0", **overrides
    )
    app = create_app(settings, clock=clock, hasher=FAST_HASHER)
    async with (
        LifespanManager(app, startup_timeout=LIFESPAN_TIMEOUT, shutdown_timeout=LIFESPAN_TIMEOUT),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        api = Api(client)
        assert (await api.register(EMAIL)).status_code == 201
        clock.advance(30)
        mails = "tokenward_outbox_mails_total"
        retried = {"template": "verify_email", "result": "retried"}

        async def backlog() -> Samples | None:
            # Tried and failed at least once; the backlog as a round after the 30 s sees it.
            samples = await scrape(app)
            waiting = value(samples, "tokenward_outbox_oldest_pending_age_seconds") >= 30
            return samples if value(samples, mails, **retried) >= 1 and waiting else None

        samples = await _until(backlog)
        assert value(samples, "tokenward_outbox_pending") == 1
        smtp.start()
        try:
            clock.advance(3600)

            async def sent() -> Samples | None:
                samples = await scrape(app)
                done = value(samples, mails, template="verify_email", result="sent") == 1
                return samples if done and value(samples, "tokenward_outbox_pending") == 0 else None

            samples = await _until(sent)
            assert value(samples, "tokenward_outbox_oldest_pending_age_seconds") == 0
            assert value(samples, mails, template="verify_email", result="failed") == 0
        finally:
            smtp.stop()


class _DriverError(Exception):
    """A driver's error as asyncpg's: a message and a SQLSTATE."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("driver_error", "kind"),
    [
        (_DriverError("database is locked"), DatabaseErrorKind.CONFLICT),
        (_DriverError("could not serialize access", "40001"), DatabaseErrorKind.CONFLICT),
        (_DriverError("unable to open database file"), DatabaseErrorKind.UNAVAILABLE),
        (
            _DriverError("the database system is shutting down", "57P03"),
            DatabaseErrorKind.UNAVAILABLE,
        ),
        (
            _DriverError("canceling statement due to statement timeout", "57014"),
            DatabaseErrorKind.TIMEOUT,
        ),
    ],
)
def test_database_errors_by_kind(driver_error: Exception, kind: DatabaseErrorKind) -> None:
    """The storage's one translation of driver errors counts each by kind (a pool or
    connection timeout is a timeout too)."""
    counting = Metrics()
    metrics.install(counting)
    try:
        _translate(OperationalError("SELECT 1", {}, driver_error))
        _translate(TimeoutError())
    finally:
        metrics.install(None)
    counts = {
        each.value: counting.registry.get_sample_value(
            "tokenward_database_errors_total", {"kind": each.value}
        )
        for each in DatabaseErrorKind
    }
    expected = {each.value: 0.0 for each in DatabaseErrorKind}
    expected[kind.value] += 1
    expected["timeout"] += 1
    assert counts == expected


async def _until(check: Any, timeout: float = 15.0) -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while (found := await check()) is None:
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return found


def _bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


async def _login(api: Api) -> tuple[str, str]:
    answer = await api.login(EMAIL, PASSWORD)
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"], refresh_cookie(answer)


async def _signed_up(api: Api) -> tuple[str, str]:
    return await api.signed_up(EMAIL)


async def _refreshed(api: Api, refresh: str) -> str:
    answer = await api.refresh(refresh)
    assert answer.status_code == 200, answer.text
    return refresh_cookie(answer)


async def test_every_stored_event_is_counted_once(api: Api, app: Any, service: Any) -> None:
    """Counted where events are written: for every type, the counter equals the rows the
    events table holds (the unit of work, the lean rotation paths, a transaction retried)."""
    _, refresh = await _signed_up(api)
    for _ in range(2):
        assert (await api.login(EMAIL, "not the password at all")).status_code == 401
    assert (await api.login("nobody@example.com", "not the password at all")).status_code == 401
    for _ in range(3):
        refresh = await _refreshed(api, refresh)
    other_access, _ = await _login(api)
    assert (await api.logout(refresh)).status_code == 204
    assert (
        await api.http.post("/auth/logout-all", headers=_bearer(other_access))
    ).status_code == 204
    async with service.db.read() as db:
        rows = (await db.execute(text("SELECT type, count(*) FROM events GROUP BY type"))).all()
    stored = {kind: count for kind, count in rows}
    assert len(stored) >= 5
    samples = await scrape(app)
    for kind in EventType:
        counted = value(samples, "tokenward_security_events_total", type=kind.value)
        assert counted == stored.get(kind.value, 0), kind


def test_the_workers_sum_forgets_the_live_gauges_of_workers_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed with hashes waiting (no clean shutdown to take them out of the sum) is
    not counted by serve's listener; a live one is."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from prometheus_client import Gauge\n"
        "g = Gauge('tokenward_password_hashes_waiting', 'w', multiprocess_mode='livesum')\n"
        "g.set(int(sys.argv[1]))\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    gone = subprocess.run(  # exits without mark_process_dead: its file stays
        [sys.executable, "-c", script, "3"], env=env, input="", capture_output=True, check=True
    )
    assert gone.stdout.strip() == b"ready"
    alive = subprocess.Popen(
        [sys.executable, "-c", script, "2"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert alive.stdout is not None and alive.stdout.readline().strip() == b"ready"
        assert len(list(tmp_path.glob("gauge_livesum_*.db"))) == 2
        monkeypatch.setenv(metrics.MULTIPROCESS_DIR, str(tmp_path))
        listener = metrics.serve_metrics(None, "127.0.0.1", 0)
        try:
            answer = httpx.get(f"http://127.0.0.1:{listener.port}/metrics")
        finally:
            listener.close()
    finally:
        alive.communicate(b"")
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    assert samples["tokenward_password_hashes_waiting"] == 2


async def test_a_transaction_retried_is_told_once(api: Api, app: Any, service: Any) -> None:
    """A conflict rolls the first try back: its event is neither counted nor logged; the
    retry's is, once."""
    from contextlib import asynccontextmanager

    from tokenward.storage.errors import RetryableConflict

    _, refresh = await _signed_up(api)
    original = service.db.write
    tries: list[int] = []

    @asynccontextmanager
    async def conflicting_once(*args: Any, **kwargs: Any) -> Any:
        async with original(*args, **kwargs) as db:
            yield db
            tries.append(1)
            if len(tries) == 1:
                raise RetryableConflict("injected")  # rolled back, as the database would

    service.db.write = conflicting_once
    try:
        assert (await api.logout(refresh)).status_code == 204
    finally:
        service.db.write = original
    assert len(tries) == 2
    samples = await scrape(app)
    assert value(samples, "tokenward_security_events_total", type="session.logout") == 1
    assert value(samples, "tokenward_sessions_ended_total", reason="logout") == 1
    async with service.db.read() as db:
        stored = (
            await db.execute(text("SELECT count(*) FROM events WHERE type = 'session.logout'"))
        ).scalar_one()
    assert stored == 1
