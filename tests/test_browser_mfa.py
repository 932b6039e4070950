"""A second factor (TOTP and recovery codes) through tokenward.js and the demo page, in a real
headless Chromium, against a real `tokenward serve`.

The test plays the authenticator app: it reads the key the page shows and computes codes with
pyotp. A code is accepted once per 30-second step and factor, so a second code waits for the
next step (at most once per test). Chromium is Debian's, driven by Playwright through its
executable path, as in tests/test_browser.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, Page
from support import PASSWORD, free_port, serving
from support.browser import chromium
from support.demo import claims, open_demo, sign_in, sign_out, status, wait_for_status

pytestmark = pytest.mark.sqlite_only  # the browser contract; storage is covered elsewhere

ACCESS_TTL = 6  # seconds: long enough to act, short enough to cross in a test
STEP = 30  # seconds: a TOTP time step
PAGE_WAIT = 30_000  # ms for a page to show what a step leads to, under load


def _server(tmp_path_factory: pytest.TempPathFactory, **extra: str) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("browser-mfa") / "data"
    port = free_port()
    env = {
        "TOKENWARD_ACCESS_TTL": str(ACCESS_TTL),
        "TOKENWARD_RATE_LIMITS": "false",
        "TOKENWARD_ISSUER": f"http://127.0.0.1:{port}",
        **extra,
    }
    with serving(data_dir, port, **env) as (base, _):
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real server for the module (second factors optional); each test its own accounts."""
    yield from _server(tmp_path_factory)


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server that requires a second factor of every user (TOKENWARD_MFA=required)."""
    yield from _server(tmp_path_factory, TOKENWARD_MFA="required")


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    context.set_default_timeout(PAGE_WAIT)
    yield context
    context.close()


# -- helpers -------------------------------------------------------------------------------


def sign_up(page: Page, email: str) -> dict[str, Any]:
    """Create an account through the demo page (signed in with a password alone); return the
    claims of the access token the server issued."""
    page.fill("#signup-email", email)
    page.fill("#signup-password", PASSWORD)
    with page.expect_response("**/auth/login") as login:
        page.click("#signup-form button[type=submit]")
    page.wait_for_selector('body[data-state="signed-in"]')
    assert page.text_content("#who") == email
    return claims(login.value.json()["access_token"])


def read_secret(page: Page) -> str:
    """Start setting up an authenticator app; the key the page shows, as a person reads it."""
    page.click("#totp-start")
    page.wait_for_function("() => document.getElementById('totp-secret').textContent.trim() !== ''")
    secret = (page.text_content("#totp-secret") or "").strip()
    assert page.locator("#totp-qr svg path").count() >= 1  # the QR code, rebuilt from its SVG
    return secret


def code_now(secret: str) -> tuple[str, int]:
    """The app's code right now, and its step."""
    now = time.time()
    return pyotp.TOTP(secret).at(now), int(now) // STEP


def code_after(page: Page, secret: str, used_step: int) -> tuple[str, int]:
    """A code of a later step than `used_step` (each step's code is accepted once): wait for
    the step to turn (page.wait_for_timeout, not time.sleep: Playwright must see events)."""
    while int(time.time()) // STEP <= used_step:
        page.wait_for_timeout(min(1000, (used_step + 1) * STEP * 1000 - time.time() * 1000 + 50))
    return code_now(secret)


def confirm(page: Page, secret: str) -> int:
    """Enter the app's code to confirm the new factor; return the step the code was of."""
    code, step = code_now(secret)
    page.fill("#totp-code", code)
    with page.expect_response("**/auth/mfa/totp/confirm") as confirmed:
        page.click("#totp-confirm-form button[type=submit]")
    assert confirmed.value.ok, confirmed.value.text()
    return step


def recovery_codes(page: Page) -> list[str]:
    page.wait_for_selector("#recovery-box:not([hidden])")
    return page.locator("#recovery-codes code").all_text_contents()


def in_reach_of_scripts(page: Page) -> str:
    """Everything a script could read back: storage, the document, cookies it may see."""
    return str(
        page.evaluate(
            """() => JSON.stringify({
                cookie: document.cookie,
                local: Object.entries(localStorage),
                session: Object.entries(sessionStorage),
                html: document.documentElement.outerHTML,
            })"""
        )
    )


BARE_CLIENT = """async () => {
  // Another client in the tab, without onStepUp: it takes the demo's token from the channel.
  const { createClient, StepUpRequiredError } = await import("/static/tokenward.js");
  const bare = createClient();
  try {
    await bare.regenerateRecoveryCodes();
    return { stepped: false };
  } catch (error) {
    return {
      typed: error instanceof StepUpRequiredError,
      name: error.name,
      status: error.status,
      type: error.type,
      acrValues: error.acrValues,
    };
  }
}"""


# -- the flows -----------------------------------------------------------------------------


def test_an_authenticator_app_guards_sign_in_and_its_session_stays_two_factor(
    server: str, context: BrowserContext
) -> None:
    base = server
    email = "otp@example.com"
    page = open_demo(context, base)
    first = sign_up(page, email)
    assert (first["amr"], first["acr"]) == (["pwd"], "aal1")
    page.wait_for_selector("#mfa-badge:not([hidden])")
    assert page.text_content("#mfa-badge") == "off"

    # Set up the app: the key from the page, a code from the "app", the recovery codes once.
    secret = read_secret(page)
    confirmed_step = confirm(page, secret)
    codes = recovery_codes(page)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert "Two-factor authentication is on" in status(page)
    assert page.get_attribute("#totp-enroll", "hidden") is not None
    assert page.text_content("#totp-secret") == ""  # the key left the page
    page.click("#recovery-done")
    page.wait_for_selector("#factors li")
    assert page.text_content("#mfa-badge") == "on"
    assert page.locator("#recovery-codes code").count() == 0  # shown once

    # This session signed in with a password alone: new recovery codes need a second factor.
    # A client without onStepUp says so with a typed error, and nothing changes...
    refused = page.evaluate(BARE_CLIENT)
    assert refused["typed"] and refused["name"] == "StepUpRequiredError", refused
    assert refused["status"] == 401 and refused["acrValues"] == ["aal2"], refused
    assert refused["type"].endswith("insufficient-user-authentication")
    # ...the demo's client asks in a dialog (here: a recovery code), steps up, goes ahead.
    page.click("#regenerate-codes")
    page.wait_for_selector("#stepup-dialog[open]")
    assert page.locator("#stepup-method option[value=password]").is_disabled()  # aal2 wanted
    page.select_option("#stepup-method", "recovery_code")
    page.fill("#stepup-secret", "not-a-recovery-code")
    with page.expect_response("**/auth/reauthenticate") as wrong:
        page.click("#stepup-form button[type=submit]")
    assert wrong.value.status == 401
    page.wait_for_function(  # asked again, saying why; the request still waits
        "() => document.getElementById('stepup-dialog').open"
        " && document.getElementById('stepup-error').textContent.includes('not accepted')"
    )
    page.select_option("#stepup-method", "recovery_code")
    page.fill("#stepup-secret", codes[0])
    with page.expect_response("**/auth/reauthenticate") as reauthenticated:
        page.click("#stepup-form button[type=submit]")
    stepped = claims(reauthenticated.value.json()["access_token"])
    assert stepped["acr"] == "aal2" and "otp" in stepped["amr"], stepped
    assert stepped["auth_time"] >= first["auth_time"]
    wait_for_status(page, "New recovery codes")
    fresh = recovery_codes(page)
    assert len(fresh) == 10 and not set(fresh) & set(codes)
    page.click("#recovery-done")

    # Sign in again: the password is not enough. No token, no cookie; the pending sign-in's
    # token stays in the client's memory, nowhere a script could read it back.
    sign_out(page)
    login = sign_in(page, email)
    pending = login.json()
    assert pending["mfa_required"] is True and "totp" in pending["methods"], pending
    assert "access_token" not in pending
    assert "set-cookie" not in login.headers
    page.wait_for_selector('body[data-state="second-factor"]')
    assert page.evaluate("document.activeElement.id") == "mfa-code"
    assert "tw_refresh" not in {cookie["name"] for cookie in context.cookies()}
    readable = in_reach_of_scripts(page)
    assert pending["mfa_token"] not in readable and "twm_" not in readable

    # The app's next code signs in: a two-factor session, as the token says.
    code, used_step = code_after(page, secret, confirmed_step)
    page.fill("#mfa-code", code)
    with page.expect_response("**/auth/mfa/verify") as verified:
        page.click("#mfa-form button[type=submit]")
    page.wait_for_selector('body[data-state="signed-in"]')
    assert page.text_content("#who") == email
    token = verified.value.json()["access_token"]
    signed_in = claims(token)
    assert signed_in["acr"] == "aal2", signed_in
    assert {"pwd", "otp", "mfa"} <= set(signed_in["amr"]), signed_in
    assert "aal2" in (page.text_content("#auth-level") or "")
    assert any(cookie["name"] == "tw_refresh" for cookie in context.cookies())

    # Across the access token's expiry, the refreshed token keeps how the session signed in.
    with page.expect_response(
        lambda r: r.url.endswith("/auth/refresh") and r.ok, timeout=(ACCESS_TTL + 10) * 1000
    ) as refreshed:
        pass
    renewed = claims(refreshed.value.json()["access_token"])
    assert renewed["exp"] > signed_in["exp"]
    for claim in ("amr", "acr", "auth_time", "sid"):
        assert renewed[claim] == signed_in[claim], claim

    # A recent two-factor sign-in may remove the factor: no dialog this time.
    page.wait_for_selector("#factors li")
    with page.expect_response(lambda r: r.request.method == "DELETE") as removed:
        page.click("#factors button.remove-factor")
    assert removed.value.status == 204
    wait_for_status(page, "Authenticator app removed")
    page.wait_for_function("() => document.querySelectorAll('#factors li').length === 0")
    assert page.text_content("#mfa-badge") == "off"
    assert page.get_attribute("#stepup-dialog", "open") is None
    assert used_step > confirmed_step

    # And the password alone signs in again.
    sign_out(page)
    assert "access_token" in sign_in(page, email).json()
    page.wait_for_selector('body[data-state="signed-in"]')


def test_a_recovery_code_signs_in_once(server: str, context: BrowserContext) -> None:
    base = server
    email = "spare@example.com"
    page = open_demo(context, base)
    sign_up(page, email)
    secret = read_secret(page)
    confirm(page, secret)
    codes = recovery_codes(page)
    sign_out(page)

    assert sign_in(page, email).json()["mfa_required"] is True
    page.wait_for_selector('body[data-state="second-factor"]')
    page.click("#mfa-switch")
    assert page.text_content("#mfa-code-label") == "Recovery code"

    # A wrong code: said so, and the prompt stays for another try.
    page.fill("#mfa-code", "not-a-recovery-code")
    with page.expect_response("**/auth/mfa/verify") as wrong:
        page.click("#mfa-form button[type=submit]")
    assert wrong.value.status == 401
    assert wrong.value.json()["type"].endswith("mfa-failed")
    assert "not accepted" in wait_for_status(page, "not accepted")
    assert page.get_attribute("body", "data-state") == "second-factor"

    page.fill("#mfa-code", codes[3])
    with page.expect_response("**/auth/mfa/verify") as verified:
        page.click("#mfa-form button[type=submit]")
    page.wait_for_selector('body[data-state="signed-in"]')
    signed_in = claims(verified.value.json()["access_token"])
    assert signed_in["acr"] == "aal2" and "mfa" in signed_in["amr"], signed_in
    page.wait_for_function(
        "() => document.getElementById('mfa-summary').textContent.includes('9 recovery codes left')"
    )

    # Used once, it is spent.
    sign_out(page)
    sign_in(page, email)
    page.wait_for_selector('body[data-state="second-factor"]')
    page.click("#mfa-switch")
    page.fill("#mfa-code", codes[3])
    with page.expect_response("**/auth/mfa/verify") as again:
        page.click("#mfa-form button[type=submit]")
    assert again.value.status == 401
    wait_for_status(page, "not accepted")
    assert page.get_attribute("body", "data-state") == "second-factor"
    page.click("#mfa-cancel")
    page.wait_for_selector('body[data-state="signed-out"]')


def test_a_server_that_requires_a_second_factor_has_it_set_up_at_sign_in(
    strict_server: str, context: BrowserContext
) -> None:
    base = strict_server
    email = "strict@example.com"
    page = open_demo(context, base)
    # Sign up signs in at once, which stops at setting up an app: no session before it.
    page.fill("#signup-email", email)
    page.fill("#signup-password", PASSWORD)
    with page.expect_response("**/auth/login") as login:
        page.click("#signup-form button[type=submit]")
    pending = login.value.json()
    assert pending["mfa_required"] and pending["enrollment_required"], pending
    assert "access_token" not in pending
    page.wait_for_selector('body[data-state="second-factor"]')
    page.wait_for_selector("#second-factor #totp-enroll:not([hidden])")
    assert page.is_hidden("#mfa-form")
    assert "tw_refresh" not in {cookie["name"] for cookie in context.cookies()}

    secret = (page.text_content("#totp-secret") or "").strip()
    assert secret
    code, _ = code_now(secret)
    page.fill("#totp-code", code)
    with page.expect_response("**/auth/mfa/totp/confirm") as confirmed:
        page.click("#totp-confirm-form button[type=submit]")
    page.wait_for_selector('body[data-state="signed-in"]')
    answer = confirmed.value.json()
    assert len(answer["recovery_codes"]) == 10
    signed_in = claims(answer["access_token"])
    assert signed_in["acr"] == "aal2", signed_in
    assert recovery_codes(page) == answer["recovery_codes"]  # shown once, in the account view
    assert page.text_content("#who") == email
    page.click("#recovery-done")
    page.wait_for_selector("#factors li")
    assert page.text_content("#mfa-badge") == "on"

    # The session survives a reload (the cookie), still two-factor.
    page.reload()
    page.wait_for_selector('body[data-state="signed-in"]')
    page.wait_for_function(
        "() => document.getElementById('auth-level').textContent.includes('aal2')"
    )


def test_the_qr_code_is_rebuilt_from_drawing_elements_only(
    server: str, context: BrowserContext
) -> None:
    """The demo never parses the server's SVG into the page: it rebuilds it from a short list
    of elements and attributes, and refuses anything else (here, a tampered answer)."""
    base = server
    page = open_demo(context, base)
    sign_up(page, "tampered@example.com")
    hostile = (
        '<svg xmlns="http://www.w3.org/2000/svg" onload="window.owned = 1" width="10" '
        'height="10"><script>window.owned = 2</script><path d="M0 0h1"/></svg>'
    )

    def tamper(route: Any) -> None:
        answer = route.fetch()
        body = answer.json()
        route.fulfill(response=answer, json={**body, "qr_svg": hostile})

    page.route("**/auth/mfa/totp/enroll", tamper)
    page.click("#totp-start")
    page.wait_for_function("() => document.getElementById('totp-secret').textContent !== ''")
    assert page.locator("#totp-qr svg").count() == 0
    assert "type the key" in (page.text_content("#totp-qr") or "")
    assert page.evaluate("window.owned") is None
    page.click("#totp-cancel")
    page.wait_for_selector("#totp-enroll[hidden]", state="attached")
