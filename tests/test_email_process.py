"""Accounts by email (docs/email.md) against real `tokenward serve` processes and a real SMTP
server on loopback (aiosmtpd, tests/support/smtp.py), on each database (``pytest`` and
``pytest --database=postgresql``).

The server is configured only through its environment, as an operator would: SMTP delivery,
``TOKENWARD_APP_URL`` set to the server's own address (so that the demo page serves the
landing pages of the mailed links) and a retry backoff of one second (waits of 1, 4, 16 s).
Mails are read from the SMTP server: what a recipient gets, links and all.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from support import PASSWORD, Server, cli, free_port, make_settings, ok, server_process
from support.browser import chromium
from support.pgcluster import POSTGRES_BIN_PATH
from support.smtp import Mail, SmtpServer

from tokenward.app.service import AuthService
from tokenward.core.events import ClientInfo
from tokenward.core.onetime import hash_link_token
from tokenward.verify import RevokedTokenError, Verifier

SENDER = "tokenward <no-reply@mail.tokenward.test>"  # Message-IDs: <...@mail.tokenward.test>
NEW_PASSWORD = "another long enough passphrase 8"
MAIL_WAIT = 30.0  # seconds for the outbox worker to hand a mail to SMTP
TOKEN = re.compile(r"tw[vpex]_[A-Za-z0-9_-]{20,}")
LINK_PAGES = {
    "twv_": "/verify-email",
    "twp_": "/reset-password",
    "twe_": "/confirm-email",
    "twx_": "/cancel-email-change",
}


# -- the server, its mails, its database ---------------------------------------------------


@contextmanager
def mail_server(
    data_dir: Path,
    smtp: SmtpServer,
    port: int | None = None,
    *,
    access_log: bool = False,
    workers: int = 1,
    **extra: str,
) -> Iterator[Server]:
    """`tokenward serve` with ``workers`` processes (each runs an outbox worker) delivering
    to ``smtp``; links point at its own address. ``extra`` settings are added to (or
    replace) the mail ones."""
    port = port or free_port()
    env = {
        "TOKENWARD_EMAIL_DELIVERY": "smtp",
        "TOKENWARD_SMTP_URL": smtp.url,
        "TOKENWARD_EMAIL_FROM": SENDER,
        "TOKENWARD_APP_URL": f"http://127.0.0.1:{port}",
        "TOKENWARD_EMAIL_RETRY_BACKOFF": "1",
        "TOKENWARD_EMAIL_VERIFICATION": "required",
        **extra,
    }
    args = ["--workers", str(workers), *(["--access-log"] if access_log else [])]
    with server_process(data_dir, port, args=args, **env) as server:
        yield server


def mail_count(smtp: SmtpServer, to: str) -> int:
    return sum(to in mail.recipients for mail in smtp.mails)


def well_formed(mail: Mail) -> Mail:
    """What every mail is (docs/email.md): from the configured sender, multipart text and
    HTML, auto-generated, with a Message-ID, and no token in its Subject."""
    message = mail.message
    assert message["From"] == SENDER, message["From"]
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"], message
    assert message.get_content_type() == "multipart/alternative"
    assert mail.text and mail.html
    assert TOKEN.search(mail.subject) is None and "token" not in mail.subject.lower()
    return mail


def next_mail(
    smtp: SmtpServer, to: str, action: Callable[[], Any], timeout: float = MAIL_WAIT
) -> Mail:
    """Run ``action`` and return the first mail to ``to`` that arrives after it."""
    seen = mail_count(smtp, to)
    action()
    return well_formed(smtp.wait_for(seen + 1, to=to, timeout=timeout)[seen])


def message_id(mail: Mail) -> str:
    return str(mail.message["Message-ID"])


def expect(response: httpx.Response, status: int) -> httpx.Response:
    assert response.status_code == status, (response.status_code, response.text)
    return response


def credentials(address: str, password: str = PASSWORD) -> dict[str, str]:
    return {"email": address, "password": password}


def register_verified(client: httpx.Client, smtp: SmtpServer, address: str) -> None:
    """Register ``address`` (202: verification required) and use the mailed link."""
    mail = next_mail(
        smtp, address, lambda: expect(client.post("/auth/register", json=credentials(address)), 202)
    )
    assert mail.token.startswith("twv_"), mail.text
    expect(client.post("/auth/verify-email", json={"token": mail.token}), 204)


def login(client: httpx.Client, address: str, password: str = PASSWORD) -> tuple[str, str]:
    """(access token, refresh token) of a new session; the client keeps no cookie."""
    response = expect(client.post("/auth/login", json=credentials(address, password)), 200)
    refresh = response.cookies["tw_refresh"]
    client.cookies.clear()
    return response.json()["access_token"], refresh


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


class Database:
    """The database read directly, not through tokenward: sqlite3 on the file, or asyncpg on
    the PostgreSQL database that TOKENWARD_DATABASE_URL names (the PostgreSQL run)."""

    def __init__(self, data_dir: Path) -> None:
        url = os.environ.get("TOKENWARD_DATABASE_URL")
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1) if url else None
        self.path = data_dir / "tokenward.db"

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.dsn is None:
            with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as db:
                return db.execute(sql).fetchall()
        return asyncio.run(self._fetch(sql))

    async def _fetch(self, sql: str) -> list[tuple[Any, ...]]:
        assert self.dsn is not None
        connection = await asyncpg.connect(self.dsn)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    def value(self, sql: str) -> Any:
        [(value,)] = self.rows(sql)
        return value

    def wait_until(self, sql: str, expected: Any, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while (found := self.value(sql)) != expected:
            assert time.monotonic() < deadline, f"{sql}: {found!r}, expected {expected!r}"
            time.sleep(0.05)

    def dump(self) -> bytes:
        """Everything an attacker with a copy of the database has: the SQLite file and its
        write-ahead log byte for byte, or `pg_dump` of the PostgreSQL database."""
        if self.dsn is None:
            files = sorted(self.path.parent.glob(self.path.name + "*"))
            assert self.path in files, files
            return b"".join(path.read_bytes() for path in files)
        dumped = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_dump"), "--no-owner", "--dbname", self.dsn],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert dumped.returncode == 0, dumped.stderr.decode()
        assert b"COPY public.outbox " in dumped.stdout
        return dumped.stdout


def token_forms(token: str) -> list[bytes]:
    """The token as mailed, and its random part alone (stored without its prefix, say)."""
    return [token.encode(), token.split("_", 1)[1].encode()]


# -- 1. a crash with mails pending -----------------------------------------------------------

KILLED_USERS = 5


def test_sigkill_with_mails_pending_loses_none(tmp_path: Path, smtp: SmtpServer) -> None:
    """SMTP is down, five reset mails are queued (and tried, and failed), tokenward is
    SIGKILLed; with SMTP back and a new server on the same data, each of the five arrives,
    under the Message-ID recorded before the first attempt, and its link works.

    SMTP being down, no mail is half sent at the kill: each arrives exactly once. (One being
    handed over at a kill may arrive twice, with the same Message-ID, after the one-minute
    lease: docs/email.md. Never under two Message-IDs, which is checked here too.)"""
    data_dir = tmp_path / "data"
    database = Database(data_dir)
    port = free_port()
    users = [f"kill{n}@example.com" for n in range(KILLED_USERS)]
    pending = (
        "SELECT count(*) FROM outbox WHERE template = 'reset_password' AND sent_at IS NULL"
        " AND failed_at IS NULL AND last_error IS NOT NULL AND payload IS NOT NULL"
        " AND message_id IS NOT NULL"
    )
    with mail_server(data_dir, smtp, port) as server, httpx.Client(base_url=server.base) as client:
        for address in users:
            register_verified(client, smtp, address)
        smtp.stop()
        smtp.clear()
        for address in users:
            expect(client.post("/auth/password/forgot", json={"email": address}), 202)
        # Each mail was tried (the Message-ID recorded) and failed: due again within seconds.
        database.wait_until(pending, KILLED_USERS)
        time.sleep(0.3)
        server.process.kill()
        assert server.process.wait(10) == -signal.SIGKILL

    recorded = dict(
        database.rows(
            "SELECT message_id, payload FROM outbox WHERE template = 'reset_password'"
            " AND sent_at IS NULL AND payload IS NOT NULL"
        )
    )
    assert len(recorded) == KILLED_USERS, recorded
    assert smtp.mails == []

    smtp.start()
    with mail_server(data_dir, smtp, port) as server, httpx.Client(base_url=server.base) as client:
        # Up to a lease (one minute) if the kill caught a mail claimed but not yet marked.
        arrived = {address: smtp.wait_for(1, to=address, timeout=90) for address in users}
        database.wait_until(
            "SELECT count(*) FROM outbox WHERE template = 'reset_password' AND sent_at IS NOT NULL"
            " AND payload IS NULL",
            KILLED_USERS,
        )
        time.sleep(2)  # past the next backoff: nothing more is on its way
        mails = smtp.mails
        assert {address for mail in mails for address in mail.recipients} == set(users)
        ids = {message_id(mail) for mail in mails}
        assert ids == set(recorded), (ids, set(recorded))
        for address in users:
            mine = [mail for mail in mails if address in mail.recipients]
            assert len({message_id(mail) for mail in mine}) == 1, mine
            assert len({mail.token for mail in mine}) == 1
            assert arrived[address][0].link.startswith(f"{server.base}/reset-password#token=twp_")
            token = well_formed(arrived[address][0]).token
            reset = {"token": token, "new_password": NEW_PASSWORD}
            expect(client.post("/auth/password/reset", json=reset), 204)
            login(client, address, NEW_PASSWORD)
        assert len(mails) == KILLED_USERS, [message_id(mail) for mail in mails]


def _queue_resets_and_die(
    data_dir: Path, smtp: SmtpServer, port: int, addresses: list[str]
) -> None:
    """What a server leaves when it is killed right after answering forgot-password requests,
    before its outbox worker took the jobs: the requests' work, done in-process (the worker
    runs only in a served app's lifespan, so none runs here)."""

    async def queue() -> None:
        settings = make_settings(
            data_dir,
            email_delivery="smtp",
            smtp_url=smtp.url,
            email_from=SENDER,
            app_url=f"http://127.0.0.1:{port}",
            email_retry_backoff="1",
            email_verification="required",
        )
        service = await AuthService.open(settings)
        try:
            for address in addresses:
                await service.email_accounts.forgot_password(address, ClientInfo(ip="127.0.0.1"))
        finally:
            await service.close()

    asyncio.run(queue())


def test_jobs_queued_before_a_crash_are_decided_and_sent_by_the_next_server(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """forgot-password queues a job (the same sealed row for every address) that the worker
    decides later. Jobs that no worker took before the server died are decided and sent by
    the next server on the same data, from its first round, before any request reaches it:
    a link for each account, nothing for an unknown address; none given up."""
    data_dir = tmp_path / "data"
    database = Database(data_dir)
    port = free_port()
    users = [f"job{n}@example.com" for n in range(3)]
    with mail_server(data_dir, smtp, port) as server, httpx.Client(base_url=server.base) as client:
        for address in users:
            register_verified(client, smtp, address)
    smtp.clear()
    _queue_resets_and_die(data_dir, smtp, port, [*users, "job-nobody@example.com"])
    assert database.value("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 4

    with mail_server(data_dir, smtp, port) as server:
        deadline = time.monotonic() + 15
        while {a for mail in smtp.mails for a in mail.recipients} != set(users):
            if time.monotonic() > deadline:
                listed = cli(data_dir, "mail", "list").stdout
                raise AssertionError(f"mails to {[m.recipients for m in smtp.mails]}:\n{listed}")
            time.sleep(0.1)
        database.wait_until("SELECT count(*) FROM outbox WHERE sent_at IS NULL", 0)
        assert database.value("SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL") == 0
        resets = smtp.mails
        assert len(resets) == len(users), [mail.recipients for mail in resets]
        with httpx.Client(base_url=server.base) as client:
            for mail in resets:
                reset = {"token": well_formed(mail).token, "new_password": NEW_PASSWORD}
                expect(client.post("/auth/password/reset", json=reset), 204)


# -- 2. an SMTP outage with a live server ------------------------------------------------------

OUTAGE_USERS = 4


def test_smtp_outage_mails_queued_meanwhile_arrive_after_it(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """While SMTP is down, requests are answered at once and their mails wait in the outbox;
    once SMTP is back they arrive within the (one-second) backoff, none lost, none twice
    (two worker processes, so two outbox workers, race for them). `tokenward mail list` shows
    them retrying, then sent, and never a recipient or a token."""
    data_dir = tmp_path / "data"
    database = Database(data_dir)
    users = [f"outage{n}@example.com" for n in range(OUTAGE_USERS)]
    with (
        mail_server(data_dir, smtp, workers=2) as server,
        httpx.Client(base_url=server.base) as client,
    ):
        for address in users:
            register_verified(client, smtp, address)
        access, refresh = login(client, users[0])
        smtp.stop()
        smtp.clear()
        for address in users:
            started = time.monotonic()
            expect(client.post("/auth/password/forgot", json={"email": address}), 202)
            assert time.monotonic() - started < 2  # nothing is sent on the request path
        # The rest of the service is not held up by mail either.
        expect(client.get("/auth/me", headers=bearer(access)), 200)
        expect(client.post("/auth/refresh", headers={"Cookie": f"tw_refresh={refresh}"}), 200)
        client.cookies.clear()
        retrying = (
            "SELECT count(*) FROM outbox WHERE template = 'reset_password' AND sent_at IS NULL"
            " AND last_error IS NOT NULL"
        )
        database.wait_until(retrying, OUTAGE_USERS)
        during = ok(cli(data_dir, "mail", "list"))
        resets = [line for line in during.splitlines() if "\treset_password\t" in line]
        assert len(resets) == OUTAGE_USERS, during
        assert all("\tretrying\t" in line for line in resets), during

        smtp.start()
        back = time.monotonic()
        arrived = {address: smtp.wait_for(1, to=address, timeout=40) for address in users}
        for mails in arrived.values():
            well_formed(mails[0])
        # The waits are 1, 4, 16 s: the default backoff (30 s, 2 min) would take far longer.
        assert time.monotonic() - back < 25
        database.wait_until(
            "SELECT count(*) FROM outbox WHERE template = 'reset_password' AND sent_at IS NULL",
            0,
        )
        time.sleep(1.5)
        assert len(smtp.mails) == OUTAGE_USERS, [mail.recipients for mail in smtp.mails]
        after = ok(cli(data_dir, "mail", "list"))
        resets = [line for line in after.splitlines() if "\treset_password\t" in line]
        assert len(resets) == OUTAGE_USERS, after
        assert all("\tsent\t" in line for line in resets), after
        sent = [line for line in after.splitlines() if "\tverify_email\t" in line]
        assert len(sent) == OUTAGE_USERS and all("\tsent\t" in line for line in sent), after

        tokens = [mail.token for mails in arrived.values() for mail in mails]
        for output in (during, after):
            assert "@" not in output, output  # no recipient, nor any address
            assert TOKEN.search(output) is None, output
            for token in tokens:
                assert all(form.decode() not in output for form in token_forms(token))
        for address in users:
            reset = {"token": arrived[address][0].token, "new_password": NEW_PASSWORD}
            expect(client.post("/auth/password/reset", json=reset), 204)


# -- 3. temporary refusals ---------------------------------------------------------------------


def test_451_three_times_then_delivered_on_the_fourth_attempt(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """SMTP answers 451 three times, then 250: the mail arrives on attempt 4, after the
    waits of 1, 4 and 16 s, with the same Message-ID on every attempt."""
    data_dir = tmp_path / "data"
    address = "flaky@example.com"
    offered: list[str] = []
    original = smtp.handler.handle_DATA

    async def recording(server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        offered.append(str(parsed["Message-ID"]))
        return await original(server, session, envelope)

    smtp.handler.handle_DATA = recording  # type: ignore[method-assign]
    with mail_server(data_dir, smtp) as server, httpx.Client(base_url=server.base) as client:
        register_verified(client, smtp, address)
        attempts_before, offered_before = smtp.attempts, len(offered)
        smtp.fail_next(3, 451)
        started = time.monotonic()
        mail = next_mail(
            smtp,
            address,
            lambda: expect(client.post("/auth/password/forgot", json={"email": address}), 202),
            timeout=60,
        )
        took = time.monotonic() - started
        assert smtp.attempts - attempts_before == 4
        assert offered[offered_before:] == [message_id(mail)] * 4
        assert took >= 1 + 4 + 16 - 0.5, took
        assert mail.token.startswith("twp_")

        listed = ok(cli(data_dir, "mail", "list"))
        [line] = [line for line in listed.splitlines() if "\treset_password\t" in line]
        assert "\tsent\t" in line and "\t4 attempts\t" in line, listed
        access, _ = login(client, address)
        events = expect(client.get("/auth/events", headers=bearer(access)), 200).json()["events"]
        sent = [e for e in events if e["type"] == "email.sent"]
        assert any(e.get("detail", {}).get("attempts") == 4 for e in sent), events


# -- 4. what the time of an answer tells ---------------------------------------------------


def _timed(client: httpx.Client, path: str, body: dict[str, str]) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.post(path, json=body)
    return time.perf_counter() - started, response


def _same_answers(answers: list[httpx.Response]) -> None:
    """One status, one body, one set of headers (but the date and the request's own id) for
    every answer."""
    first = answers[0]
    own = {"date", "x-request-id"}
    headers = {k: v for k, v in first.headers.items() if k not in own}
    for answer in answers:
        assert answer.status_code == first.status_code == 202, answer.text
        assert answer.content == first.content == b'{"status":"accepted"}', answer.content
        assert {k: v for k, v in answer.headers.items() if k not in own} == headers
        assert len(answer.headers["x-request-id"]) == 32


Body = Callable[[int], dict[str, str]]
PAUSE = 0.02  # seconds between requests, after the previous one's mail (if any) has left


def _compare(
    client: httpx.Client,
    smtp: SmtpServer,
    path: str,
    kinds: tuple[tuple[Body, Body], tuple[Body, Body]],
    samples: int,
    *,
    warm_up: int = 3,
) -> float:
    """Time two kinds of request, alternating (and alternating which goes first); return the
    ratio of their median latencies after checking that the answers are identical.

    Each kind is (the request's body, the mail it makes the server send: ``{"to": address}``
    or ``{}``). Requests go one at a time, each after the mail of the one before has reached
    SMTP and a short pause: the time measured is the request's own, not the outbox worker's
    (which sends in the same process, right after the answer) nor the test's SMTP server's
    (which runs in this process)."""
    times: tuple[list[float], list[float]] = ([], [])
    answers: list[httpx.Response] = []
    for number in range(-warm_up, samples):
        order = (0, 1) if number % 2 == 0 else (1, 0)
        for kind in order:
            body, mail = kinds[kind]
            recipient = mail(number + warm_up).get("to")
            seen = mail_count(smtp, recipient) if recipient else 0
            took, response = _timed(client, path, body(number + warm_up))
            answers.append(response)
            if number >= 0:
                times[kind].append(took)
            if recipient:
                smtp.wait_for(seen + 1, to=recipient, timeout=MAIL_WAIT)
            time.sleep(PAUSE)
    _same_answers(answers)
    return statistics.median(times[0]) / statistics.median(times[1])


def _no_mail(_: int) -> dict[str, str]:
    return {}


def test_answers_do_not_tell_whether_an_address_has_an_account(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """forgot-password and verify-email/request for an account vs an unknown address (50 of
    each), and register with required verification for a taken vs a new address (20 of each,
    each hashing with the server's real argon2): identical status, headers and body bytes. An
    account's request makes a mail, an unknown address's does not (but for register): the mail
    is the work the answer hides. The medians are printed (-s); the timing goal (within
    [0.8, 1.25] of each other) is bench/RESULTS.md's scenario 3c, bench/forgot_timing.py:
    under CI's two parallel suites a median moved past it with no change to the path.

    Rate limits are off (TOKENWARD_RATE_LIMITS=false): with them on, the per-address limit
    and the resend cooldown would suppress the account's mails after the first, and the two
    kinds would do the same work for a reason that says nothing about the paths themselves.
    """
    data_dir = tmp_path / "data"
    known, unverified = "known@example.com", "unverified@example.com"
    ratios: dict[str, float] = {}
    with (
        mail_server(data_dir, smtp, TOKENWARD_RATE_LIMITS="false") as server,
        httpx.Client(base_url=server.base, timeout=30) as client,
    ):
        register_verified(client, smtp, known)
        next_mail(
            smtp,
            unverified,
            lambda: expect(client.post("/auth/register", json=credentials(unverified)), 202),
        )
        nobody: tuple[Body, Body] = (lambda n: {"email": f"nobody{n}@example.com"}, _no_mail)
        ratios["forgot"] = _compare(
            client,
            smtp,
            "/auth/password/forgot",
            ((lambda _: {"email": known}, lambda _: {"to": known}), nobody),
            50,
        )
        ratios["verify-request"] = _compare(
            client,
            smtp,
            "/auth/verify-email/request",
            ((lambda _: {"email": unverified}, lambda _: {"to": unverified}), nobody),
            50,
        )
        ratios["register"] = _compare(
            client,
            smtp,
            "/auth/register",
            (
                (lambda _: credentials(known), lambda _: {"to": known}),  # "someone tried"
                (
                    lambda n: credentials(f"new{n}@example.com"),
                    lambda n: {"to": f"new{n}@example.com"},
                ),
            ),
            20,
            warm_up=2,
        )
        assert mail_count(smtp, "nobody0@example.com") == 0
    print(f"median latency ratios (account / no account): {ratios}")  # shown with -s


# -- 5. mail scanners and page loads ----------------------------------------------------------


def test_a_scanners_get_of_each_link_leaves_its_token_usable(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """A mail scanner GETs every link it sees (following redirects; the fragment, where the
    token is, is never sent): each landing page answers 200, and the token still works."""
    data_dir = tmp_path / "data"
    first, second, third = "scan@example.com", "scan-b@example.com", "scan-c@example.com"
    scanned: list[str] = []
    with (
        mail_server(data_dir, smtp, access_log=True) as server,
        httpx.Client(base_url=server.base) as client,
        httpx.Client(follow_redirects=True) as scanner,
    ):

        def scan(mail: Mail) -> str:
            link = mail.link
            prefix = mail.token[:4]
            assert link.startswith(f"{server.base}{LINK_PAGES[prefix]}#token=")
            # Some scanners send a HEAD first (a GET-only page may refuse it: 405).
            assert scanner.head(link).status_code in (200, 405)
            page = scanner.get(link)
            assert page.status_code == 200, (link, page.status_code)
            assert page.headers["content-type"].startswith("text/html")
            assert mail.token not in page.text
            scanned.append(mail.token)
            return mail.token

        verify = next_mail(
            smtp, first, lambda: expect(client.post("/auth/register", json=credentials(first)), 202)
        )
        expect(client.post("/auth/verify-email", json={"token": scan(verify)}), 204)
        access, _ = login(client, first)
        assert expect(client.get("/auth/me", headers=bearer(access)), 200).json()["email_verified"]

        # An email change, cancelled from the notice's link.
        seen = mail_count(smtp, first), mail_count(smtp, second)
        change = {"new_email": second, "current_password": PASSWORD}
        expect(client.post("/auth/email", json=change, headers=bearer(access)), 202)
        notice = smtp.wait_for(seen[0] + 1, to=first)[seen[0]]
        confirm = smtp.wait_for(seen[1] + 1, to=second)[seen[1]]
        scan(confirm)
        expect(client.post("/auth/email/cancel", json={"token": scan(notice)}), 204)
        expect(client.post("/auth/email/confirm", json={"token": confirm.token}), 400)

        # Another, confirmed from its link.
        change = {"new_email": third, "current_password": PASSWORD}
        confirm = next_mail(
            smtp,
            third,
            lambda: expect(client.post("/auth/email", json=change, headers=bearer(access)), 202),
        )
        expect(client.post("/auth/email/confirm", json={"token": scan(confirm)}), 204)
        assert expect(client.get("/auth/me", headers=bearer(access)), 200).json()["email"] == third

        reset = next_mail(
            smtp,
            third,
            lambda: expect(client.post("/auth/password/forgot", json={"email": third}), 202),
        )
        body = {"token": scan(reset), "new_password": NEW_PASSWORD}
        expect(client.post("/auth/password/reset", json=body), 204)
        login(client, third, NEW_PASSWORD)
    assert {token[:4] for token in scanned} == set(LINK_PAGES)
    landed_unseen(server, scanned)


def landed_unseen(server: Server, tokens: list[str]) -> None:
    """The server's access log shows each landing page fetched, and none of the tokens."""
    log = server.log.read_text()
    for page in LINK_PAGES.values():
        assert f'"GET {page} HTTP/1.1" 200' in log, log
    for token in tokens:
        assert all(form.decode() not in log for form in token_forms(token)), token


TOKEN_POSTS = (
    "/auth/verify-email",
    "/auth/password/reset",
    "/auth/email/confirm",
    "/auth/email/cancel",
)


def test_a_page_load_of_each_link_in_chromium_leaves_its_token_usable(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """Debian's Chromium, headless, loads each link (as a scanner that runs scripts would)
    and clicks nothing: the landing page shows, posts no token, and the token still works."""
    from playwright.sync_api import Request

    data_dir = tmp_path / "data"
    unverified, resetting, changing = "load@example.com", "load-b@example.com", "load-c@example.com"
    loaded: list[str] = []
    with (
        mail_server(data_dir, smtp, access_log=True) as server,
        httpx.Client(base_url=server.base) as client,
        chromium() as browser,
    ):

        def load(mail: Mail) -> str:
            """Open the link in a fresh browser context; wait until the page has read
            the token and settled; check it sent the token nowhere."""
            token = mail.token
            assert mail.link.startswith(f"{server.base}{LINK_PAGES[token[:4]]}#token=")
            context = browser.new_context()
            requests: list[Request] = []
            context.on("request", lambda request: requests.append(request))
            try:
                page = context.new_page()
                page.goto(mail.link, wait_until="networkidle")
                page.wait_for_selector(
                    "#landing-confirm:not([hidden]), #reset-form:not([hidden])",
                    state="visible",
                    timeout=10_000,
                )
                page.wait_for_timeout(500)
            finally:
                context.close()
            assert requests, "the page made no request at all"
            for request in requests:
                # Playwright shows the navigation's URL with its fragment; the fragment
                # is not sent (the server's access log says so below).
                assert token not in request.url.split("#", 1)[0], request.url
                assert token not in (request.post_data or ""), request.url
                assert not request.url.endswith(TOKEN_POSTS), request.url
            loaded.append(token)
            return token

        verify = next_mail(
            smtp,
            unverified,
            lambda: expect(client.post("/auth/register", json=credentials(unverified)), 202),
        )
        expect(client.post("/auth/verify-email", json={"token": load(verify)}), 204)

        register_verified(client, smtp, resetting)
        reset = next_mail(
            smtp,
            resetting,
            lambda: expect(client.post("/auth/password/forgot", json={"email": resetting}), 202),
        )
        body = {"token": load(reset), "new_password": NEW_PASSWORD}
        expect(client.post("/auth/password/reset", json=body), 204)

        register_verified(client, smtp, changing)
        access, _ = login(client, changing)
        for target, kind in (("load-d@example.com", "twx_"), ("load-e@example.com", "twe_")):
            change = {"new_email": target, "current_password": PASSWORD}
            seen = mail_count(smtp, changing), mail_count(smtp, target)
            expect(client.post("/auth/email", json=change, headers=bearer(access)), 202)
            notice = smtp.wait_for(seen[0] + 1, to=changing)[seen[0]]
            confirm = smtp.wait_for(seen[1] + 1, to=target)[seen[1]]
            if kind == "twx_":
                token = load(notice)
                expect(client.post("/auth/email/cancel", json={"token": token}), 204)
            else:
                token = load(confirm)
                expect(client.post("/auth/email/confirm", json={"token": token}), 204)
        me = expect(client.get("/auth/me", headers=bearer(access)), 200).json()
        assert me["email"] == "load-e@example.com"
    assert sorted(token[:4] for token in loaded) == sorted(LINK_PAGES)
    landed_unseen(server, loaded)


# -- 6. a reset ends everything ------------------------------------------------------------


def test_a_reset_refuses_every_earlier_token_at_once_and_at_resource_servers(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """After a password reset, tokenward refuses every earlier refresh and access token of the
    user at once, and a resource server's Verifier (with the revocation feed) refuses the
    earlier access tokens within its bound (plus the feed's one-second lag)."""
    data_dir = tmp_path / "data"
    address, bystander = "reset@example.com", "bystander@example.com"
    bound, feed_lag = 2.0, 1.0
    with mail_server(data_dir, smtp) as server, httpx.Client(base_url=server.base) as client:
        register_verified(client, smtp, address)
        register_verified(client, smtp, bystander)
        sessions = [login(client, address) for _ in range(3)]
        other_access, other_refresh = login(client, bystander)
        created = ok(cli(data_dir, "clients", "create", "notes-api"))
        ids = dict(re.findall(r"^(client_id|client_secret)=(\S+)$", created, re.MULTILINE))
        with Verifier(
            server.base,
            revocation_url=f"{server.base}/auth/revocations",
            client_id=ids["client_id"],
            client_secret=ids["client_secret"],
            revocation_bound=bound,
            max_staleness=bound,
            on_stale="reject",
        ) as verifier:
            for access, _ in sessions:
                verifier.verify(access)
            # One earlier session refreshed once: its newest token is refused too.
            rotated = expect(
                client.post("/auth/refresh", headers={"Cookie": f"tw_refresh={sessions[0][1]}"}),
                200,
            )
            sessions.append((rotated.json()["access_token"], rotated.cookies["tw_refresh"]))
            client.cookies.clear()

            # An email change pending: the reset voids its links too.
            change = {"new_email": "reset-new@example.com", "current_password": PASSWORD}
            seen = mail_count(smtp, address)
            expect(client.post("/auth/email", json=change, headers=bearer(sessions[1][0])), 202)
            confirm = smtp.wait_for(1, to="reset-new@example.com")[0]
            smtp.wait_for(seen + 1, to=address)  # the notice with its cancel link, before the next
            mail = next_mail(
                smtp,
                address,
                lambda: expect(client.post("/auth/password/forgot", json={"email": address}), 202),
            )
            body = {"token": mail.token, "new_password": NEW_PASSWORD}
            seen = mail_count(smtp, address)
            done = expect(client.post("/auth/password/reset", json=body), 204)
            reset_at = time.monotonic()
            assert "set-cookie" not in done.headers  # no automatic login

            for access, refresh in sessions:
                expect(client.get("/auth/me", headers=bearer(access)), 401)
                expect(client.get("/auth/sessions", headers=bearer(access)), 401)
                expect(
                    client.post("/auth/refresh", headers={"Cookie": f"tw_refresh={refresh}"}), 401
                )
                grant = {"grant_type": "refresh_token", "refresh_token": refresh}
                assert client.post("/auth/token", data=grant).json()["error"] == "invalid_grant"
            expect(client.post("/auth/login", json=credentials(address)), 401)
            new_access, _ = login(client, address, NEW_PASSWORD)
            # The link is spent, the change's links are void, and the bystander untouched.
            expect(client.post("/auth/password/reset", json=body), 400)
            expect(client.post("/auth/email/confirm", json={"token": confirm.token}), 400)
            expect(client.get("/auth/me", headers=bearer(other_access)), 200)

            # tokenward lists an ended session once it is a second old (its feed's cursor
            # lags so that no committing transaction is skipped): the bound counts from then.
            pending = {access for access, _ in sessions}
            while pending:
                for access in sorted(pending):
                    asked = time.monotonic()
                    try:
                        verifier.verify(access)
                    except RevokedTokenError:
                        pending.discard(access)
                        continue
                    assert asked - reset_at <= feed_lag + bound, "accepted after the bound"
                time.sleep(0.05)
            verifier.verify(new_access)  # the new session's token passes
            verifier.verify(other_access)
        # "Your password was reset", with no link to use.
        notice = well_formed(smtp.wait_for(seen + 1, to=address)[seen])
        assert TOKEN.search(notice.text) is None, notice.text
        expect(client.post("/auth/refresh", headers={"Cookie": f"tw_refresh={other_refresh}"}), 200)


# -- 7. what a copy of the database holds ------------------------------------------------------


def test_a_database_dump_holds_no_usable_token_and_no_recipient_in_the_outbox(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """After flows that mailed links (sent ones, and ones still queued while SMTP is down), a
    copy of the database (the SQLite file and its WAL byte for byte; pg_dump on PostgreSQL)
    holds none of the mailed tokens, used or not, and no recipient in the outbox or the links:
    payloads are sealed while queued and wiped once sent, and a link's address is sealed too.
    So an address that no account holds (the new one of a pending change, an unknown one
    asked for a reset) is nowhere in it at all. Neither is a token in the server's log."""
    data_dir = tmp_path / "data"
    database = Database(data_dir)
    first, second = "dump@example.com", "dump-b@example.com"
    moved, moved_too = "dump-new@example.com", "dump-b-new@example.com"
    ghost = "dump-ghost@example.com"  # no account: its jobs send nothing
    with mail_server(data_dir, smtp) as server, httpx.Client(base_url=server.base) as client:
        verify = next_mail(
            smtp, first, lambda: expect(client.post("/auth/register", json=credentials(first)), 202)
        )
        expect(client.post("/auth/verify-email", json={"token": verify.token}), 204)
        register_verified(client, smtp, second)
        access, _ = login(client, first)
        change = {"new_email": moved, "current_password": PASSWORD}
        seen = mail_count(smtp, first)
        expect(client.post("/auth/email", json=change, headers=bearer(access)), 202)
        smtp.wait_for(1, to=moved)
        smtp.wait_for(seen + 1, to=first)
        expect(client.post("/auth/password/forgot", json={"email": second}), 202)
        smtp.wait_for(2, to=second)  # the verification link, the reset link
        database.wait_until("SELECT count(*) FROM outbox WHERE sent_at IS NULL", 0)

        # Now SMTP goes away: these mails wait in the outbox, tried and due again.
        smtp.stop()
        before = len(smtp.mails)
        other_access, _ = login(client, second)
        change = {"new_email": moved_too, "current_password": PASSWORD}
        expect(client.post("/auth/email", json=change, headers=bearer(other_access)), 202)
        expect(client.post("/auth/password/forgot", json={"email": first}), 202)
        expect(client.post("/auth/password/forgot", json={"email": ghost}), 202)
        expect(client.post("/auth/verify-email/request", json={"email": ghost}), 202)
        database.wait_until(
            "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND last_error IS NOT NULL"
            " AND payload IS NOT NULL",
            3,
        )
        # And the ghost's two jobs decided (nothing to send: their rows deleted), which the
        # sender may reach after the three failed attempts.
        database.wait_until("SELECT count(*) FROM outbox WHERE sent_at IS NULL", 3)
        queued_dump = database.dump()
        queued_rows = database.rows(OUTBOX_ROWS)
        queued_links = database.rows(LINK_ROWS)

        smtp.start()
        smtp.wait_for(before + 3, timeout=MAIL_WAIT)
        database.wait_until("SELECT count(*) FROM outbox WHERE sent_at IS NULL", 0)
        sent_dump = database.dump()
        sent_rows = database.rows(OUTBOX_ROWS)
        link_rows = database.rows(LINK_ROWS)
        log_while_running = server.log.read_bytes()
    final_dump = database.dump()

    mails = smtp.mails
    tokens = [mail.token for mail in mails if _LINKED.search(mail.text)]
    assert sorted({token[:4] for token in tokens}) == sorted(LINK_PAGES), tokens
    assert len(tokens) == 8, tokens  # per user: verify, confirm, cancel, reset
    recipients = {address for mail in mails for address in mail.recipients}
    assert recipients == {first, second, moved, moved_too}
    assert mail_count(smtp, ghost) == 0

    for name, dump in (("queued", queued_dump), ("sent", sent_dump), ("final", final_dump)):
        for token in tokens:
            # The dump does hold every link: as the SHA-256 of its token, nothing more.
            assert hash_link_token(token).encode() in dump, (name, token)
            for form in token_forms(token):
                assert form not in dump, (name, token)
        for address in (moved, moved_too, ghost):  # held by no account
            assert address.encode() not in dump, (name, address)
    for token in tokens:
        for form in token_forms(token):
            assert form not in log_while_running, token

    every = {
        "queued mails": queued_rows,
        "their links": queued_links,
        "sent mails": sent_rows,
        "links": link_rows,
    }
    for name, rows in every.items():
        text = repr(rows)
        for address in recipients:
            assert address not in text, (name, address)
        assert "@example.com" not in text, (name, rows)
    assert sum(row[-1] is not None for row in queued_rows) == 3, queued_rows  # sealed
    assert len(link_rows) == len(tokens), link_rows
    assert all(row[-1] is None for row in sent_rows), sent_rows  # wiped
    outbox = _outbox_section(final_dump)
    for address in recipients | {ghost}:
        assert address.encode() not in outbox, address


_LINKED = re.compile(r"#token=tw[vpex]_")
LINK_ROWS = "SELECT id, user_id, purpose, token_hash, email, created_at, used_at FROM link_tokens"
OUTBOX_ROWS = (
    "SELECT id, created_at, template, user_id, message_id, attempts, next_attempt_at, sent_at,"
    " failed_at, last_error, payload FROM outbox"
)


def _outbox_section(dump: bytes) -> bytes:
    """The outbox table of a pg_dump; on SQLite, the rows cannot be cut out of the file: the
    whole file is checked for tokens above, and the rows through SQL."""
    match = re.search(rb"COPY public\.outbox .*?\n\\\.\n", dump, re.DOTALL)
    return match.group(0) if match else b""
