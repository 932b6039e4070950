"""Accounts by email over HTTP (docs/email.md): verification, password reset, email change,
deletion, the mail limits, single use under concurrency and the operators' use cases.

The app runs in-process with its outbox worker, delivering to a real SMTP server on loopback
(tests/support/smtp.py). A mail is read as its recipient reads it: the token comes from the
link in the mail, never from the database.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select, update
from support import (
    COOKIE,
    PASSWORD,
    PROBLEM,
    Api,
    FakeClock,
    headers_without_request_id,
    refresh_cookie,
    without_request_id,
)
from support.smtp import Mail, SmtpServer, mail_settings_for

from tokenward.app.operators import Admin
from tokenward.app.resource_servers import ClientService
from tokenward.core.events import ClientInfo
from tokenward.exceptions import UnknownUserError
from tokenward.storage.models import LinkTokenRow, OutboxRow, UserRow

NEW_PASSWORD = "another long enough passphrase 8"
WRONG_PASSWORD = "not the password of anyone 9"
APP_URL = "https://app.example"
TYPE = "urn:tokenward:problem:"
ACCEPTED = {"status": "accepted"}


@pytest.fixture
def mail_settings() -> dict[str, Any]:
    """A test's own settings on top of the module's (parametrize it)."""
    return {}


@pytest.fixture
def settings_overrides(smtp: SmtpServer, mail_settings: dict[str, Any]) -> dict[str, Any]:
    return mail_settings_for(smtp, **{"app_url": APP_URL, **mail_settings})


OPTIONAL = {"email_verification": "optional"}
REQUIRED = {"email_verification": "required"}


# -- helpers ---------------------------------------------------------------------------------


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


def sid(access: str) -> str:
    return str(jwt.decode(access, options={"verify_signature": False})["sid"])


def same_answer(a: httpx.Response, b: httpx.Response) -> None:
    """Byte-identical status, body and headers (only the Date and the request id may differ)."""
    assert a.status_code == b.status_code
    assert without_request_id(a) == without_request_id(b)
    assert headers_without_request_id(a) == headers_without_request_id(b)


def accepted(response: httpx.Response) -> None:
    assert response.status_code == 202, response.text
    assert response.json() == ACCEPTED
    assert response.headers["cache-control"] == "no-store"
    assert "set-cookie" not in response.headers


def problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == TYPE + code


async def outbox_count(service: Any) -> int:
    async with service.db.read() as db:
        return int((await db.execute(select(func.count()).select_from(OutboxRow))).scalar_one())


async def drained(service: Any, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Wait until the worker has handled every queued mail (sent or given up): from then on
    ``smtp.mails`` holds every mail the requests so far caused."""
    deadline = time.monotonic() + timeout
    while True:
        async with service.db.read() as db:
            pending = (
                await db.execute(
                    select(func.count())
                    .select_from(OutboxRow)
                    .where(OutboxRow.sent_at.is_(None), OutboxRow.failed_at.is_(None))
                )
            ).scalar_one()
        if not pending:
            return
        assert time.monotonic() < deadline, f"{pending} mails still queued"
        await asyncio.sleep(0.02)


def to(smtp: SmtpServer, address: str) -> list[Mail]:
    return [m for m in smtp.mails if address in m.recipients]


def only(smtp: SmtpServer, address: str) -> Mail:
    mails = to(smtp, address)
    assert len(mails) == 1, [m.subject for m in mails]
    return mails[0]


async def user_id(service: Any, email: str) -> str:
    async with service.store.read() as tx:
        account = await tx.account_by_email(email)
    assert account is not None
    return str(account.id)


async def events(service: Any, kind: str | None = None) -> list[Any]:
    async with service.store.read() as tx:
        found = await tx.events(limit=1000)
    return [e for e in found if kind is None or e.type == kind]


async def suppressed_reasons(service: Any) -> list[str]:
    return sorted(e.detail["reason"] for e in await events(service, "email.suppressed"))


async def login(api: Api, email: str, password: str = PASSWORD) -> tuple[str, str]:
    response = await api.login(email, password)
    assert response.status_code == 200, response.text
    return response.json()["access_token"], refresh_cookie(response)


async def verify(api: Api, token: str) -> httpx.Response:
    return await api.http.post("/auth/verify-email", json={"token": token})


async def request_verification(api: Api, email: str) -> httpx.Response:
    return await api.http.post("/auth/verify-email/request", json={"email": email})


async def forgot(api: Api, email: str) -> httpx.Response:
    return await api.http.post("/auth/password/forgot", json={"email": email})


async def reset(api: Api, token: str, password: str = NEW_PASSWORD) -> httpx.Response:
    return await api.http.post(
        "/auth/password/reset", json={"token": token, "new_password": password}
    )


async def change_email(
    api: Api, access: str, new_email: str, password: str = PASSWORD
) -> httpx.Response:
    return await api.http.post(
        "/auth/email",
        json={"new_email": new_email, "current_password": password},
        headers=bearer(access),
    )


async def confirm(api: Api, token: str) -> httpx.Response:
    return await api.http.post("/auth/email/confirm", json={"token": token})


async def cancel(api: Api, token: str) -> httpx.Response:
    return await api.http.post("/auth/email/cancel", json={"token": token})


async def delete_account(
    api: Api, access: str, password: str = PASSWORD, refresh: str | None = None
) -> httpx.Response:
    headers = bearer(access)
    if refresh:
        headers["Cookie"] = f"{COOKIE}={refresh}"
    return await api.http.request(
        "DELETE", "/auth/account", json={"current_password": password}, headers=headers
    )


async def me(api: Api, access: str) -> dict[str, Any]:
    response = await api.me(access)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
async def feed(service: Any, api: Api) -> Any:
    """Reads the revocation feed as a resource server does (client credentials)."""
    client, secret = await ClientService(service).create("orders-api")
    auth = httpx.BasicAuth(client.id, secret)

    class Feed:
        def __init__(self) -> None:
            self.cursor: str | None = None

        async def start(self) -> None:
            page = (await api.http.get("/auth/revocations", auth=auth)).json()
            self.cursor = page["cursor"]

        async def since_start(self, clock: FakeClock) -> set[str]:
            clock.advance(2)  # the feed lags a second behind, for transactions committing
            response = await api.http.get(
                "/auth/revocations", params={"after": self.cursor}, auth=auth
            )
            assert response.status_code == 200, response.text
            return {entry["sid"] for entry in response.json()["revoked"]}

    reader = Feed()
    await reader.start()
    return reader


# -- verification ----------------------------------------------------------------------------


async def test_verification_off_registers_as_before_and_mails_nothing(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    response = await api.register("ada@example.com")
    assert response.status_code == 201
    assert response.json()["email"] == "ada@example.com"
    assert response.json()["email_verified"] is False
    assert (await api.login("ada@example.com")).status_code == 200
    assert await outbox_count(service) == 0
    assert await events(service, "email.verification_sent") == []
    assert smtp.mails == []


@pytest.mark.parametrize("mail_settings", [OPTIONAL])
async def test_optional_verification_mails_a_link_and_allows_login(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    response = await api.register("Ada@Example.com")
    assert response.status_code == 201
    assert response.json()["email_verified"] is False
    (mail,) = await smtp.arrived(1, to="ada@example.com")
    assert mail.link.startswith(f"{APP_URL}/verify-email#token=twv_")
    access, _ = await login(api, "ada@example.com")
    assert (await me(api, access))["email_verified"] is False
    assert (await verify(api, mail.token)).status_code == 204
    assert (await me(api, access))["email_verified"] is True
    assert len(await events(service, "email.verification_sent")) == 1


@pytest.mark.parametrize("mail_settings", [REQUIRED])
async def test_required_register_answers_alike_for_new_and_existing_addresses(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    """202, byte for byte, whether or not the address has an account; the owner of the taken
    address is told someone tried, the new address gets its verification link."""
    first = await api.register("ada@example.com")
    accepted(first)
    await smtp.arrived(1, to="ada@example.com")
    new = await api.register("grace@example.com")
    taken = await api.register("ADA@example.com", "a different passphrase 12")
    accepted(new)
    same_answer(new, taken)
    same_answer(first, taken)
    await drained(service)
    ada = to(smtp, "ada@example.com")
    assert len(ada) == 2
    attempt = ada[1]
    assert "#token=" not in attempt.text  # "someone tried to sign up": nothing to click to use
    assert attempt.subject != ada[0].subject
    assert only(smtp, "grace@example.com").token.startswith("twv_")
    async with service.db.read() as db:
        assert (await db.execute(select(func.count()).select_from(UserRow))).scalar_one() == 2
    # The existing account's password did not change: the old one still is the one.
    assert (await api.login("ada@example.com", "a different passphrase 12")).status_code == 401


@pytest.mark.parametrize("mail_settings", [REQUIRED])
async def test_required_verification_refuses_login_until_verified(
    api: Api, smtp: SmtpServer
) -> None:
    accepted(await api.register("ada@example.com"))
    (mail,) = await smtp.arrived(1, to="ada@example.com")
    refused = await api.login("ada@example.com")
    problem(refused, 403, "email-not-verified")
    assert "set-cookie" not in refused.headers
    wrong = await api.login("ada@example.com", WRONG_PASSWORD)
    unknown = await api.login("nobody@example.com", WRONG_PASSWORD)
    problem(wrong, 401, "invalid-credentials")
    same_answer(wrong, unknown)
    grant = await api.http.post(
        "/auth/token",
        data={"grant_type": "password", "username": "ada@example.com", "password": PASSWORD},
    )
    assert grant.status_code == 400
    assert grant.json()["error"] == "invalid_grant"
    assert "access_token" not in grant.text
    assert (await verify(api, mail.token)).status_code == 204
    access, _ = await login(api, "ada@example.com")
    assert (await me(api, access))["email_verified"] is True
    grant = await api.http.post(
        "/auth/token",
        data={"grant_type": "password", "username": "ada@example.com", "password": PASSWORD},
    )
    assert grant.status_code == 200


@pytest.mark.parametrize("mail_settings", [OPTIONAL])
async def test_a_verification_link_works_once(api: Api, service: Any, smtp: SmtpServer) -> None:
    await api.register("ada@example.com")
    (mail,) = await smtp.arrived(1, to="ada@example.com")
    assert (await verify(api, mail.token)).status_code == 204
    again = await verify(api, mail.token)
    problem(again, 400, "link-invalid")
    access, _ = await login(api, "ada@example.com")
    assert (await me(api, access))["email_verified"] is True
    assert len(await events(service, "email.verified")) == 1


@pytest.mark.parametrize(
    "token",
    [
        "",
        "twv_",
        "twv_" + "A" * 42,
        "twv_" + "A" * 43,  # well formed, but no such link
        "twv_" + "A" * 42 + "!",
        "twp_" + "A" * 43,
    ],
)
async def test_unknown_or_malformed_verification_tokens_are_400(api: Api, token: str) -> None:
    problem(await verify(api, token), 400, "link-invalid")


@pytest.mark.parametrize("mail_settings", [REQUIRED])
async def test_verification_request_answers_alike_and_mails_only_the_unverified(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    for address in ("ada@example.com", "grace@example.com", "ed@example.com"):
        accepted(await api.register(address))
    await drained(service)
    assert await service.email_accounts.mark_verified("grace@example.com")
    await Admin(service).set_disabled("ed@example.com", True)
    smtp.clear()
    before = max(e.id for e in await events(service))
    answers = [
        await request_verification(api, address)
        for address in (
            "nobody@example.com",
            "ada@example.com",
            "grace@example.com",
            "ed@example.com",
        )
    ]
    for answer in answers:
        accepted(answer)
        same_answer(answers[0], answer)
    await drained(service)
    assert [m.recipients for m in smtp.mails] == [("ada@example.com",)]
    assert smtp.mails[0].token.startswith("twv_")
    suppressed = [e for e in await events(service, "email.suppressed") if e.id > before]
    reasons = sorted(e.detail["reason"] for e in suppressed)
    assert reasons == ["already_verified", "disabled", "no_account"]


@pytest.mark.parametrize("mail_settings", [REQUIRED])
async def test_a_newer_verification_link_supersedes_an_older_one(
    api: Api, smtp: SmtpServer
) -> None:
    accepted(await api.register("ada@example.com"))
    (older,) = await smtp.arrived(1, to="ada@example.com")
    accepted(await request_verification(api, "ada@example.com"))
    newer = (await smtp.arrived(2, to="ada@example.com"))[1]
    assert newer.token != older.token
    problem(await verify(api, older.token), 400, "link-invalid")
    assert (await verify(api, newer.token)).status_code == 204


@pytest.mark.parametrize("mail_settings", [OPTIONAL])
async def test_a_verification_link_expires_after_24_hours(
    api: Api, smtp: SmtpServer, clock: FakeClock
) -> None:
    await api.register("ada@example.com")
    await api.register("grace@example.com")
    (ada,) = await smtp.arrived(1, to="ada@example.com")
    (grace,) = await smtp.arrived(1, to="grace@example.com")
    assert "24 hours" in ada.text
    clock.advance(24 * 3600 - 1)
    assert (await verify(api, ada.token)).status_code == 204
    clock.advance(2)
    problem(await verify(api, grace.token), 400, "link-invalid")
    access, _ = await login(api, "grace@example.com")
    assert (await me(api, access))["email_verified"] is False


@pytest.mark.parametrize("mail_settings", [OPTIONAL])
async def test_a_verification_link_for_an_old_address_is_refused_after_a_change(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    await api.register("ada@example.com")
    (old_link,) = await smtp.arrived(1, to="ada@example.com")
    access, _ = await login(api, "ada@example.com")
    accepted(await change_email(api, access, "ada@new.example"))
    (confirmation,) = await smtp.arrived(1, to="ada@new.example")
    assert (await confirm(api, confirmation.token)).status_code == 204
    problem(await verify(api, old_link.token), 400, "link-invalid")
    assert (await me(api, access))["email"] == "ada@new.example"
    assert len(await events(service, "email.verified")) == 0


@pytest.mark.parametrize("mail_settings", [OPTIONAL])
async def test_a_link_is_bound_to_the_address_it_was_sent_to(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    """Were the address to change without voiding the links (it never does through the API,
    so the row is changed here directly), the links mailed to the old one are refused."""
    await api.register("ada@example.com")
    (verification,) = await smtp.arrived(1, to="ada@example.com")
    accepted(await forgot(api, "ada@example.com"))
    reset_mail = (await smtp.arrived(2, to="ada@example.com"))[1]
    ada = await user_id(service, "ada@example.com")
    async with service.db.write() as db:
        await db.execute(update(UserRow).where(UserRow.id == ada).values(email="ada@new.example"))
    problem(await verify(api, verification.token), 400, "link-invalid")
    problem(await reset(api, reset_mail.token), 400, "link-invalid")
    access, _ = await login(api, "ada@new.example")
    assert (await me(api, access))["email_verified"] is False


# -- password reset --------------------------------------------------------------------------


async def test_forgot_answers_alike_and_mails_only_enabled_accounts(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    for address in ("ada@example.com", "grace@example.com", "ed@example.com"):
        assert (await api.register(address)).status_code == 201
    await service.email_accounts.mark_verified("ada@example.com")  # grace stays unverified
    await Admin(service).set_disabled("ed@example.com", True)
    answers = [
        await forgot(api, address)
        for address in (
            "nobody@example.com",
            "ada@example.com",
            "ed@example.com",
            "grace@example.com",
        )
    ]
    for answer in answers:
        accepted(answer)
        same_answer(answers[0], answer)
    await drained(service)
    assert sorted(m.recipients for m in smtp.mails) == [
        ("ada@example.com",),
        ("grace@example.com",),
    ]
    for mail in smtp.mails:
        assert mail.link.startswith(f"{APP_URL}/reset-password#token=twp_")
        assert "1 hour" in mail.text
    assert (await reset(api, only(smtp, "grace@example.com").token)).status_code == 204
    assert (await api.login("grace@example.com", NEW_PASSWORD)).status_code == 200


async def test_a_weak_new_password_is_422_and_the_link_stays_usable(
    api: Api, smtp: SmtpServer
) -> None:
    await api.register("ada@example.com")
    accepted(await forgot(api, "ada@example.com"))
    (mail,) = await smtp.arrived(1, to="ada@example.com")
    weak = await reset(api, mail.token, "short pass 1")
    problem(weak, 422, "weak-password")
    assert weak.json()["rule"] == "password_too_short"
    problem(await reset(api, mail.token, "ada@example.com"), 422, "weak-password")
    assert (await api.login("ada@example.com")).status_code == 200  # unchanged so far
    assert (await reset(api, mail.token)).status_code == 204
    assert (await api.login("ada@example.com", NEW_PASSWORD)).status_code == 200
    problem(await reset(api, mail.token, "yet another long passphrase 3"), 400, "link-invalid")


async def test_a_reset_link_of_an_account_disabled_since_is_refused(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    await api.register("ada@example.com")
    accepted(await forgot(api, "ada@example.com"))
    (mail,) = await smtp.arrived(1, to="ada@example.com")
    await Admin(service).set_disabled("ada@example.com", True)
    problem(await reset(api, mail.token), 400, "link-invalid")
    assert await events(service, "password.reset") == []
    await Admin(service).set_disabled("ada@example.com", False)
    assert (await api.login("ada@example.com")).status_code == 200  # the password unchanged


@pytest.mark.parametrize("mail_settings", [OPTIONAL])
async def test_a_reset_ends_every_session_voids_every_link_and_says_so(
    api: Api, service: Any, smtp: SmtpServer, feed: Any, clock: FakeClock
) -> None:
    await api.register("ada@example.com")
    (verification,) = await smtp.arrived(1, to="ada@example.com")
    laptop, laptop_refresh = await login(api, "ada@example.com")
    phone, phone_refresh = await login(api, "ada@example.com")
    accepted(await change_email(api, laptop, "ada@new.example"))
    (change,) = await smtp.arrived(1, to="ada@new.example")
    notice = (await smtp.arrived(2, to="ada@example.com"))[1]
    accepted(await forgot(api, "ada@example.com"))
    reset_mail = (await smtp.arrived(3, to="ada@example.com"))[2]
    assert reset_mail.token.startswith("twp_")

    done = await reset(api, reset_mail.token)
    assert done.status_code == 204
    assert done.content == b""
    assert "set-cookie" not in done.headers  # no automatic sign-in
    # Every session ended, at once: refresh tokens and access tokens alike.
    for refresh in (laptop_refresh, phone_refresh):
        assert (await api.refresh(refresh)).status_code == 401
    for access in (laptop, phone):
        assert (await api.me(access)).status_code == 401
    assert await feed.since_start(clock) >= {sid(laptop), sid(phone)}
    # Every other outstanding link of the user is void.
    problem(await verify(api, verification.token), 400, "link-invalid")
    problem(await confirm(api, change.token), 400, "link-invalid")
    problem(await cancel(api, notice.token), 400, "link-invalid")
    problem(await reset(api, reset_mail.token), 400, "link-invalid")
    # The new password is the one; the old one is not.
    assert (await api.login("ada@example.com")).status_code == 401
    access, _ = await login(api, "ada@example.com", NEW_PASSWORD)
    assert (await me(api, access))["email"] == "ada@example.com"
    await drained(service)
    told = to(smtp, "ada@example.com")[3]
    assert "#token=" not in told.text
    assert told.subject != reset_mail.subject
    (event,) = await events(service, "password.reset")
    assert event.detail == {"sessions_ended": 2}


@pytest.mark.parametrize("mail_settings", [{"password_reset_end_sessions": "none"}])
async def test_a_reset_can_leave_sessions_alone(
    api: Api, service: Any, smtp: SmtpServer, feed: Any, clock: FakeClock
) -> None:
    access, refresh = await api.signed_up("ada@example.com")
    accepted(await forgot(api, "ada@example.com"))
    (mail,) = await smtp.arrived(1, to="ada@example.com")
    assert (await reset(api, mail.token)).status_code == 204
    assert (await api.me(access)).status_code == 200
    assert (await api.refresh(refresh)).status_code == 200
    assert sid(access) not in await feed.since_start(clock)
    assert (await api.login("ada@example.com", NEW_PASSWORD)).status_code == 200
    await smtp.arrived(2, to="ada@example.com")
    (event,) = await events(service, "password.reset")
    assert event.detail == {"sessions_ended": 0}


@pytest.mark.parametrize("mail_settings", [OPTIONAL])
async def test_a_password_change_voids_every_outstanding_link(api: Api, smtp: SmtpServer) -> None:
    await api.register("ada@example.com")
    (verification,) = await smtp.arrived(1, to="ada@example.com")
    access, _ = await login(api, "ada@example.com")
    accepted(await forgot(api, "ada@example.com"))
    accepted(await change_email(api, access, "ada@new.example"))
    (change,) = await smtp.arrived(1, to="ada@new.example")
    mails = await smtp.arrived(3, to="ada@example.com")
    by_prefix = {m.token[:4]: m.token for m in mails[1:]}
    assert set(by_prefix) == {"twp_", "twx_"}
    changed = await api.http.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(access),
    )
    assert changed.status_code == 204
    problem(await verify(api, verification.token), 400, "link-invalid")
    problem(await reset(api, by_prefix["twp_"], "a third long passphrase 77"), 400, "link-invalid")
    problem(await confirm(api, change.token), 400, "link-invalid")
    problem(await cancel(api, by_prefix["twx_"]), 400, "link-invalid")
    assert (await me(api, access))["email"] == "ada@example.com"
    assert (await api.login("ada@example.com", NEW_PASSWORD)).status_code == 200


# -- email change ----------------------------------------------------------------------------


async def test_an_email_change_happens_only_when_the_new_address_confirms(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    access, _ = await api.signed_up("ada@example.com")
    accepted(await change_email(api, access, "Ada@New.example"))
    (confirmation,) = await smtp.arrived(1, to="ada@new.example")
    (notice,) = await smtp.arrived(1, to="ada@example.com")
    assert confirmation.link.startswith(f"{APP_URL}/confirm-email#token=twe_")
    assert notice.link.startswith(f"{APP_URL}/cancel-email-change#token=twx_")
    assert confirmation.subject != notice.subject
    # Nothing changed yet.
    assert (await me(api, access))["email"] == "ada@example.com"
    assert (await api.login("ada@new.example")).status_code == 401
    assert (await confirm(api, confirmation.token)).status_code == 204
    body = await me(api, access)
    assert body["email"] == "ada@new.example"
    assert body["email_verified"] is True
    assert (await api.login("ada@new.example")).status_code == 200
    assert (await api.login("ada@example.com")).status_code == 401
    problem(await confirm(api, confirmation.token), 400, "link-invalid")
    problem(await cancel(api, notice.token), 400, "link-invalid")  # too late to cancel
    await drained(service)
    changed = to(smtp, "ada@example.com")[1]  # the old address is told it happened
    assert "#token=" not in changed.text
    assert [e.type for e in await events(service, "email.changed")] == ["email.changed"]


async def test_an_address_another_account_holds_gets_the_same_answer_and_no_mail(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    access, _ = await api.signed_up("ada@example.com")
    assert (await api.register("grace@example.com")).status_code == 201
    taken = await change_email(api, access, "GRACE@example.com")
    free = await change_email(api, access, "ada@new.example")
    accepted(taken)
    same_answer(taken, free)
    await drained(service)
    assert to(smtp, "grace@example.com") == []
    assert len(to(smtp, "ada@new.example")) == 1
    # A notice (with its cancel link) for each request: to the requester, the taken address
    # looks like any other.
    assert len(to(smtp, "ada@example.com")) == 2
    (suppressed,) = await events(service, "email.suppressed")
    assert suppressed.detail["reason"] == "address_taken"
    assert "grace" not in repr(suppressed)


@pytest.mark.parametrize("mail_settings", [REQUIRED])
async def test_an_email_change_tells_the_requester_nothing_about_the_new_address(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    """With registration blind (required verification), whether an address has an account
    must not leak through the email change either: the requester's own mailbox gets the same
    mails whether the new address is taken or free."""
    for address in ("ada@example.com", "grace@example.com"):
        accepted(await api.register(address))
        await service.email_accounts.mark_verified(address)
    await drained(service)
    smtp.clear()
    access, _ = await login(api, "ada@example.com")
    accepted(await change_email(api, access, "grace@example.com"))
    await drained(service)
    after_taken = [m.subject for m in to(smtp, "ada@example.com")]
    assert (await api.http.delete("/auth/email", headers=bearer(access))).status_code == 204
    accepted(await change_email(api, access, "nobody@example.com"))
    await drained(service)
    after_free = [m.subject for m in to(smtp, "ada@example.com")][len(after_taken) :]
    assert after_taken == after_free
    assert to(smtp, "grace@example.com") == []


async def test_the_cancel_link_withdraws_a_pending_change(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    access, _ = await api.signed_up("ada@example.com")
    accepted(await change_email(api, access, "ada@new.example"))
    (confirmation,) = await smtp.arrived(1, to="ada@new.example")
    (notice,) = await smtp.arrived(1, to="ada@example.com")
    assert (await cancel(api, notice.token)).status_code == 204
    problem(await confirm(api, confirmation.token), 400, "link-invalid")
    problem(await cancel(api, notice.token), 400, "link-invalid")
    assert (await me(api, access))["email"] == "ada@example.com"
    (event,) = await events(service, "email.change_cancelled")
    assert event.detail == {"by": "cancel_link"}


async def test_delete_email_withdraws_a_pending_change(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    access, _ = await api.signed_up("ada@example.com")
    accepted(await change_email(api, access, "ada@new.example"))
    (confirmation,) = await smtp.arrived(1, to="ada@new.example")
    (notice,) = await smtp.arrived(1, to="ada@example.com")
    withdrawn = await api.http.delete("/auth/email", headers=bearer(access))
    assert withdrawn.status_code == 204
    problem(await confirm(api, confirmation.token), 400, "link-invalid")
    problem(await cancel(api, notice.token), 400, "link-invalid")
    assert (await me(api, access))["email"] == "ada@example.com"
    (event,) = await events(service, "email.change_cancelled")
    assert event.detail == {"by": "user"}
    # Nothing pending: withdrawing again is still 204, and records nothing more.
    assert (await api.http.delete("/auth/email", headers=bearer(access))).status_code == 204
    assert len(await events(service, "email.change_cancelled")) == 1


async def test_an_email_change_with_a_wrong_password_is_401_and_mails_nothing(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    access, _ = await api.signed_up("ada@example.com")
    refused = await change_email(api, access, "ada@new.example", WRONG_PASSWORD)
    problem(refused, 401, "invalid-credentials")
    assert await outbox_count(service) == 0
    assert await events(service, "email.change_requested") == []
    assert (await api.me(access)).status_code == 200  # the session itself stays
    assert smtp.mails == []


async def test_an_address_taken_before_the_confirmation_is_409(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    access, _ = await api.signed_up("ada@example.com")
    accepted(await change_email(api, access, "ada@new.example"))
    (confirmation,) = await smtp.arrived(1, to="ada@new.example")
    assert (await api.register("ada@new.example", NEW_PASSWORD)).status_code == 201
    problem(await confirm(api, confirmation.token), 409, "email-taken")
    assert (await me(api, access))["email"] == "ada@example.com"
    assert (await api.login("ada@new.example", NEW_PASSWORD)).status_code == 200
    assert (await api.login("ada@example.com")).status_code == 200
    assert await events(service, "email.changed") == []


# -- deletion --------------------------------------------------------------------------------


async def test_deleting_with_a_wrong_password_is_401_and_changes_nothing(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    access, refresh = await api.signed_up("ada@example.com")
    refused = await delete_account(api, access, WRONG_PASSWORD, refresh)
    problem(refused, 401, "invalid-credentials")
    assert "set-cookie" not in refused.headers
    assert (await api.me(access)).status_code == 200
    assert (await api.refresh(refresh)).status_code == 200
    assert (await api.login("ada@example.com")).status_code == 200
    assert await outbox_count(service) == 0
    assert await events(service, "user.deleted") == []


@pytest.mark.parametrize("mail_settings", [OPTIONAL])
async def test_deleting_an_account_ends_everything_but_its_events(
    api: Api, service: Any, smtp: SmtpServer, feed: Any, clock: FakeClock
) -> None:
    await api.register("ada@example.com")
    (verification,) = await smtp.arrived(1, to="ada@example.com")
    laptop, laptop_refresh = await login(api, "ada@example.com")
    phone, phone_refresh = await login(api, "ada@example.com")
    ada = await user_id(service, "ada@example.com")

    deleted = await delete_account(api, laptop, PASSWORD, laptop_refresh)
    assert deleted.status_code == 204
    cookie = deleted.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "max-age=0" in cookie.lower()
    for access in (laptop, phone):
        assert (await api.me(access)).status_code == 401
    for refresh in (laptop_refresh, phone_refresh):
        assert (await api.refresh(refresh)).status_code == 401
    assert await feed.since_start(clock) >= {sid(laptop), sid(phone)}
    problem(await api.login("ada@example.com"), 401, "invalid-credentials")
    problem(await verify(api, verification.token), 400, "link-invalid")
    await drained(service)
    goodbye = to(smtp, "ada@example.com")[1]
    assert "#token=" not in goodbye.text
    async with service.db.read() as db:
        assert (await db.execute(select(UserRow).where(UserRow.id == ada))).first() is None
        links = select(LinkTokenRow).where(LinkTokenRow.user_id == ada)
        assert (await db.execute(links)).first() is None
    # The audit trail stays, under the opaque id, without the address.
    trail = [e for e in await events(service) if e.user_id == ada]
    kinds = {e.type for e in trail}
    assert {"user.registered", "login.succeeded", "user.deleted"} <= kinds, kinds
    for event in await events(service):
        assert "ada@example.com" not in repr(event)
    (gone,) = await events(service, "user.deleted")
    assert gone.detail == {"sessions_ended": 2}
    # The address is free again.
    assert (await api.register("ada@example.com")).status_code == 201


# -- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mail_settings", [{"rate_limits": True, "rate_limit_email_address": "2/hour"}]
)
async def test_the_per_address_limit_and_the_cooldown_suppress_mail_silently(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    assert (await api.register("ada@example.com")).status_code == 201
    answers = [
        await forgot(api, "ada@example.com"),  # mailed (1 of 2)
        await forgot(api, "ada@example.com"),  # the same kind within 60 s: cooldown
        await request_verification(api, "ada@example.com"),  # mailed (2 of 2)
        await request_verification(api, "ada@example.com"),  # over the address's limit
        await forgot(api, "ada@example.com"),  # over the address's limit
    ]
    for answer in answers:
        accepted(answer)
        same_answer(answers[0], answer)
    await drained(service)
    assert sorted(m.token[:4] for m in to(smtp, "ada@example.com")) == ["twp_", "twv_"]
    assert await suppressed_reasons(service) == ["cooldown", "rate_limited", "rate_limited"]
    # Unknown addresses are counted alike (the limits say nothing about accounts).
    for answer in (
        await forgot(api, "nobody@example.com"),  # 1 of 2
        await forgot(api, "nobody@example.com"),  # cooldown
        await request_verification(api, "nobody@example.com"),  # 2 of 2
        await request_verification(api, "nobody@example.com"),  # over
    ):
        same_answer(answers[0], answer)
    await drained(service)
    assert await suppressed_reasons(service) == [
        "cooldown",
        "cooldown",
        "no_account",
        "no_account",
        "rate_limited",
        "rate_limited",
        "rate_limited",
    ]
    assert len(smtp.mails) == 2


@pytest.mark.parametrize("mail_settings", [{**REQUIRED, "rate_limits": True}])
async def test_sign_up_attempts_on_a_taken_address_are_mailed_within_its_limits(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    """Registering a taken address again and again tells its owner once (the cooldown), and
    every answer is the one 202."""
    answers = [await api.register("ada@example.com") for _ in range(4)]
    for answer in answers:
        accepted(answer)
        same_answer(answers[0], answer)
    await drained(service)
    (mail,) = to(smtp, "ada@example.com")
    assert mail.token.startswith("twv_")
    assert await suppressed_reasons(service) == ["cooldown"] * 3


@pytest.mark.parametrize("mail_settings", [{"rate_limits": True, "rate_limit_email_ip": "3/hour"}])
async def test_the_per_ip_limit_answers_429(
    app: Any, api: Api, service: Any, smtp: SmtpServer
) -> None:
    assert (await api.register("ada@example.com")).status_code == 201
    accepted(await forgot(api, "one@example.com"))
    accepted(await request_verification(api, "two@example.com"))
    accepted(await forgot(api, "three@example.com"))
    for over in (
        await forgot(api, "ada@example.com"),
        await request_verification(api, "ada@example.com"),
        await forgot(api, "nobody@example.com"),
    ):
        problem(over, 429, "rate-limited")
        assert int(over.headers["retry-after"]) >= 1
    await drained(service)
    assert smtp.mails == []  # ada was never mailed
    # Another client is not affected.
    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
        accepted(await other.post("/auth/password/forgot", json={"email": "ada@example.com"}))
    (mail,) = await smtp.arrived(1, to="ada@example.com")
    assert mail.token.startswith("twp_")


# -- single use under concurrency ------------------------------------------------------------


@pytest.mark.parametrize("mail_settings", [OPTIONAL])
async def test_ten_concurrent_uses_of_a_verification_link_one_wins(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    await api.register("ada@example.com")
    (mail,) = await smtp.arrived(1, to="ada@example.com")
    answers = await asyncio.gather(*(verify(api, mail.token) for _ in range(10)))
    assert sorted(a.status_code for a in answers) == [204] + [400] * 9
    assert len(await events(service, "email.verified")) == 1


async def test_ten_concurrent_uses_of_a_reset_link_one_wins(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    await api.register("ada@example.com")
    accepted(await forgot(api, "ada@example.com"))
    (mail,) = await smtp.arrived(1, to="ada@example.com")
    passwords = [f"concurrent passphrase number {i}" for i in range(10)]
    answers = await asyncio.gather(*(reset(api, mail.token, p) for p in passwords))
    assert sorted(a.status_code for a in answers) == [204] + [400] * 9
    (winner,) = [p for p, a in zip(passwords, answers, strict=True) if a.status_code == 204]
    assert (await api.login("ada@example.com", winner)).status_code == 200
    assert len(await events(service, "password.reset")) == 1
    await drained(service)
    assert len(to(smtp, "ada@example.com")) == 2  # the link, and one "your password was reset"


async def test_ten_concurrent_confirmations_of_an_email_change_one_wins(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    access, _ = await api.signed_up("ada@example.com")
    accepted(await change_email(api, access, "ada@new.example"))
    (mail,) = await smtp.arrived(1, to="ada@new.example")
    answers = await asyncio.gather(*(confirm(api, mail.token) for _ in range(10)))
    assert sorted(a.status_code for a in answers) == [204] + [400] * 9
    assert len(await events(service, "email.changed")) == 1
    await drained(service)
    assert len(to(smtp, "ada@example.com")) == 2  # the notice, and one "your address changed"


# -- the operators' use cases (tokenward users send-reset | verify | delete) ----------------


@pytest.mark.parametrize("mail_settings", [{"rate_limits": True}])
async def test_an_operator_sends_a_reset_without_seeing_the_link(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    assert (await api.register("ada@example.com")).status_code == 201
    assert await service.email_accounts.send_reset(" ADA@example.com ") is None
    assert await service.email_accounts.send_reset("ada@example.com") is None  # no cooldown
    older, newer = await smtp.arrived(2, to="ada@example.com")
    problem(await reset(api, older.token), 400, "link-invalid")  # superseded
    assert (await reset(api, newer.token)).status_code == 204
    assert (await api.login("ada@example.com", NEW_PASSWORD)).status_code == 200
    requested = await events(service, "password.reset_requested")
    assert [e.detail for e in requested] == [{"by": "operator"}] * 2
    with pytest.raises(UnknownUserError):
        await service.email_accounts.send_reset("nobody@example.com")


@pytest.mark.parametrize("mail_settings", [REQUIRED])
async def test_an_operator_marks_an_address_verified(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    accepted(await api.register("ada@example.com"))
    (mail,) = await smtp.arrived(1, to="ada@example.com")
    problem(await api.login("ada@example.com"), 403, "email-not-verified")
    assert await service.email_accounts.mark_verified("ada@example.com") is True
    assert await service.email_accounts.mark_verified("ada@example.com") is False
    access, _ = await login(api, "ada@example.com")
    assert (await me(api, access))["email_verified"] is True
    problem(await verify(api, mail.token), 400, "link-invalid")  # no longer needed: voided
    (event,) = await events(service, "email.verified")
    assert event.detail == {"by": "operator"}
    with pytest.raises(UnknownUserError):
        await service.email_accounts.mark_verified("nobody@example.com")


async def test_an_operator_deletes_an_account(
    api: Api, service: Any, smtp: SmtpServer, feed: Any, clock: FakeClock
) -> None:
    access, refresh = await api.signed_up("ada@example.com")
    ada = await user_id(service, "ada@example.com")
    assert await service.email_accounts.remove(ada, ClientInfo(), service.now()) is True
    assert (await api.me(access)).status_code == 401
    assert (await api.refresh(refresh)).status_code == 401
    assert sid(access) in await feed.since_start(clock)
    assert (await api.login("ada@example.com")).status_code == 401
    (mail,) = await smtp.arrived(1, to="ada@example.com")
    assert "#token=" not in mail.text
    assert await service.email_accounts.remove(ada, ClientInfo(), service.now()) is False
    assert len(await events(service, "user.deleted")) == 1


# -- found by the security review ------------------------------------------------------------


async def test_the_requesters_own_events_do_not_tell_a_taken_address_from_a_free_one(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    """GET /auth/events shows the requester the same after an email change to a taken address
    as after one to a free address: the confirmation's delivery events are recorded under no
    user (a taken address gets no confirmation, so they would tell)."""
    access, _ = await api.signed_up("ada@example.com")
    assert (await api.register("grace@example.com")).status_code == 201

    async def own_events_after(new_email: str) -> list[tuple[str, Any]]:
        before = len((await api.http.get("/auth/events", headers=bearer(access))).json()["events"])
        accepted(await change_email(api, access, new_email))
        await drained(service)
        shown = (await api.http.get("/auth/events", headers=bearer(access))).json()["events"]
        fresh = shown[: len(shown) - before]
        return sorted((e["type"], (e["detail"] or {}).get("template")) for e in fresh)

    taken = await own_events_after("grace@example.com")
    free = await own_events_after("ada@new.example")
    assert taken == free
    assert to(smtp, "grace@example.com") == []
    assert len(to(smtp, "ada@new.example")) == 1


async def test_a_disabled_account_cannot_use_its_links(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    """Disabling voids the account's outstanding links: a compromised account's pending
    email change cannot be confirmed while (or after) it is disabled."""
    access, _ = await api.signed_up("ada@example.com")
    accepted(await change_email(api, access, "ada@new.example"))
    await drained(service)
    confirmation = only(smtp, "ada@new.example")
    await Admin(service).set_disabled("ada@example.com", True)
    problem(await confirm(api, confirmation.token), 400, "link-invalid")
    await Admin(service).set_disabled("ada@example.com", False)
    problem(await confirm(api, confirmation.token), 400, "link-invalid")
    assert (await api.login("ada@example.com")).status_code == 200
