"""Accounts by email (docs/email.md) through the demo page, in a real headless Chromium, against
a real `tokenward serve` with TOKENWARD_EMAIL_VERIFICATION=required.

Mails are read as a person would read them in development: from the demo page's "Development
mailbox" card (GET /demo/mailbox, TOKENWARD_EMAIL_DELIVERY=log), whose links open the landing
pages (`/verify-email#token=...` and the others). Chromium is Debian's, driven by Playwright
through its executable path, as in tests/test_browser.py. Pages of one browser context are tabs
of one browser; another context is another device.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Request,
    Response,
)
from support import PASSWORD, free_port, serving
from support.browser import chromium
from support.demo import open_demo, status, wait_for_status

pytestmark = pytest.mark.sqlite_only  # the browser contract; storage is covered elsewhere

ARTIFACTS = Path(os.environ.get("TOKENWARD_ARTIFACTS", Path(__file__).parent.parent / "artifacts"))
NEW_PASSWORD = "another long enough passphrase 8"
WRONG_PASSWORD = "not the password of anyone 9"
MAIL_WAIT = 40.0  # seconds for the outbox worker to send a mail (CI runs two suites at once)
PAGE_WAIT = 60_000  # ms for a page to show what a step leads to, under the same load


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real server for the module, verification required; each test its own accounts."""
    data_dir = tmp_path_factory.mktemp("browser-email") / "data"
    port = free_port()
    env = {
        "TOKENWARD_EMAIL_VERIFICATION": "required",
        "TOKENWARD_EMAIL_DELIVERY": "log",
        "TOKENWARD_RATE_LIMITS": "false",
        # Every test mails from 127.0.0.1, some twice to one address within a minute.
        "TOKENWARD_RATE_LIMIT_EMAIL_IP": "1000/hour",
        "TOKENWARD_RATE_LIMIT_EMAIL_ADDRESS": "1000/hour",
        "TOKENWARD_EMAIL_RESEND_COOLDOWN": "1s",
        "TOKENWARD_ISSUER": f"http://127.0.0.1:{port}",  # and so where links point
    }
    with serving(data_dir, port, **env) as (base, _):
        yield base


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    context.set_default_timeout(PAGE_WAIT)
    yield context
    context.close()


# -- helpers -------------------------------------------------------------------------------


def sign_in(page: Page, email: str, password: str = PASSWORD) -> None:
    page.fill("#signin-email", email)
    page.fill("#signin-password", password)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector('body[data-state="signed-in"]')


def focused_id(page: Page) -> str:
    return str(page.evaluate("document.activeElement?.id"))


def posts_to(context: BrowserContext, path: str) -> list[str]:
    """The URLs of every POST (or DELETE) to `path` the browser sends, from now on."""
    seen: list[str] = []

    def on_request(request: Request) -> None:
        if request.method in {"POST", "DELETE"} and request.url.split("#")[0].endswith(path):
            seen.append(request.url)

    context.on("request", on_request)
    return seen


def mail_link(page: Page, to: str, landing: str) -> Locator:
    """The newest link to `landing` in a mail to `to`, in the page's mailbox card (refreshed
    until the outbox worker has sent the mail)."""
    page.wait_for_selector("#mailbox-card:not([hidden])")
    mails = page.locator("#mailbox > li").filter(
        has=page.locator(".mail-head .meta", has_text=f"To {to} ·")
    )
    links = mails.locator(f'pre a[href*="/{landing}#token="]')
    deadline = time.monotonic() + MAIL_WAIT
    while links.count() == 0:
        assert time.monotonic() < deadline, f"no {landing} mail to {to}: {mailbox(page)}"
        page.wait_for_timeout(250)
        page.click("#reload-mailbox")
    return links.first


def mailbox(page: Page) -> Any:
    return page.evaluate("document.getElementById('mailbox').innerText")


def open_link(page: Page, link: Locator) -> str:
    """Follow a mailed link as a person would (a click); return the landing page's name."""
    href = link.get_attribute("href") or ""
    landing = href.split("#")[0].rsplit("/", 1)[1]
    assert "#token=tw" in href, href
    page.evaluate("window.beforeTheLink = true")
    link.click()  # a link to this very page changes only the fragment: the page reloads itself
    page.wait_for_function(
        "(name) => !window.beforeTheLink && location.pathname.endsWith('/' + name)"
        " && !document.getElementById('landing').hidden",
        arg=landing,
    )
    # The token left the address bar (and this history entry) as soon as the page read it.
    assert page.evaluate("location.hash") == ""
    assert "token" not in page.url
    return landing


def mails_to(base: str, to: str) -> list[dict[str, Any]]:
    mails = httpx.get(f"{base}/demo/mailbox", timeout=5)
    assert mails.status_code == 200, mails.text
    return [mail for mail in mails.json() if mail["to"] == to]


def mailed_token(base: str, to: str, landing: str, after: int = 0) -> str:
    """The token of the newest `landing` link mailed to `to`, once more than `after` mails
    with such a link have been sent to that address."""
    pattern = re.compile(rf"/{landing}#token=([A-Za-z0-9_\-.~%]+)")
    deadline = time.monotonic() + MAIL_WAIT
    while True:
        found = [m for mail in mails_to(base, to) if (m := pattern.search(mail["text"]))]
        if len(found) > after:
            return found[0].group(1)
        assert time.monotonic() < deadline, f"no {landing} mail to {to}"
        time.sleep(0.2)


def verified_account(base: str, email: str) -> None:
    """An account with a verified address, made over HTTP (the browser flow is tested once)."""
    credentials = {"email": email, "password": PASSWORD}
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.post("/auth/register", json=credentials).status_code == 202
        token = mailed_token(base, email, "verify-email")
        assert http.post("/auth/verify-email", json={"token": token}).status_code == 204


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


# -- the flows -----------------------------------------------------------------------------


def test_sign_up_then_verify_from_the_mailed_link_then_sign_in(
    server: str, context: BrowserContext
) -> None:
    base = server
    email = "ada@example.com"
    page = open_demo(context, base)
    page.fill("#signup-email", email)
    page.fill("#signup-password", PASSWORD)
    with page.expect_response("**/auth/register") as answer:
        page.click("#signup-form button[type=submit]")
    assert answer.value.status == 202
    assert "Check your email" in wait_for_status(page, email)
    assert page.get_attribute("body", "data-state") == "signed-out"  # no sign-in attempted

    # Not verified yet: sign-in is refused (403), and the resend form is filled in.
    page.fill("#signin-email", email)
    page.fill("#signin-password", PASSWORD)
    with page.expect_response("**/auth/login") as login:
        page.click("#signin-form button[type=submit]")
    assert login.value.status == 403
    assert "open the link we mailed you" in wait_for_status(page, "open the link")
    assert page.input_value("#resend-email") == email
    assert page.get_attribute("body", "data-state") == "signed-out"

    # The mail, in the development mailbox; its link opens the landing page, which posts
    # nothing until asked (scanners load pages too).
    posted = posts_to(context, "/auth/verify-email")
    link = mail_link(page, email, "verify-email")
    href = link.get_attribute("href") or ""
    screenshot(page, "demo-mailbox.png")
    assert open_link(page, link) == "verify-email"
    assert focused_id(page) == "landing-title"
    page.wait_for_timeout(500)
    assert posted == []
    screenshot(page, "demo-verify-email.png")

    # By keyboard: Tab reaches the button, Enter presses it.
    page.keyboard.press("Tab")
    assert focused_id(page) == "landing-confirm-button"
    page.keyboard.press("Enter")
    page.wait_for_selector("#landing-result:has-text('verified')")
    assert focused_id(page) == "landing-result"  # the button went away; focus did not vanish
    assert len(posted) == 1
    assert page.is_visible("#landing-continue a")

    # The link is spent: opened again, it says so.
    page.goto("about:blank")
    page.goto(href)
    page.wait_for_selector("#landing-confirm-button", state="visible")
    page.click("#landing-confirm-button")
    page.wait_for_selector("#landing-result.error:has-text('no longer works')")

    sign_in(page, email)
    assert page.text_content("#who") == email
    assert page.text_content("#verified") == "verified"
    assert page.is_hidden("#send-verification")


def test_a_link_page_without_a_token_says_so_and_posts_nothing(
    server: str, context: BrowserContext
) -> None:
    posted = posts_to(context, "/auth/email/confirm")
    page = open_demo(context, server, "/confirm-email")
    page.wait_for_selector("#landing:not([hidden])")
    assert "whole link" in (page.text_content("#landing-intro") or "")
    assert page.is_hidden("#landing-confirm-button")
    assert page.is_hidden("#reset-form")
    assert page.is_visible("#signin-form")  # the rest of the demo page works as ever
    assert posted == []


def test_forgot_password_then_reset_from_the_mailed_link_ends_the_other_sessions(
    server: str, browser: Browser
) -> None:
    base = server
    email = "grace@example.com"
    verified_account(base, email)
    laptop, phone = browser.new_context(), browser.new_context()
    for device in (laptop, phone):
        device.set_default_timeout(PAGE_WAIT)
    try:
        earlier = open_demo(laptop, base)
        sign_in(earlier, email)  # the earlier session, on another device

        page = open_demo(phone, base)
        page.fill("#forgot-email", email)
        with page.expect_response("**/auth/password/forgot") as answer:
            page.click("#forgot-form button[type=submit]")
        assert answer.value.status == 202
        assert "Check your email" in wait_for_status(page, "on its way")
        unknown = "nobody@example.com"  # the same answer for an address without an account
        page.fill("#forgot-email", unknown)
        with page.expect_response("**/auth/password/forgot") as answer:
            page.click("#forgot-form button[type=submit]")
        assert answer.value.status == 202
        wait_for_status(page, unknown)

        assert open_link(page, mail_link(page, email, "reset-password")) == "reset-password"
        assert page.is_visible("#reset-form")
        assert page.is_hidden("#landing-confirm-button")

        # A weak password is refused with its rule; the link stays usable.
        page.fill("#reset-password", "a" * 20)
        page.click("#reset-form button[type=submit]")
        page.wait_for_selector("#landing-result.error:has-text('password_common')")
        assert focused_id(page) == "reset-password"
        page.fill("#reset-password", NEW_PASSWORD)
        page.click("#reset-form button[type=submit]")
        page.wait_for_selector("#landing-result:not(.error):has-text('password was changed')")
        assert page.is_hidden("#reset-form")

        # The earlier session is over: its next request finds out.
        earlier.click("#reload-sessions")
        earlier.wait_for_selector('body[data-state="signed-out"]')
        assert "ended elsewhere" in status(earlier)

        # The old password no longer works, the new one does.
        page.fill("#signin-email", email)
        page.fill("#signin-password", PASSWORD)
        with page.expect_response("**/auth/login") as login:
            page.click("#signin-form button[type=submit]")
        assert login.value.status == 401
        sign_in(page, email, NEW_PASSWORD)
        assert page.text_content("#who") == email
    finally:
        laptop.close()
        phone.close()


def test_change_email_confirmed_at_the_new_address_cancelled_or_withdrawn_from_the_old(
    server: str, context: BrowserContext
) -> None:
    base = server
    old, first, second, third = (
        f"{name}@example.com" for name in ("hopper", "hopper1", "hopper2", "hopper3")
    )
    verified_account(base, old)
    page = open_demo(context, base)
    sign_in(page, old)
    assert page.text_content("#verified") == "verified"

    # A wrong current password: refused once, not refreshed and retried, still signed in.
    requests = posts_to(context, "/auth/email")
    refreshes = posts_to(context, "/auth/refresh")
    page.fill("#new-email", first)
    page.fill("#email-password", WRONG_PASSWORD)
    page.click("#email-form button[type=submit]")
    assert "not your current password" in wait_for_status(page, "current password")
    assert (len(requests), len(refreshes)) == (1, 0)
    assert page.get_attribute("body", "data-state") == "signed-in"

    # Asked, then cancelled from the notice sent to the current address.
    page.fill("#new-email", first)
    page.fill("#email-password", PASSWORD)
    page.click("#email-form button[type=submit]")
    wait_for_status(page, f"Check {first}")
    confirm_first = mail_link(page, first, "confirm-email").get_attribute("href") or ""
    assert open_link(page, mail_link(page, old, "cancel-email-change")) == ("cancel-email-change")
    page.click("#landing-confirm-button")
    page.wait_for_selector("#landing-result:not(.error):has-text('cancelled')")
    page.goto("about:blank")
    page.goto(confirm_first)  # that change's confirmation link died with it
    page.wait_for_selector("#landing-confirm-button", state="visible")
    page.click("#landing-confirm-button")
    page.wait_for_selector("#landing-result.error:has-text('no longer works')")

    # Asked again, confirmed from the new address (from a page already at /confirm-email).
    page.wait_for_selector('body[data-state="signed-in"]')
    page.fill("#new-email", second)
    page.fill("#email-password", PASSWORD)
    page.click("#email-form button[type=submit]")
    wait_for_status(page, f"Check {second}")
    assert open_link(page, mail_link(page, second, "confirm-email")) == "confirm-email"
    page.click("#landing-confirm-button")
    page.wait_for_selector("#landing-result:not(.error):has-text('changed')")
    page.wait_for_function(
        "(email) => document.getElementById('who').textContent === email", arg=second
    )
    assert page.text_content("#verified") == "verified"

    # Asked once more, then withdrawn from the signed-in page: its link is dead.
    page.fill("#new-email", third)
    page.fill("#email-password", PASSWORD)
    page.click("#email-form button[type=submit]")
    wait_for_status(page, f"Check {third}")
    withdrawn = posts_to(context, "/auth/email")
    page.click("#withdraw-email")
    wait_for_status(page, "withdrawn")
    assert len(withdrawn) == 1
    assert open_link(page, mail_link(page, third, "confirm-email")) == "confirm-email"
    page.click("#landing-confirm-button")
    page.wait_for_selector("#landing-result.error:has-text('no longer works')")
    page.wait_for_selector('body[data-state="signed-in"]')
    assert page.text_content("#who") == second


def test_delete_account_asks_for_the_password_and_a_confirmation_and_signs_out_every_tab(
    server: str, context: BrowserContext
) -> None:
    base = server
    email = "lovelace@example.com"
    verified_account(base, email)
    page = open_demo(context, base)
    sign_in(page, email)
    other_tab = open_demo(context, base)
    other_tab.wait_for_selector('body[data-state="signed-in"]')
    deletions = posts_to(context, "/auth/account")

    # The first step only asks; Escape takes it back, focus returns to the password.
    page.fill("#delete-password", WRONG_PASSWORD)
    page.click("#delete-form button[type=submit]")
    page.wait_for_selector("#delete-confirm", state="visible")
    assert focused_id(page) == "delete-yes"
    screenshot(page, "demo-delete-account.png")
    assert email in (page.text_content("#delete-warning") or "")
    page.keyboard.press("Escape")
    assert page.is_hidden("#delete-confirm")
    assert focused_id(page) == "delete-password"
    assert deletions == []

    # A wrong password: refused, nothing changes.
    page.click("#delete-form button[type=submit]")
    page.click("#delete-yes")
    assert "not your current password" in wait_for_status(page, "current password")
    assert len(deletions) == 1
    assert page.get_attribute("body", "data-state") == "signed-in"

    page.fill("#delete-password", PASSWORD)
    page.click("#delete-form button[type=submit]")
    page.click("#delete-yes")
    page.wait_for_selector('body[data-state="signed-out"]')
    assert "account was deleted" in wait_for_status(page, "deleted")
    assert focused_id(page) == "signed-out-title"
    other_tab.wait_for_selector('body[data-state="signed-out"]')
    assert page.input_value("#delete-password") == ""  # no password left in a hidden form

    page.fill("#signin-email", email)
    page.fill("#signin-password", PASSWORD)
    with page.expect_response("**/auth/login") as login:
        page.click("#signin-form button[type=submit]")
    assert login.value.status == 401
    page.reload()  # the refresh cookie's session is over on the server too
    page.wait_for_selector('body[data-state="signed-out"]')

    deadline = time.monotonic() + MAIL_WAIT
    while len(mails_to(base, email)) < 2:  # the verification, then the confirmation
        assert time.monotonic() < deadline, mails_to(base, email)
        time.sleep(0.2)


def test_no_mailbox_card_where_mail_really_goes_out_or_nowhere(
    browser: Browser, tmp_path: Path
) -> None:
    port = free_port()
    env = {"TOKENWARD_EMAIL_DELIVERY": "none", "TOKENWARD_ISSUER": f"http://127.0.0.1:{port}"}
    with serving(tmp_path / "data", port, **env) as (base, _):
        assert httpx.get(f"{base}/demo/mailbox").status_code == 404
        context = browser.new_context()
        context.set_default_timeout(PAGE_WAIT)
        try:
            mailbox_requests: list[int] = []

            def on_response(response: Response) -> None:
                if response.url.endswith("/demo/mailbox"):
                    mailbox_requests.append(response.status)

            context.on("response", on_response)
            page = open_demo(context, base)
            deadline = time.monotonic() + 5
            while not mailbox_requests:
                assert time.monotonic() < deadline, "the page never asked for the mailbox"
                page.wait_for_timeout(50)
            assert mailbox_requests == [404]
            assert page.is_hidden("#mailbox-card")
        finally:
            context.close()
