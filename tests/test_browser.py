"""tokenward.js and the demo page in a real headless Chromium, against a real `tokenward serve`.

Chromium is Debian's (`apt-get install chromium`, done by `make test`'s setup and `.ci/run`),
driven by Playwright through its executable path; the test tool never downloads a browser.
Pages of one browser context are tabs of one browser (one cookie jar); another context is
another device.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request
from support import PASSWORD, cli, free_port, ok, serving
from support.browser import CHROMIUM, CHROMIUM_ARGS, chromium

pytestmark = pytest.mark.sqlite_only  # the browser contract; storage is covered elsewhere

ACCESS_TTL = 6  # seconds: long enough to act, short enough to cross in a test
ARTIFACTS = Path(os.environ.get("TOKENWARD_ARTIFACTS", Path(__file__).parent.parent / "artifacts"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """One real server for the module; each test uses its own accounts."""
    data_dir = tmp_path_factory.mktemp("browser") / "data"
    port = free_port()
    env = {
        "TOKENWARD_ACCESS_TTL": str(ACCESS_TTL),
        "TOKENWARD_RATE_LIMITS": "false",
        "TOKENWARD_ISSUER": f"http://127.0.0.1:{port}",
    }
    with serving(data_dir, port, args=["--access-log"], **env) as (base, log):
        yield base, data_dir, log


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    yield context
    context.close()


def open_demo(context: BrowserContext, base: str) -> Page:
    page = context.new_page()
    page.goto(base + "/")
    page.wait_for_selector('body[data-state="signed-in"], body[data-state="signed-out"]')
    return page


def sign_up(page: Page, email: str) -> str:
    """Create an account through the demo page; return the access token the server issued."""
    page.fill("#signup-email", email)
    page.fill("#signup-password", PASSWORD)
    with page.expect_response("**/auth/login") as login:
        page.click("#signup-form button[type=submit]")
    page.wait_for_selector('body[data-state="signed-in"]')
    assert page.text_content("#who") == email
    return str(login.value.json()["access_token"])


def sign_in(page: Page, email: str) -> None:
    page.fill("#signin-email", email)
    page.fill("#signin-password", PASSWORD)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector('body[data-state="signed-in"]')


def refreshes_of(context: BrowserContext) -> list[float]:
    """Times of every POST /auth/refresh the browser sends, from now on."""
    seen: list[float] = []

    def on_request(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/auth/refresh"):
            seen.append(time.monotonic())

    context.on("request", on_request)
    return seen


def test_sign_up_and_reload_keep_the_session_with_no_token_in_reach_of_scripts(
    server: tuple[str, Path, Path], context: BrowserContext
) -> None:
    base, *_ = server
    page = open_demo(context, base)
    assert page.get_attribute("body", "data-state") == "signed-out"
    screenshot(page, "demo-signed-out.png")

    access = sign_up(page, "ada@example.com")
    page.reload()
    page.wait_for_selector('body[data-state="signed-in"]')  # restored from the cookie
    assert page.text_content("#who") == "ada@example.com"
    page.wait_for_selector("#sessions li")
    screenshot(page, "demo-signed-in.png")

    storage = page.evaluate(
        """() => ({
            cookie: document.cookie,
            local: Object.entries(localStorage),
            session: Object.entries(sessionStorage),
        })"""
    )
    assert storage["cookie"] == ""  # the refresh cookie is HttpOnly
    assert storage["session"] == []
    assert [key for key, _ in storage["local"]] in ([], [f"tokenward:refreshed-at {base}"])
    stored = " ".join(value for _, value in storage["local"])
    assert "twr_" not in stored and "eyJ" not in stored
    assert access not in page.content()
    cookies = {cookie["name"]: cookie for cookie in context.cookies()}
    refresh_cookie = cookies["tw_refresh"]
    assert refresh_cookie["httpOnly"] and refresh_cookie["sameSite"] == "Strict"
    assert refresh_cookie["path"] == "/auth"


def test_access_token_expiry_is_crossed_without_the_user_noticing(
    server: tuple[str, Path, Path], context: BrowserContext
) -> None:
    base, *_ = server
    page = open_demo(context, base)
    unauthorized: list[str] = []
    context.on(
        "response", lambda response: response.status == 401 and unauthorized.append(response.url)
    )
    refreshes = refreshes_of(context)
    sign_up(page, "grace@example.com")
    first_token_until = time.monotonic() + ACCESS_TTL

    # Well past the first token's expiry: the client refreshed ahead of time, on its own.
    page.wait_for_timeout(ACCESS_TTL * 1500)  # not time.sleep: Playwright must see events
    assert time.monotonic() > first_token_until
    assert refreshes, "no refresh before expiry"
    page.click("#reload-sessions")
    page.wait_for_selector("#sessions li")
    assert page.get_attribute("body", "data-state") == "signed-in"
    assert unauthorized == []  # not a single request was refused on the way
    seconds = int(page.text_content("#token-ttl").split("expires in ")[1].split()[0])
    assert 0 < seconds <= ACCESS_TTL


def test_four_tabs_whose_tokens_expire_together_send_one_refresh(
    server: tuple[str, Path, Path], context: BrowserContext
) -> None:
    base, data_dir, _ = server
    first = open_demo(context, base)
    sign_up(first, "tabs@example.com")
    tabs = [first] + [open_demo(context, base) for _ in range(3)]
    for tab in tabs:
        tab.wait_for_selector('body[data-state="signed-in"]')

    refreshes = refreshes_of(context)
    # The first refresh any tab makes hands its token to every tab, so from then on the four
    # tabs hold one token that expires for all of them at once.
    deadline = time.monotonic() + ACCESS_TTL + 5
    while not refreshes:
        assert time.monotonic() < deadline, "no tab refreshed"
        tabs[0].wait_for_timeout(100)
    synchronized = len(refreshes)
    tabs[0].wait_for_timeout(ACCESS_TTL * 1000 + 500)  # one full lifetime: exactly one expiry
    assert len(refreshes) - synchronized == 1, refreshes

    for tab in tabs:
        assert tab.get_attribute("body", "data-state") == "signed-in"
        tab.click("#reload-sessions")
        tab.wait_for_selector("#sessions li")
        assert tab.get_attribute("body", "data-state") == "signed-in"
    events = ok(cli(data_dir, "events", "--user", "tabs@example.com", "--limit", "100"))
    assert "session.refreshed" in events
    assert "session.reuse_detected" not in events


def test_logout_in_one_tab_signs_out_the_others(
    server: tuple[str, Path, Path], context: BrowserContext
) -> None:
    base, *_ = server
    first = open_demo(context, base)
    sign_up(first, "leaving@example.com")
    second = open_demo(context, base)
    second.wait_for_selector('body[data-state="signed-in"]')

    first.click("#logout")
    first.wait_for_selector('body[data-state="signed-out"]')
    second.wait_for_selector('body[data-state="signed-out"]')
    assert "another tab" in second.text_content("#status")
    second.reload()  # the cookie's session is over on the server too
    second.wait_for_selector('body[data-state="signed-out"]')


def test_a_session_revoked_from_another_device_or_tab_ends_here(
    server: tuple[str, Path, Path], browser: Browser
) -> None:
    base, *_ = server
    laptop, phone = browser.new_context(), browser.new_context()
    try:
        at_laptop = open_demo(laptop, base)
        sign_up(at_laptop, "two@example.com")
        at_phone = open_demo(phone, base)
        sign_in(at_phone, "two@example.com")

        # On the phone, revoke the laptop's session (the one not marked current).
        at_phone.click("#reload-sessions")
        at_phone.wait_for_selector("#sessions li:nth-child(2)")
        others = at_phone.locator("#sessions li", has_not_text="this device")
        others.locator("button.revoke").click()
        # The laptop notices at its next refresh, within one token lifetime.
        at_laptop.wait_for_selector(
            'body[data-state="signed-out"]', timeout=(ACCESS_TTL + 5) * 1000
        )
        assert "ended elsewhere" in at_laptop.text_content("#status")

        # Another tab of the phone revokes the phone's own session: both phone tabs end.
        second_tab = open_demo(phone, base)
        second_tab.wait_for_selector('body[data-state="signed-in"]')
        second_tab.click("#reload-sessions")
        second_tab.wait_for_selector("#sessions li")
        second_tab.locator("#sessions li", has_text="this device").locator("button.revoke").click()
        second_tab.wait_for_selector('body[data-state="signed-out"]')
        at_phone.wait_for_selector('body[data-state="signed-out"]')
    finally:
        laptop.close()
        phone.close()


def test_a_page_on_another_site_cannot_use_the_refresh_cookie(
    server: tuple[str, Path, Path], context: BrowserContext, tmp_path: Path
) -> None:
    base, _, log = server
    page = open_demo(context, base)
    sign_up(page, "target@example.com")

    (tmp_path / "evil.html").write_text(
        "<!doctype html><script>"
        f"fetch('{base}/auth/refresh', {{method: 'POST', credentials: 'include'}})"
        ".then(r => r.text()).then(t => document.title = 'read:' + t)"
        ".catch(() => document.title = 'blocked');"
        "</script>"
    )
    with static_site(tmp_path) as other_site:  # http://localhost:PORT: another site entirely
        attacker = context.new_page()
        with attacker.expect_request(f"{base}/auth/refresh") as sent:
            attacker.goto(f"{other_site}/evil.html")
        assert "cookie" not in sent.value.all_headers()  # SameSite=Strict: withheld
        attacker.wait_for_function("document.title !== ''")
        assert attacker.title() == "blocked"  # and no CORS grant lets the page read an answer
    # The server refused it too (the browser hides the status from the page and from us).
    answers = [
        line
        for line in log.read_text().splitlines()
        if "[tokenward.access]" in line and "method=POST" in line and "route=/auth/refresh" in line
    ]
    assert "status=403" in answers[-1].split(), answers[-1]

    # The session was not touched: the real tab still refreshes normally.
    page.click("#reload-sessions")
    page.wait_for_selector("#sessions li")
    assert page.get_attribute("body", "data-state") == "signed-in"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class static_site:  # noqa: N801 - used as a context manager, like contextlib's
    """A plain static web server for one folder on http://localhost:PORT."""

    def __init__(self, folder: Path) -> None:
        handler = partial(_QuietHandler, directory=str(folder))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://localhost:{self.httpd.server_address[1]}"

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def screenshot(page: Page, name: str) -> None:
    """Save a screenshot as a test artifact (the README shows copies from docs/screenshots)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0


# One page, two tokenward servers on two hosts of one site (so each has its own host-only
# cookie, and both get it from the page: SameSite=Strict). The names resolve to loopback in
# this browser only; the page's origin counts as secure, as https would, so Web Locks exist.
TWO_SERVERS_PAGE = """async ({ a, b, password, ttl }) => {
  const { createClient } = await import(`${a}/static/tokenward.js`);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const clients = { a: createClient({ baseUrl: a }), b: createClient({ baseUrl: b }) };
  const tokens = { a: 0, b: 0 };
  for (const name of ["a", "b"]) {
    clients[name].addEventListener("token", () => (tokens[name] += 1));
  }
  await clients.a.register("one@example.com", password);
  await clients.b.register("two@example.com", password);
  await clients.a.login("one@example.com", password);
  await sleep(300);
  const afterLoginA = { ...tokens };
  await clients.b.login("two@example.com", password);
  await sleep(300);
  const afterLoginB = { ...tokens };
  await sleep(ttl * 1000 + 1500); // each refreshes on its own timer, a fraction apart
  return {
    locks: typeof navigator.locks?.request === "function",
    afterLoginA,
    afterLoginB,
    refreshes: { a: clients.a.refreshCount, b: clients.b.refreshCount },
    users: { a: (await clients.a.getUser())?.email, b: (await clients.b.getUser())?.email },
  };
}"""

SECOND_TAB = """async ({ a, b }) => {
  const { createClient } = await import(`${a}/static/tokenward.js`);
  const clients = { a: createClient({ baseUrl: a }), b: createClient({ baseUrl: b + "/" }) };
  await Promise.all([clients.a.start(), clients.b.start()]);
  return { a: (await clients.a.getUser())?.email, b: (await clients.b.getUser())?.email };
}"""


def _issuer(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["iss"])


def test_one_page_with_clients_of_two_servers_keeps_their_tokens_apart(
    browser: Browser, tmp_path: Path
) -> None:
    """Issue 13: two clients in one page for two tokenward servers keep apart: neither takes
    the other's token from the tabs' channel, each refreshes with its own server, no request
    carries the other server's token, and another tab is handed each server's own token."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>two servers</title>")
    with static_site(site) as local_site, ExitStack() as stack:
        page_origin = f"http://app.example.com:{urlsplit(local_site).port}"
        servers: dict[str, str] = {}
        for name in ("a", "b"):
            port = free_port()
            servers[name] = f"http://{name}.example.com:{port}"
            env = {
                "TOKENWARD_ALLOWED_ORIGINS": page_origin,
                "TOKENWARD_ISSUER": servers[name],
                "TOKENWARD_ACCESS_TTL": str(ACCESS_TTL),
                "TOKENWARD_RATE_LIMITS": "false",
            }
            stack.enter_context(serving(tmp_path / f"data-{name}", port, **env))
        args = [
            *CHROMIUM_ARGS,
            "--host-resolver-rules=MAP *.example.com 127.0.0.1",
            f"--unsafely-treat-insecure-origin-as-secure={page_origin}",
        ]
        # Another Chromium of the module's Playwright: these flags are browser-wide.
        resolving = browser.browser_type.launch(executable_path=CHROMIUM, args=args)
        stack.callback(resolving.close)
        context = resolving.new_context()
        sent: list[Request] = []
        context.on("request", lambda request: sent.append(request))
        refused: list[str] = []
        context.on("response", lambda r: r.status == 401 and refused.append(r.url))

        page = context.new_page()
        page.goto(page_origin + "/")
        outcome = page.evaluate(
            TWO_SERVERS_PAGE,
            {"a": servers["a"], "b": servers["b"], "password": PASSWORD, "ttl": ACCESS_TTL},
        )
        assert outcome["locks"]  # the Web Locks path ran, not the fallback
        assert outcome["afterLoginA"] == {"a": 1, "b": 0}  # a's token never reached b
        assert outcome["afterLoginB"] == {"a": 1, "b": 1}
        assert outcome["refreshes"]["a"] >= 1 and outcome["refreshes"]["b"] >= 1
        assert outcome["users"] == {"a": "one@example.com", "b": "two@example.com"}

        second = context.new_page()  # another tab: each client is handed its own server's token
        second.goto(page_origin + "/")
        users = second.evaluate(SECOND_TAB, {"a": servers["a"], "b": servers["b"]})
        assert users == {"a": "one@example.com", "b": "two@example.com"}

        bearer = 0
        for request in sent:
            authorization = request.all_headers().get("authorization", "")
            if authorization.startswith("Bearer "):
                bearer += 1
                server = f"http://{urlsplit(request.url).netloc}"
                assert _issuer(authorization.removeprefix("Bearer ")) == server, request.url
        assert bearer >= 4
        assert refused == []


def test_the_spa_example_on_another_origin_of_the_same_site(
    browser: Browser, tmp_path: Path
) -> None:
    """docs/browser.md's setup: an SPA on localhost:A, tokenward on localhost:B, listed in
    TOKENWARD_ALLOWED_ORIGINS; the Strict cookie works because the two share a site."""
    spa_folder = Path(__file__).parent.parent / "examples" / "spa"
    with static_site(spa_folder) as spa:
        port = free_port()
        server_origin = f"http://localhost:{port}"
        env = {
            "TOKENWARD_ALLOWED_ORIGINS": spa,
            "TOKENWARD_ISSUER": server_origin,
            "TOKENWARD_ACCESS_TTL": str(ACCESS_TTL),
            "TOKENWARD_RATE_LIMITS": "false",
        }
        with serving(tmp_path / "data", port, **env):
            context = browser.new_context()
            try:
                page = context.new_page()
                page.goto(f"{spa}/?server={server_origin}")
                page.wait_for_selector('body[data-state="signed-out"]')
                page.fill("#email", "spa@example.com")
                page.fill("#password", PASSWORD)
                page.click("#register")
                page.wait_for_selector('body[data-state="signed-in"]')
                assert page.text_content("#who") == "spa@example.com"
                page.reload()  # restored through a cross-origin, credentialed refresh
                page.wait_for_selector('body[data-state="signed-in"]')
                page.click("#signout")
                page.wait_for_selector('body[data-state="signed-out"]')
                page.reload()
                page.wait_for_selector('body[data-state="signed-out"]')
            finally:
                context.close()
