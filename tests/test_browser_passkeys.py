"""Passkeys (WebAuthn) through tokenward.js and the demo page, in a real headless Chromium, against
a real `tokenward serve`.

Chromium's DevTools virtual authenticator (the CDP WebAuthn domain) plays the user's device: a
platform authenticator (CTAP2, internal transport) with resident keys and user verification that
answers at once (automatic presence simulation). It answers a conditional request (the email
field's autofill) at once too, as if the user picked its passkey there: the tests that click
"Sign in with a passkey" take conditional mediation away from the page (NO_AUTOFILL, as in a
browser without it); one test uses it. WebAuthn refuses IP addresses as RP ids, so the pages
come from http://localhost:PORT (RP id `localhost`), which Chromium also counts as a secure
context. Chromium is Debian's, driven by Playwright through its executable path, as in
tests/test_browser.py.
"""

from __future__ import annotations

import base64
import select
import socket
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, CDPSession, Page, Request, Response, Route
from support import PASSWORD, free_port, serving
from support.browser import chromium
from support.demo import claims, open_demo, sign_in, sign_out, wait_for_status

pytestmark = pytest.mark.sqlite_only  # the browser contract; storage is covered elsewhere

PAGE_WAIT = 30_000  # ms for a page to show what a step leads to, under load
TYPE = "urn:tokenward:problem:"
SIGNED_IN_BY_PASSKEY = ({"hwk", "mfa"}, {"swk", "mfa"})  # RFC 8176: a key, and multi-factor

# A browser without conditional mediation (no passkeys in the autofill): the page then waits
# for the button, and the virtual authenticator does not sign in by itself.
NO_AUTOFILL = """
Object.defineProperty(PublicKeyCredential, "isConditionalMediationAvailable", {
  value: async () => false, configurable: true,
});
"""
# A browser without WebAuthn Level 3's JSON helpers: tokenward.js's own coder runs instead.
NO_JSON_HELPERS = """
delete PublicKeyCredential.parseCreationOptionsFromJSON;
delete PublicKeyCredential.parseRequestOptionsFromJSON;
delete PublicKeyCredential.prototype.toJSON;
"""
# Every navigator.credentials.get of the page: its mediation, and how it ended.
RECORD_REQUESTS = """
(() => {
  const get = navigator.credentials.get.bind(navigator.credentials);
  window.passkeyRequests = [];
  navigator.credentials.get = (options) => {
    const entry = { mediation: options?.mediation ?? null, outcome: "pending" };
    window.passkeyRequests.push(entry);
    const answer = get(options);
    answer.then(() => { entry.outcome = "credential"; }, (e) => { entry.outcome = e.name; });
    return answer;
  };
})();
"""


def _server(tmp_path_factory: pytest.TempPathFactory, mode: str) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("browser-passkeys") / "data"
    port = free_port()
    base = f"http://localhost:{port}"
    env = {
        "TOKENWARD_ISSUER": base,  # and so the one origin WebAuthn ceremonies may come from
        "TOKENWARD_PASSKEYS": mode,
        "TOKENWARD_WEBAUTHN_RP_ID": "localhost",
        "TOKENWARD_RATE_LIMITS": "false",
    }
    with serving(data_dir, port, **env):
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Passwordless mode (a passkey alone signs in; also a second factor); each test its own
    accounts and its own device."""
    yield from _server(tmp_path_factory, "passwordless")


@pytest.fixture(scope="module")
def second_factor_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A passkey only after the password."""
    yield from _server(tmp_path_factory, "second-factor")


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    context.set_default_timeout(PAGE_WAIT)
    yield context
    context.close()


# -- helpers -------------------------------------------------------------------------------


@dataclass
class Device:
    """A virtual authenticator of one page (it stays with the page across navigations)."""

    cdp: CDPSession
    id: str

    def credentials(self) -> list[dict[str, Any]]:
        answer = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})
        return list(answer["credentials"])

    def verifies_user(self, verified: bool) -> None:
        """Whether the fingerprint (or PIN) check succeeds."""
        self.cdp.send(
            "WebAuthn.setUserVerified", {"authenticatorId": self.id, "isUserVerified": verified}
        )

    def answers_at_once(self, enabled: bool) -> None:
        """Whether the device answers a request by itself (else the request waits)."""
        self.cdp.send(
            "WebAuthn.setAutomaticPresenceSimulation",
            {"authenticatorId": self.id, "enabled": enabled},
        )


def device(page: Page, **options: Any) -> Device:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
                **options,
            }
        },
    )
    return Device(cdp, added["authenticatorId"])


def unb64(text: str) -> bytes:
    """base64 or base64url, padded or not."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def sign_up(page: Page, email: str) -> None:
    """Create an account through the demo page: signed in with a password alone."""
    page.fill("#signup-email", email)
    page.fill("#signup-password", PASSWORD)
    page.click("#signup-form button[type=submit]")
    page.wait_for_selector('body[data-state="signed-in"]')
    assert page.text_content("#who") == email
    page.wait_for_selector("#passkeys-card:not([hidden])")


def add_passkey(page: Page, name: str = "") -> Response:
    """Add a passkey in the passkeys card; return the answer to POST /auth/passkeys/register."""
    page.fill("#passkey-name", name)
    with page.expect_response("**/auth/passkeys/register") as registered:
        page.click("#passkey-form button[type=submit]")
    return registered.value


def sign_in_with_passkey(page: Page) -> Response:
    """Click "Sign in with a passkey"; return the answer to POST /auth/passkeys/login."""
    page.wait_for_selector("#passkey-signin-box:not([hidden])")
    with page.expect_response("**/auth/passkeys/login") as login:
        page.click("#passkey-signin")
    return login.value


def listed(page: Page) -> list[str]:
    """The passkeys card's rows, as text."""
    return [text.strip() for text in page.locator("#passkeys li").all_text_contents()]


def wait_for_passkeys(page: Page, count: int) -> list[str]:
    page.wait_for_function(
        "(n) => document.querySelectorAll('#passkeys li').length === n", arg=count
    )
    return listed(page)


def posts_to(context: BrowserContext, path: str) -> list[Request]:
    """Every POST to `path` the browser sends, from now on."""
    seen: list[Request] = []

    def on_request(request: Request) -> None:
        if request.method == "POST" and request.url.endswith(path):
            seen.append(request)

    context.on("request", on_request)
    return seen


def user_verified(credential: dict[str, Any]) -> bool:
    """The UV flag (bit 2) of an assertion's authenticator data."""
    flags = unb64(credential["response"]["authenticatorData"])[32]
    return bool(flags & 0x04)


class another_port:  # noqa: N801 - used as a context manager, like contextlib's
    """The server at `port` under another origin of the same host: http://localhost:OTHER,
    through a plain TCP relay (the server sees that origin as its Host, as behind a proxy)."""

    def __init__(self, port: int) -> None:
        target = port

        class Relay(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with socket.create_connection(("127.0.0.1", target)) as upstream:
                    ends = {self.request: upstream, upstream: self.request}
                    while True:
                        readable, _, _ = select.select(list(ends), [], [], 30)
                        if not readable:
                            return
                        for end in readable:
                            data = end.recv(65536)
                            if not data:
                                return
                            ends[end].sendall(data)

        self.relay = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Relay)
        self.relay.daemon_threads = True

    def __enter__(self) -> str:
        threading.Thread(target=self.relay.serve_forever, daemon=True).start()
        return f"http://localhost:{self.relay.server_address[1]}"

    def __exit__(self, *_: object) -> None:
        self.relay.shutdown()
        self.relay.server_close()


# -- the flows -----------------------------------------------------------------------------


def test_a_passkey_added_on_the_demo_page_signs_in_with_no_username(
    server: str, context: BrowserContext
) -> None:
    base = server
    email = "ada@example.com"
    context.add_init_script(NO_AUTOFILL)
    page = open_demo(context, base)
    laptop = device(page)
    sign_up(page, email)
    assert wait_for_passkeys(page, 0) == []

    # Add one: the server's options (user verification required, a discoverable credential
    # preferred, nothing to exclude yet), the device makes it, the server keeps it.
    page.fill("#passkey-name", "Laptop")
    with (
        page.expect_response("**/auth/passkeys/register/options") as offered,
        page.expect_response("**/auth/passkeys/register") as registered,
    ):
        page.click("#passkey-form button[type=submit]")
    options = offered.value.json()
    assert options["authenticatorSelection"]["userVerification"] == "required", options
    assert options["authenticatorSelection"]["residentKey"] in {"preferred", "required"}
    assert options["rp"]["id"] == "localhost"
    assert options.get("excludeCredentials", []) == []
    assert registered.value.status == 201, registered.value.text()
    passkey = registered.value.json()
    assert (passkey["name"], passkey["synced"], passkey["last_used_at"]) == ("Laptop", False, None)
    wait_for_status(page, "added")
    [row] = wait_for_passkeys(page, 1)
    assert "Laptop" in row and "not used yet" in row
    assert page.locator("#passkeys .badge.synced").count() == 0  # bound to this device
    page.wait_for_selector("#events code:text-is('passkey.registered')")

    # The device keeps a discoverable credential for the RP id, under a random user handle.
    [credential] = laptop.credentials()
    assert credential["isResidentCredential"] and credential["rpId"] == "localhost"
    handle = unb64(credential["userHandle"])
    assert email.encode() not in handle and len(handle) >= 16

    # Sign out: the form offers a passkey (and its email field, the autofill) ...
    with page.expect_response("**/auth/passkeys/login/options") as prepared:
        sign_out(page)
    login_options = prepared.value.json()["options"]
    assert not login_options.get("allowCredentials"), login_options  # the device offers its own
    assert login_options["userVerification"] == "required"
    assert page.get_attribute("#signin-email", "autocomplete") == "username webauthn"

    # ... and the passkey alone signs in: no email, no password.
    login = sign_in_with_passkey(page)
    assert login.status == 200, login.text()
    token = claims(login.json()["access_token"])
    assert set(token["amr"]) in SIGNED_IN_BY_PASSKEY and token["acr"] == "aal2", token
    page.wait_for_selector('body[data-state="signed-in"]')
    assert page.text_content("#who") == email
    wait_for_status(page, "Signed in with a passkey")
    assert any(cookie["name"] == "tw_refresh" for cookie in context.cookies())
    page.wait_for_function(
        "() => document.getElementById('auth-level').textContent.includes('passkey (aal2)')"
    )
    page.wait_for_function(
        "() => document.getElementById('passkeys').textContent.includes('last used')"
    )

    # The same device again: the options exclude its passkey, so the browser says so.
    registrations = posts_to(context, "/auth/passkeys/register")
    with page.expect_response("**/auth/passkeys/register/options") as offered:
        page.click("#passkey-form button[type=submit]")
    [excluded] = offered.value.json()["excludeCredentials"]
    assert unb64(excluded["id"]) == unb64(credential["credentialId"])
    wait_for_status(page, "already keeps a passkey")
    assert registrations == []
    assert len(wait_for_passkeys(page, 1)) == 1

    # Rename it in place.
    page.click("#passkeys li button.rename-passkey")
    page.fill("#passkeys li input[name=name]", "Work laptop")
    with page.expect_response(lambda r: r.request.method == "PATCH") as renamed:
        page.press("#passkeys li input[name=name]", "Enter")
    assert renamed.value.status == 200 and renamed.value.json()["name"] == "Work laptop"
    page.wait_for_function(
        "() => document.getElementById('passkeys').textContent.includes('Work laptop')"
    )

    # A passkey sign-in is recent and two-factor: removing needs no step-up.
    with page.expect_response(lambda r: r.request.method == "DELETE") as removed:
        page.click("#passkeys li button.remove-passkey")
    assert removed.value.status == 204
    wait_for_status(page, "Passkey removed")
    assert wait_for_passkeys(page, 0) == []
    assert page.get_attribute("#stepup-dialog", "open") is None

    # The device still holds it; the server no longer takes it.
    sign_out(page)
    refused = sign_in_with_passkey(page)
    assert refused.status == 401 and refused.json()["type"] == f"{TYPE}passkey-failed"
    wait_for_status(page, "passkey was not accepted")
    assert page.get_attribute("body", "data-state") == "signed-out"


def test_a_replayed_answer_or_one_without_user_verification_is_refused(
    server: str, context: BrowserContext
) -> None:
    base = server
    context.add_init_script(NO_AUTOFILL)
    page = open_demo(context, base)
    phone = device(page)
    sign_up(page, "replay@example.com")
    assert add_passkey(page, "Phone").status == 201
    sign_out(page)

    with page.expect_request("**/auth/passkeys/login") as sent:
        assert sign_in_with_passkey(page).status == 200
    page.wait_for_selector('body[data-state="signed-in"]')
    captured = sent.value.post_data_json
    assert set(captured) == {"flow_id", "credential"}
    assert user_verified(captured["credential"])

    # The same answer again: its challenge was used. Nor does it answer another challenge.
    headers = {"Origin": base}
    replayed = httpx.post(f"{base}/auth/passkeys/login", json=captured, headers=headers)
    assert replayed.status_code == 401, replayed.text
    assert replayed.json()["type"] == f"{TYPE}passkey-failed"
    assert "set-cookie" not in replayed.headers and "access_token" not in replayed.text
    fresh = httpx.post(f"{base}/auth/passkeys/login/options", headers=headers).json()
    elsewhere = {**captured, "flow_id": fresh["flow_id"]}
    moved = httpx.post(f"{base}/auth/passkeys/login", json=elsewhere, headers=headers)
    assert moved.status_code == 401 and moved.json()["type"] == f"{TYPE}passkey-failed"

    # The fingerprint check fails: the browser refuses, with a typed error; nothing is sent.
    sign_out(page)
    phone.verifies_user(False)
    posted = posts_to(context, "/auth/passkeys/login")
    page.click("#passkey-signin")
    wait_for_status(page, "could not confirm it was you")
    cancelled = page.evaluate(
        """async () => {
          const { createClient, PasskeyError } = await import("/static/tokenward.js");
          const client = createClient();
          const conditional = await client.loginWithPasskey({ conditional: true });
          try {
            await client.loginWithPasskey();
            return { signedIn: true };
          } catch (error) {
            return {
              conditional, typed: error instanceof PasskeyError, name: error.name,
              reason: error.reason, cause: error.cause?.name,
            };
          }
        }"""
    )
    assert cancelled == {
        "conditional": None,  # no autofill in this browser: nothing to wait for
        "typed": True,
        "name": "PasskeyError",
        "reason": "cancelled",
        "cause": "NotAllowedError",
    }
    assert posted == []
    assert page.get_attribute("body", "data-state") == "signed-out"

    # A page that asks for no user verification gets an answer without it: the server refuses
    # it for a passwordless sign-in.
    def discouraged(route: Route) -> None:
        answer = route.fetch()
        body = answer.json()
        body["options"]["userVerification"] = "discouraged"
        route.fulfill(response=answer, json=body)

    page.route("**/auth/passkeys/login/options", discouraged)
    page.reload()
    page.wait_for_selector('body[data-state="signed-out"]')
    with page.expect_request("**/auth/passkeys/login") as unverified:
        refused = sign_in_with_passkey(page)
    assert not user_verified(unverified.value.post_data_json["credential"])
    assert refused.status == 401 and refused.json()["type"] == f"{TYPE}passkey-failed"
    wait_for_status(page, "passkey was not accepted")
    assert page.get_attribute("body", "data-state") == "signed-out"
    assert "tw_refresh" not in {cookie["name"] for cookie in context.cookies()}
    # The page asks for options again (the conditional request): a handler still fetching
    # when the context closes must not fail the next test.
    page.unroute_all(behavior="ignoreErrors")


def test_the_browser_offers_the_passkey_in_the_email_fields_autofill(
    server: str, context: BrowserContext
) -> None:
    """Conditional mediation: the signed-out page waits for a passkey picked in the email
    field's autofill (the virtual authenticator picks at once); the button withdraws that
    waiting request first, since a browser runs one passkey prompt at a time."""
    base = server
    email = "autofill@example.com"
    context.add_init_script(RECORD_REQUESTS)
    page = open_demo(context, base)
    laptop = device(page)
    sign_up(page, email)
    assert add_passkey(page, "Laptop").status == 201

    with page.expect_response("**/auth/passkeys/login") as login:
        page.click("#logout")
    assert login.value.status == 200
    page.wait_for_selector('body[data-state="signed-in"]')
    assert page.text_content("#who") == email
    wait_for_status(page, "Signed in with a passkey")
    requests = page.evaluate("window.passkeyRequests")
    assert requests[-1] == {"mediation": "conditional", "outcome": "credential"}, requests
    assert page.get_attribute("body", "data-state") == "signed-in"

    # The user clicks the button while the autofill's request waits.
    laptop.answers_at_once(False)
    page.click("#logout")
    page.wait_for_selector('body[data-state="signed-out"]')
    page.wait_for_function("() => window.passkeyRequests.at(-1)?.outcome === 'pending'")
    page.wait_for_timeout(500)  # the request reaches the device, which holds it
    laptop.answers_at_once(True)
    assert sign_in_with_passkey(page).status == 200
    page.wait_for_selector('body[data-state="signed-in"]')
    *_, waiting, clicked = page.evaluate("window.passkeyRequests")
    assert waiting == {"mediation": "conditional", "outcome": "AbortError"}
    assert clicked == {"mediation": None, "outcome": "credential"}


def test_a_synced_passkey_is_listed_as_such_and_confirms_a_step_up(
    server: str, context: BrowserContext
) -> None:
    """A backup-eligible credential (a multi-device passkey, as password managers make) is
    recorded as synced. Here the browser has no WebAuthn JSON helpers: tokenward.js's own
    base64url coder makes the requests."""
    base = server
    context.add_init_script(NO_AUTOFILL + NO_JSON_HELPERS)
    page = open_demo(context, base)
    device(page, defaultBackupEligibility=True, defaultBackupState=True)
    assert page.evaluate("typeof PublicKeyCredential.parseCreationOptionsFromJSON") == "undefined"
    sign_up(page, "synced@example.com")

    registered = add_passkey(page)  # no name: the server's default
    assert registered.status == 201, registered.text()
    passkey = registered.json()
    assert passkey["synced"] is True and passkey["backed_up"] is True, passkey
    assert passkey["name"]
    assert len(wait_for_passkeys(page, 1)) == 1
    assert page.text_content("#passkeys .badge.synced") == "synced"
    held = page.evaluate("""async () => {
      const { createClient } = await import("/static/tokenward.js");
      return createClient().passkeys();  // another client of the tab: the channel's token
    }""")
    assert [(p["synced"], p["backed_up"]) for p in held] == [(True, True)]

    # This session signed in with a password alone: removing the passkey needs a second
    # factor. The dialog offers the passkey itself; it confirms, and the removal goes ahead.
    with page.expect_response("**/auth/reauthenticate") as reauthenticated:
        page.click("#passkeys li button.remove-passkey")
        page.wait_for_selector("#stepup-dialog[open]")
        assert page.locator("#stepup-method option[value=password]").is_disabled()
        assert page.input_value("#stepup-method") == "webauthn"
        assert page.is_hidden("#stepup-secret")
        page.click("#stepup-form button[type=submit]")
    assert reauthenticated.value.status == 200, reauthenticated.value.text()
    stepped = claims(reauthenticated.value.json()["access_token"])
    assert stepped["acr"] == "aal2" and {"hwk", "swk"} & set(stepped["amr"]), stepped
    wait_for_status(page, "Passkey removed")
    assert wait_for_passkeys(page, 0) == []


def test_an_origin_the_server_does_not_list_is_refused(
    server: str, context: BrowserContext
) -> None:
    """The same server under another origin (another port of localhost: the same RP id, so
    the browser goes ahead): the server answers its pages, but WebAuthn ceremonies only from
    TOKENWARD_WEBAUTHN_ORIGINS (here the default, the issuer's origin)."""
    base = server
    context.add_init_script(NO_AUTOFILL)
    with another_port(int(base.rsplit(":", 1)[1])) as other:
        page = open_demo(context, other)
        device(page)
        sign_up(page, "elsewhere@example.com")
        refused = add_passkey(page, "Laptop")
        assert refused.status == 422 and refused.json()["type"] == f"{TYPE}invalid-passkey"
        wait_for_status(page, "could not be added")
        assert wait_for_passkeys(page, 0) == []

        # From the listed origin (the same cookie: ports do not separate cookies) it works.
        page.goto(base + "/")
        page.wait_for_selector('body[data-state="signed-in"]')
        page.wait_for_selector("#passkeys-card:not([hidden])")
        assert add_passkey(page, "Laptop").status == 201
        sign_out(page)

        # Signing in from the other origin: refused; from the listed one: signed in.
        page.goto(other + "/")
        page.wait_for_selector('body[data-state="signed-out"]')
        refused = sign_in_with_passkey(page)
        assert refused.status == 401 and refused.json()["type"] == f"{TYPE}passkey-failed"
        wait_for_status(page, "passkey was not accepted")
        page.goto(base + "/")
        page.wait_for_selector('body[data-state="signed-out"]')
        assert sign_in_with_passkey(page).status == 200
        page.wait_for_selector('body[data-state="signed-in"]')


def test_a_passkey_as_the_second_factor_after_a_password(
    second_factor_server: str, context: BrowserContext
) -> None:
    base = second_factor_server
    email = "second@example.com"
    page = context.new_page()
    with page.expect_response("**/auth/passkeys/login/options") as probed:
        page.goto(base + "/")
        page.wait_for_selector('body[data-state="signed-out"]')
    assert probed.value.status == 404  # no passwordless sign-in here: no button
    assert page.get_attribute("#passkey-signin-box", "hidden") is not None
    phone = device(page)
    sign_up(page, email)
    assert add_passkey(page, "Phone").status == 201
    sign_out(page)

    # The password is not enough: the second-factor prompt offers the passkey.
    pending = sign_in(page, email).json()
    assert pending["mfa_required"] and "webauthn" in pending["methods"], pending
    page.wait_for_selector('body[data-state="second-factor"]')
    page.wait_for_selector("#mfa-passkey:visible")
    assert page.evaluate("document.activeElement.id") == "mfa-passkey"
    codes = bool({"totp", "recovery_code"} & set(pending["methods"]))
    assert page.is_visible("#mfa-code") == codes

    # The fingerprint check fails: nothing is sent, the sign-in still waits for its factor.
    phone.verifies_user(False)
    verifies = posts_to(context, "/auth/mfa/verify")
    page.click("#mfa-passkey")
    wait_for_status(page, "could not confirm it was you")
    assert verifies == []
    assert page.get_attribute("body", "data-state") == "second-factor"

    phone.verifies_user(True)
    with (
        page.expect_response("**/auth/mfa/webauthn/options") as offered,
        page.expect_response("**/auth/mfa/verify") as verified,
    ):
        page.click("#mfa-passkey")
    assert len(offered.value.json()["allowCredentials"]) == 1  # the user's own passkey
    assert verified.value.status == 200, verified.value.text()
    token = claims(verified.value.json()["access_token"])
    assert token["acr"] == "aal2", token
    assert token["amr"][0] == "pwd" and set(token["amr"][1:]) in SIGNED_IN_BY_PASSKEY, token
    page.wait_for_selector('body[data-state="signed-in"]')
    assert page.text_content("#who") == email
    page.wait_for_function(
        "() => document.getElementById('auth-level').textContent"
        ".includes('password and passkey (aal2)')"
    )
