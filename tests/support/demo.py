"""The demo page as the browser tests drive it: open it, sign in and out through its forms,
read its status line and the claims of the tokens it was given."""

from __future__ import annotations

import base64
import json
from typing import Any

from playwright.sync_api import BrowserContext, Page, Response

from support.app import PASSWORD

__all__ = ["claims", "open_demo", "sign_in", "sign_out", "status", "wait_for_status"]


def open_demo(context: BrowserContext, base: str, path: str = "/") -> Page:
    page = context.new_page()
    page.goto(base + path)
    page.wait_for_selector('body[data-state="signed-in"], body[data-state="signed-out"]')
    return page


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT (the signature is the server's business, tested elsewhere)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def sign_in(page: Page, email: str, password: str = PASSWORD) -> Response:
    """Submit the sign-in form; return the answer to POST /auth/login."""
    page.fill("#signin-email", email)
    page.fill("#signin-password", password)
    with page.expect_response("**/auth/login") as login:
        page.click("#signin-form button[type=submit]")
    return login.value


def sign_out(page: Page) -> None:
    page.click("#logout")
    page.wait_for_selector('body[data-state="signed-out"]')


def status(page: Page) -> str:
    return page.text_content("#status") or ""


def wait_for_status(page: Page, text: str) -> str:
    page.wait_for_function(
        "(text) => document.getElementById('status').textContent.includes(text)", arg=text
    )
    return status(page)
