"""The mail outbox and the mails themselves (docs/email.md, "Delivery").

Retries are run round by round: the ``quiet`` fixture is the service without the app, so no
worker delivers behind the test's back; the test advances the fake clock by the backoff and
calls ``outbox.deliver_due()`` itself. The tests that need HTTP flows run the app, whose worker
delivers to the loopback SMTP server (tests/support/smtp.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, text
from support import FAST_HASHER, PASSWORD, Api, FakeClock
from support.smtp import Mail, SmtpServer, mail_settings_for

from tokenward.app.operators import Admin
from tokenward.app.outbox import LEASE
from tokenward.app.service import AuthService
from tokenward.core.events import ClientInfo
from tokenward.infra.config import Settings
from tokenward.storage.models import LinkTokenRow, OutboxRow

APP_URL = "https://app.example"
NEW_PASSWORD = "another long enough passphrase 8"
TEMPLATES = {
    "verify_email",
    "signup_attempt",
    "reset_password",
    "password_reset_done",
    "email_change_confirm",
    "email_change_notice",
    "email_changed",
    "account_deleted",
}
TOKEN = re.compile(r"tw[vpex]_[A-Za-z0-9_-]{43}")


@pytest.fixture
def mail_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
def settings_overrides(smtp: SmtpServer, mail_settings: dict[str, Any]) -> dict[str, Any]:
    return mail_settings_for(smtp, **{"app_url": APP_URL, **mail_settings})


@pytest.fixture
async def quiet(settings: Settings, clock: FakeClock) -> AsyncIterator[Any]:
    """The service without the app, and so without its outbox worker."""
    service = await AuthService.open(settings, clock=clock, hasher=FAST_HASHER)
    try:
        yield service
    finally:
        await service.close()


@pytest.fixture
def message_ids(quiet: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Message-ID of every attempt to hand a mail to SMTP, accepted or not."""
    seen: list[str] = []
    delivery = quiet.outbox.delivery
    send = delivery.send

    async def spy(message: Any) -> None:
        seen.append(str(message["Message-ID"]))
        await send(message)

    monkeypatch.setattr(delivery, "send", spy)
    return seen


# -- helpers ---------------------------------------------------------------------------------


async def outbox(service: Any) -> list[OutboxRow]:
    async with service.db.read() as db:
        return list((await db.execute(select(OutboxRow).order_by(OutboxRow.id))).scalars())


async def events(service: Any, kind: str) -> list[Any]:
    async with service.store.read() as tx:
        found = await tx.events(limit=1000)
    return [e for e in found if e.type == kind]


async def a_reset_mail(service: Any, email: str = "ada@example.com") -> None:
    """One mail queued, as `tokenward users send-reset` queues it."""
    await service.accounts.register(email, PASSWORD)
    await service.email_accounts.send_reset(email)


async def until(check: Any, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def drained(service: Any) -> None:
    async def done() -> bool:
        return all(r.sent_at or r.failed_at for r in await outbox(service))

    await until(done)


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


async def every_flow(api: Api, smtp: SmtpServer, service: Any) -> dict[str, Mail]:
    """Make the server send each of its eight mails once; the mails by template."""
    mails: dict[str, Mail] = {}
    assert (await api.register("ada@example.com")).status_code == 202
    (mails["verify_email"],) = await smtp.arrived(1, to="ada@example.com")
    assert (await api.register("ada@example.com")).status_code == 202
    mails["signup_attempt"] = (await smtp.arrived(2, to="ada@example.com"))[1]
    verified = await api.http.post(
        "/auth/verify-email", json={"token": mails["verify_email"].token}
    )
    assert verified.status_code == 204
    forgot = await api.http.post("/auth/password/forgot", json={"email": "ada@example.com"})
    assert forgot.status_code == 202
    mails["reset_password"] = (await smtp.arrived(3, to="ada@example.com"))[2]
    reset = await api.http.post(
        "/auth/password/reset",
        json={"token": mails["reset_password"].token, "new_password": NEW_PASSWORD},
    )
    assert reset.status_code == 204
    mails["password_reset_done"] = (await smtp.arrived(4, to="ada@example.com"))[3]
    login = await api.login("ada@example.com", NEW_PASSWORD)
    assert login.status_code == 200
    access = login.json()["access_token"]
    change = await api.http.post(
        "/auth/email",
        json={"new_email": "ada@new.example", "current_password": NEW_PASSWORD},
        headers=bearer(access),
    )
    assert change.status_code == 202
    (mails["email_change_confirm"],) = await smtp.arrived(1, to="ada@new.example")
    mails["email_change_notice"] = (await smtp.arrived(5, to="ada@example.com"))[4]
    confirmed = await api.http.post(
        "/auth/email/confirm", json={"token": mails["email_change_confirm"].token}
    )
    assert confirmed.status_code == 204
    mails["email_changed"] = (await smtp.arrived(6, to="ada@example.com"))[5]
    deleted = await api.http.request(
        "DELETE",
        "/auth/account",
        json={"current_password": NEW_PASSWORD},
        headers=bearer(access),
    )
    assert deleted.status_code == 204
    mails["account_deleted"] = (await smtp.arrived(2, to="ada@new.example"))[1]
    await drained(service)
    assert {r.template for r in await outbox(service)} == TEMPLATES
    assert len(smtp.mails) == 8
    return mails


# -- retries and giving up -------------------------------------------------------------------


async def test_temporary_failures_are_retried_with_backoff_under_one_message_id(
    quiet: Any, smtp: SmtpServer, clock: FakeClock, message_ids: list[str]
) -> None:
    await a_reset_mail(quiet)
    smtp.fail_next(3, 451)
    assert await quiet.outbox.deliver_due() == 1
    (row,) = await outbox(quiet)
    assert (row.attempts, row.sent_at, row.failed_at) == (1, None, None)
    assert row.last_error == "SMTP 451"
    assert row.message_id is not None
    # Tried again after 30 s, 2 min, 8 min: not a second earlier.
    for wait, attempt in ((30, 2), (120, 3), (480, 4)):
        clock.advance(wait - 1)
        assert await quiet.outbox.deliver_due() == 0
        clock.advance(1)
        assert await quiet.outbox.deliver_due() == 1
        assert smtp.attempts == attempt
    (mail,) = smtp.mails
    (row,) = await outbox(quiet)
    assert row.attempts == 4
    assert row.sent_at is not None
    assert row.payload is None
    assert message_ids == [row.message_id] * 4
    assert mail.message["Message-ID"] == row.message_id
    assert row.message_id.endswith("@example.com>")
    (sent,) = await events(quiet, "email.sent")
    assert sent.detail == {"template": "reset_password", "attempts": 4}
    assert await events(quiet, "email.delivery_failed") == []
    clock.advance(3600)
    assert await quiet.outbox.deliver_due() == 0
    assert smtp.attempts == 4


async def test_the_last_attempt_gives_the_mail_up(
    quiet: Any, smtp: SmtpServer, clock: FakeClock
) -> None:
    await a_reset_mail(quiet)
    smtp.fail_next(5, 451)
    assert await quiet.outbox.deliver_due() == 1
    for wait in (30, 120, 480, 1920):
        clock.advance(wait)
        assert await quiet.outbox.deliver_due() == 1
    (row,) = await outbox(quiet)
    assert row.attempts == 5
    assert row.failed_at is not None
    assert row.sent_at is None
    (failed,) = await events(quiet, "email.delivery_failed")
    assert failed.detail == {"template": "reset_password", "attempts": 5, "reason": "SMTP 451"}
    assert failed.user_id == (await Admin(quiet).user("ada@example.com")).id
    clock.advance(7 * 24 * 3600)
    assert await quiet.outbox.deliver_due() == 0
    assert smtp.attempts == 5
    assert smtp.mails == []


@pytest.mark.parametrize("mail_settings", [{"email_max_attempts": 2}])
async def test_the_attempts_are_a_setting(quiet: Any, smtp: SmtpServer, clock: FakeClock) -> None:
    await a_reset_mail(quiet)
    smtp.fail_next(5, 451)
    assert await quiet.outbox.deliver_due() == 1
    clock.advance(30)
    assert await quiet.outbox.deliver_due() == 1
    (row,) = await outbox(quiet)
    assert (row.attempts, row.failed_at is not None) == (2, True)
    assert len(await events(quiet, "email.delivery_failed")) == 1


async def test_a_permanent_refusal_gives_the_mail_up_at_once(
    quiet: Any, smtp: SmtpServer, clock: FakeClock
) -> None:
    await a_reset_mail(quiet)
    smtp.fail_next(1, 550)
    assert await quiet.outbox.deliver_due() == 1
    (row,) = await outbox(quiet)
    assert row.attempts == 1
    assert row.failed_at is not None
    assert row.last_error == "SMTP 550"
    (failed,) = await events(quiet, "email.delivery_failed")
    assert failed.detail == {"template": "reset_password", "attempts": 1, "reason": "SMTP 550"}
    clock.advance(24 * 3600)
    assert await quiet.outbox.deliver_due() == 0
    assert smtp.attempts == 1


async def test_a_crash_mid_send_sends_again_after_the_lease_with_the_same_message_id(
    quiet: Any, smtp: SmtpServer, clock: FakeClock, message_ids: list[str]
) -> None:
    """A worker that claimed a mail and died: another takes it once the lease is over."""
    await a_reset_mail(quiet)
    now = quiet.now()
    async with quiet.store.write() as tx:
        (claimed,) = await tx.claim_mail(
            now, lease_until=now + LEASE, new_message_id=lambda: "<crashed@example.com>", limit=5
        )
    assert claimed.attempts == 1
    clock.advance(LEASE.total_seconds() - 1)
    assert await quiet.outbox.deliver_due() == 0
    clock.advance(1)
    assert await quiet.outbox.deliver_due() == 1
    (mail,) = smtp.mails
    assert message_ids == ["<crashed@example.com>"]
    assert mail.message["Message-ID"] == "<crashed@example.com>"
    (row,) = await outbox(quiet)
    assert row.attempts == 2
    assert row.sent_at is not None


async def test_a_reset_request_writes_the_same_job_for_any_address(
    quiet: Any, smtp: SmtpServer
) -> None:
    """The request only queues a sealed job; the worker decides, off the request path."""
    await quiet.accounts.register("ada@example.com", PASSWORD)
    client = ClientInfo("203.0.113.7", "tests")
    for address in ("ada@example.com", "nobody@example.com", "ada@example.com"):
        await quiet.email_accounts.forgot_password(address, client)
    rows = await outbox(quiet)
    assert [(r.template, r.user_id, r.attempts, r.message_id) for r in rows] == [
        ("reset_password", None, 0, None)
    ] * 3
    for row in rows:
        assert "ada@" not in str(row.payload) and "nobody@" not in str(row.payload)
    async with quiet.db.read() as db:
        assert (await db.execute(select(LinkTokenRow))).first() is None
    assert await events(quiet, "password.reset_requested") == []
    assert await quiet.outbox.deliver_due() == 3
    older, newer = [m for m in smtp.mails if m.recipients == ("ada@example.com",)]
    assert len(smtp.mails) == 2
    first, _, third = rows
    assert [r.id for r in await outbox(quiet)] == [first.id, third.id]  # the unknown: gone
    (suppressed,) = await events(quiet, "email.suppressed")
    assert suppressed.detail == {"reason": "no_account", "mail": "reset_password"}
    assert suppressed.ip == "203.0.113.7"
    requested = await events(quiet, "password.reset_requested")
    assert len(requested) == 2
    assert {e.ip for e in requested} == {"203.0.113.7"}
    # Resolved one after the other: the newer link supersedes the older.
    assert older.token != newer.token
    async with quiet.db.read() as db:
        links = (await db.execute(select(LinkTokenRow))).scalars().all()
    assert sorted(link.used_at is None for link in links) == [False, True]


async def test_every_mail_event_names_its_user(quiet: Any, smtp: SmtpServer) -> None:
    """email.sent and email.delivery_failed carry the user of the mail (they show in the
    user's own GET /auth/events), whether the mail was queued as it is (an operator's reset)
    or decided by the worker (a reset the user asked for)."""
    await quiet.accounts.register("ada@example.com", PASSWORD)
    ada = (await Admin(quiet).user("ada@example.com")).id
    client = ClientInfo("203.0.113.7")
    await quiet.email_accounts.send_reset("ada@example.com")
    await quiet.email_accounts.forgot_password("ada@example.com", client)
    assert await quiet.outbox.deliver_due() == 2
    sent = await events(quiet, "email.sent")
    assert [e.user_id for e in sent] == [ada, ada]
    await quiet.email_accounts.request_verification("ada@example.com", client)
    smtp.fail_next(1, 550)
    assert await quiet.outbox.deliver_due() == 1
    (failed,) = await events(quiet, "email.delivery_failed")
    assert failed.user_id == ada
    assert [r.user_id for r in await outbox(quiet)] == [ada] * 3


# -- operators: tokenward mail list | retry --------------------------------------------------


async def test_an_operator_lists_the_outbox_and_retries_a_given_up_mail(
    quiet: Any, smtp: SmtpServer, clock: FakeClock
) -> None:
    await a_reset_mail(quiet)
    assert await quiet.outbox.deliver_due() == 1
    await quiet.email_accounts.send_reset("ada@example.com")
    smtp.fail_next(1, 550)
    assert await quiet.outbox.deliver_due() == 1
    newest, oldest = await quiet.outbox.list()
    assert (oldest.state, newest.state) == ("sent", "failed")
    assert (oldest.template, newest.template) == ("reset_password", "reset_password")
    assert (oldest.attempts, newest.attempts) == (1, 1)
    assert newest.last_error == "SMTP 550"
    assert (oldest.payload_kept, newest.payload_kept) == (False, True)
    listing = repr(await quiet.outbox.list())
    assert "ada@example.com" not in listing
    assert "twp_" not in listing
    assert await quiet.outbox.retry(oldest.id) is False  # sent: nothing to retry
    assert await quiet.outbox.retry(newest.id + 1000) is False
    assert await quiet.outbox.retry(newest.id) is True
    assert await quiet.outbox.retry(newest.id) is False  # queued already
    assert (await quiet.outbox.list())[0].state == "queued"
    assert await quiet.outbox.deliver_due() == 1
    first, second = smtp.mails
    assert first.token != second.token
    assert second.message["Message-ID"] == (await outbox(quiet))[1].message_id
    latest, _ = await quiet.outbox.list()
    assert (latest.state, latest.attempts, latest.payload_kept) == ("sent", 1, False)


async def test_a_given_up_mails_payload_is_wiped_after_a_day(
    quiet: Any, smtp: SmtpServer, clock: FakeClock
) -> None:
    await a_reset_mail(quiet)
    smtp.fail_next(1, 550)
    await quiet.outbox.deliver_due()
    (row,) = await outbox(quiet)
    assert row.payload is not None  # kept for `tokenward mail retry`
    clock.advance(23 * 3600)
    await Admin(quiet).prune()
    assert (await outbox(quiet))[0].payload is not None
    clock.advance(3600 + 1)
    await Admin(quiet).prune()
    (row,) = await outbox(quiet)
    assert row.payload is None
    assert await quiet.outbox.retry(row.id) is False


# -- a server that is away -------------------------------------------------------------------


async def test_nothing_is_lost_while_smtp_is_down(
    api: Api, service: Any, smtp: SmtpServer, clock: FakeClock
) -> None:
    """The worker of the running app keeps the mails through an SMTP outage, and sends each
    once when the server is back."""
    addresses = [f"user{i}@example.com" for i in range(4)]
    for address in addresses:
        assert (await api.register(address)).status_code == 201

    async def forgot(address: str) -> None:
        answer = await api.http.post("/auth/password/forgot", json={"email": address})
        assert answer.status_code == 202

    await forgot(addresses[0])
    await smtp.arrived(1, to=addresses[0])
    smtp.stop()
    for address in addresses[1:]:
        await forgot(address)

    async def all_tried() -> bool:
        rows = (await outbox(service))[1:]
        return len(rows) == 3 and all(r.last_error for r in rows)

    await until(all_tried)
    waiting = (await outbox(service))[1:]
    assert all(r.sent_at is None and r.failed_at is None for r in waiting)
    # The relay was not reached: an outage counts no attempt, so none is ever given up.
    assert all(r.attempts == 0 for r in waiting)
    smtp.start()
    clock.advance(30)
    await service.outbox.deliver_due()
    for address in addresses:
        (mail,) = await smtp.arrived(1, to=address)
        assert mail.token.startswith("twp_")
    await drained(service)
    assert len(smtp.mails) == 4
    assert all(r.sent_at is not None for r in await outbox(service))
    assert await events(service, "email.delivery_failed") == []


# -- the mails -------------------------------------------------------------------------------


@pytest.mark.parametrize("mail_settings", [{"email_verification": "required"}])
async def test_every_mail_is_multipart_auto_generated_and_no_subject_holds_a_token(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    mails = await every_flow(api, smtp, service)
    assert len({m.subject for m in mails.values()}) == 8
    for name, mail in mails.items():
        message = mail.message
        assert message["Auto-Submitted"] == "auto-generated", name
        assert message["From"] == "Example <no-reply@example.com>"
        assert message.get_content_type() == "multipart/alternative"
        assert mail.text.strip() and mail.html.strip(), name
        assert message["Date"] and message["Message-ID"]
        assert not TOKEN.search(mail.subject), name
        assert "token" not in mail.subject.lower()
        assert "#token=" not in message["Subject"]
        for other in mails.values():
            if TOKEN.search(other.text):
                assert other.token not in str(message["Subject"])
    for name in ("verify_email", "reset_password", "email_change_confirm", "email_change_notice"):
        mail = mails[name]
        assert mail.link in mail.html, name  # the same link in both parts
        assert mail.link.startswith(APP_URL + "/")
    assert mails["email_change_confirm"].recipients == ("ada@new.example",)
    assert mails["account_deleted"].recipients == ("ada@new.example",)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [value or "" for name, value in attrs if tag == "a" and name == "href"]


@pytest.mark.parametrize("mail_settings", [{"app_url": 'https://app.example/a"b<i>&c'}])
async def test_the_html_part_is_autoescaped(api: Api, smtp: SmtpServer) -> None:
    assert (await api.register("ada@example.com")).status_code == 201
    answer = await api.http.post("/auth/password/forgot", json={"email": "ada@example.com"})
    assert answer.status_code == 202
    (mail,) = await smtp.arrived(1, to="ada@example.com")
    raw = 'https://app.example/a"b<i>&c/reset-password#token='
    assert raw in mail.text  # the text part as is
    assert "<i>" not in mail.html
    assert 'a"b' not in mail.html
    assert "https://app.example/a&#34;b&lt;i&gt;&amp;c/reset-password#token=" in mail.html
    parser = _Links()
    parser.feed(mail.html)
    assert parser.hrefs == [f"{raw}{mail.token}"]


class TestTemplateFolder:
    """TOKENWARD_EMAIL_TEMPLATES: one file of one template replaced, the rest built in."""

    @pytest.fixture
    def mail_settings(self, tmp_path: Path) -> dict[str, Any]:
        folder = tmp_path / "templates"
        folder.mkdir()
        (folder / "reset_password.subject.txt").write_text("Acme: reset within {{ expires_in }}\n")
        return {"email_templates": folder, "email_verification": "optional"}

    async def test_templates_are_overridable_file_by_file(self, api: Api, smtp: SmtpServer) -> None:
        assert (await api.register("ada@example.com")).status_code == 201
        answer = await api.http.post("/auth/password/forgot", json={"email": "ada@example.com"})
        assert answer.status_code == 202
        verify, reset = await smtp.arrived(2, to="ada@example.com")
        assert reset.subject == "Acme: reset within 1 hour"
        assert reset.token.startswith("twp_")  # the built-in text part
        assert reset.link in reset.html  # and the built-in HTML part
        assert verify.subject == "Confirm your email address"  # another template: built in


@pytest.mark.parametrize(
    "mail_settings", [{"email_delivery": "none", "email_verification": "optional"}]
)
async def test_no_mail_is_queued_when_mail_is_off(api: Api, service: Any, smtp: SmtpServer) -> None:
    """TOKENWARD_EMAIL_DELIVERY=none: the flows answer as usual and nothing is queued."""
    assert (await api.register("ada@example.com")).status_code == 201
    for path in ("/auth/password/forgot", "/auth/verify-email/request"):
        answer = await api.http.post(path, json={"email": "ada@example.com"})
        assert answer.status_code == 202
    assert await outbox(service) == []
    assert service.outbox.enabled is False
    assert smtp.mails == []


# -- what is at rest, and what is logged ------------------------------------------------------


MESSAGE_ID = re.compile(r"<[0-9a-f]{32}@[^>]+>")


async def dump(service: Any, settings: Settings) -> dict[str, str]:
    """Every row of every table as text, and on SQLite the database files' bytes."""
    found: dict[str, str] = {}
    async with service.db.read() as db:
        names = await db.run_sync(lambda s: inspect(s.connection()).get_table_names())
        assert {"users", "link_tokens", "outbox", "events", "sessions"} <= set(names)
        for name in names:
            rows = (await db.execute(text(f'SELECT * FROM "{name}"'))).all()  # noqa: S608
            found[name] = "\n".join(repr(tuple(row)) for row in rows)
    if service.db.is_sqlite:
        path = settings.data_dir / "tokenward.db"
        files = [path, path.with_name(path.name + "-wal")]
        found["sqlite files"] = b"".join(p.read_bytes() for p in files if p.exists()).decode(
            "latin-1"
        )
    return found


async def test_the_database_holds_no_usable_token_and_the_outbox_no_address(
    api: Api, service: Any, smtp: SmtpServer, clock: FakeClock, settings: Settings
) -> None:
    """Dumped with mails still queued (SMTP down), then sent, then with the links used: no
    mailed token anywhere, no recipient in the outbox or the events."""
    smtp.stop()
    access, _ = await api.signed_up("ada@example.com")
    assert (await api.register("grace@example.com")).status_code == 201
    for address in ("ada@example.com", "grace@example.com"):
        answer = await api.http.post("/auth/password/forgot", json={"email": address})
        assert answer.status_code == 202
    change = await api.http.post(
        "/auth/email",
        json={"new_email": "ada@new.example", "current_password": PASSWORD},
        headers=bearer(access),
    )
    assert change.status_code == 202
    answer = await api.http.post("/auth/verify-email/request", json={"email": "grace@example.com"})
    assert answer.status_code == 202

    async def all_tried() -> bool:
        rows = await outbox(service)
        return len(rows) == 5 and all(r.last_error for r in rows)

    await until(all_tried)
    dumps = [await dump(service, settings)]
    smtp.start()
    clock.advance(30)
    await service.outbox.deliver_due()
    await drained(service)
    dumps.append(await dump(service, settings))
    mails = smtp.mails
    assert len(mails) == 5
    tokens = {m.token for m in mails}
    assert {t[:4] for t in tokens} == {"twp_", "twe_", "twx_", "twv_"}
    by_prefix = {(m.token[:4], m.recipients[0]): m.token for m in mails}
    reset = await api.http.post(
        "/auth/password/reset",
        json={"token": by_prefix["twp_", "grace@example.com"], "new_password": NEW_PASSWORD},
    )
    assert reset.status_code == 204
    confirm = await api.http.post(
        "/auth/email/confirm", json={"token": by_prefix["twe_", "ada@new.example"]}
    )
    assert confirm.status_code == 204
    await drained(service)
    dumps.append(await dump(service, settings))
    addresses = {"ada@example.com", "grace@example.com", "ada@new.example"}
    for snapshot in dumps:
        for where, content in snapshot.items():
            for token in tokens:
                assert token not in content, (where, token[:4])
                assert token[4:] not in content, (where, token[:4])
        for table in ("outbox", "events"):
            # A Message-ID is random hex at the sender's domain: hex can end in "ada".
            content = MESSAGE_ID.sub("<message-id>", snapshot[table])
            for address in addresses:
                assert address not in content, (table, address)
                assert address.split("@")[0] + "@" not in content, (table, address)


async def test_link_tokens_hold_no_address(api: Api, service: Any, smtp: SmtpServer) -> None:
    """A pending change's new address, like every recipient, is not kept in the clear by the
    link tables."""
    access, _ = await api.signed_up("ada@example.com")
    answer = await api.http.post("/auth/password/forgot", json={"email": "ada@example.com"})
    assert answer.status_code == 202
    change = await api.http.post(
        "/auth/email",
        json={"new_email": "ada@new.example", "current_password": PASSWORD},
        headers=bearer(access),
    )
    assert change.status_code == 202
    await drained(service)
    async with service.db.read() as db:
        rows = (await db.execute(select(LinkTokenRow))).scalars().all()
    assert len(rows) == 3
    for row in rows:
        stored = repr([getattr(row, c.key) for c in LinkTokenRow.__table__.columns])
        for address in ("ada@example.com", "ada@new.example"):
            assert address not in stored, (row.purpose, address)


@pytest.mark.parametrize("mail_settings", [{"email_verification": "required"}])
async def test_no_token_or_address_is_logged(
    api: Api, service: Any, smtp: SmtpServer, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    caplog.set_level(logging.DEBUG)
    mails = await every_flow(api, smtp, service)
    # and the delivery failures' log lines too
    assert (await api.register("grace@example.com")).status_code == 202
    smtp.fail_next(1, 451)
    await until(lambda: _attempted(service, 9))
    smtp.fail_next(1, 550)
    clock.advance(30)
    await service.outbox.deliver_due()
    await drained(service)
    assert "given up after 2 attempts (SMTP 550)" in caplog.text
    # tokenward's own loggers at every level, any other at INFO and above (a library's DEBUG
    # lines, aiosqlite's with the SQL parameters, are not on in a deployment); not the test
    # SMTP server's (mail.log).
    records = [
        r
        for r in caplog.records
        if r.name.startswith("tokenward")
        or (r.levelno >= logging.INFO and not r.name.startswith("mail."))
    ]
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in records)
    secrets = {m.token for m in mails.values() if TOKEN.search(m.text)}
    assert len(secrets) == 4
    for secret in secrets:
        assert secret not in logged
    for address in ("ada@example.com", "ada@new.example", "grace@example.com"):
        assert address not in logged


async def _attempted(service: Any, count: int) -> bool:
    rows = await outbox(service)
    return len(rows) >= count and rows[count - 1].attempts >= 1


# -- found by the security review ------------------------------------------------------------


async def test_a_mail_that_keeps_failing_unexpectedly_blocks_no_other_and_is_given_up(
    quiet: Any, smtp: SmtpServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error no one foresaw (a bug, a template this version lacks) is one mail's: the
    mails after it are still sent, and it is given up after TOKENWARD_EMAIL_MAX_ATTEMPTS
    instead of being claimed again forever."""
    await a_reset_mail(quiet, "ada@example.com")
    await a_reset_mail(quiet, "grace@example.com")
    compose = quiet.outbox.composer.compose

    def poisoned(template: Any, *, to: str, **rest: Any) -> Any:
        if to == "ada@example.com":
            raise RuntimeError("a bug")
        return compose(template, to=to, **rest)

    monkeypatch.setattr(quiet.outbox.composer, "compose", poisoned)
    await quiet.outbox.deliver_due()
    assert [m.recipients for m in smtp.mails] == [("grace@example.com",)]
    for _ in range(quiet.settings.email_max_attempts):
        clock.advance(24 * 3600)
        await quiet.outbox.deliver_due()
    ada = (await outbox(quiet))[0]
    assert ada.failed_at is not None and ada.sent_at is None
    assert ada.attempts == quiet.settings.email_max_attempts
    (failed,) = await events(quiet, "email.delivery_failed")
    assert failed.detail["reason"] == "error: RuntimeError"


async def test_an_smtp_outage_of_any_length_gives_no_mail_up(
    quiet: Any, smtp: SmtpServer, clock: FakeClock
) -> None:
    """Refused connections do not count as attempts: after far more tries than
    TOKENWARD_EMAIL_MAX_ATTEMPTS, the mail still waits, and goes out when the relay is back."""
    await a_reset_mail(quiet)
    smtp.stop()
    for _ in range(quiet.settings.email_max_attempts * 3):
        clock.advance(3600)
        await quiet.outbox.deliver_due()
    (row,) = await outbox(quiet)
    assert row.failed_at is None and row.attempts == 0 and row.last_error
    smtp.start()
    clock.advance(3600)
    await quiet.outbox.deliver_due()
    assert [m.recipients for m in smtp.mails] == [("ada@example.com",)]


async def test_the_development_mailbox_answers_only_this_machine(tmp_path: Any) -> None:
    """It holds every link: a development server reachable from elsewhere must not hand
    them out (404 to another address, the mails to loopback)."""
    import httpx
    from asgi_lifespan import LifespanManager
    from support import make_settings

    from tokenward.web import create_app

    app = create_app(make_settings(tmp_path / "data", rate_limits=False), hasher=FAST_HASHER)
    async with LifespanManager(app):
        for peer, status in ((("203.0.113.9", 5000), 404), (("127.0.0.1", 5000), 200)):
            transport = httpx.ASGITransport(app=app, client=peer)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                assert (await client.get("/demo/mailbox")).status_code == status
                # A proxy or tunnel on this machine: loopback peer, asker elsewhere.
                for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
                    proxied = await client.get("/demo/mailbox", headers={header: "198.51.100.4"})
                    assert proxied.status_code == 404
