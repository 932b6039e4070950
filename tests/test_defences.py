"""Each defence, attacked through HTTP: the refusal, its shape, and that nothing changed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support import PASSWORD, PROBLEM, Api, counts, refresh_cookie

from tokenward.web.security import json_depth

WRONG = "definitely not the password"


def assert_429(response: Any) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:tokenward:problem:rate-limited"
    assert int(response.headers["retry-after"]) >= 1


# -- brute force ---------------------------------------------------------------------------


async def test_ten_failed_logins_lock_the_account_for_that_ip(api: Api, service: Any) -> None:
    """The 11th attempt is refused before the password is checked, even the right password."""
    await api.register("ada@example.com")
    for _ in range(10):
        assert (await api.login("ada@example.com", WRONG)).status_code == 401
    before = await counts(service)
    locked = await api.login("ada@example.com", PASSWORD)
    assert_429(locked)
    assert "set-cookie" not in locked.headers
    assert await counts(service) == before
    wrong = await api.login("ada@example.com", WRONG)
    # No difference between right and wrong password, but for the countdown moving on.
    same = {
        key: value for key, value in wrong.json().items() if key not in {"detail", "request_id"}
    }
    assert same == {
        key: value for key, value in locked.json().items() if key not in {"detail", "request_id"}
    }
    waits = [int(r.headers["retry-after"]) for r in (locked, wrong)]
    assert 0 <= waits[0] - waits[1] <= 1


@pytest.mark.parametrize("variant", ["ADA@example.com", "  ada@EXAMPLE.com ", "ada@example.com\t"])
async def test_the_lock_holds_against_other_spellings(api: Api, variant: str) -> None:
    await api.register("ada@example.com")
    for _ in range(10):
        await api.login("ada@example.com", WRONG)
    assert_429(await api.login(variant, PASSWORD))


async def test_the_lock_is_per_account_and_ip(api: Api, app: Any) -> None:
    """Another IP can still log in to the account; the same IP can use another account."""
    import httpx

    await api.register("ada@example.com")
    await api.register("grace@example.com")
    for _ in range(10):
        await api.login("ada@example.com", WRONG)
    assert (await api.login("grace@example.com")).status_code == 200
    transport = httpx.ASGITransport(app=app, client=("198.51.100.20", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other_ip:
        response = await other_ip.post(
            "/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
        )
    assert response.status_code == 200


async def test_a_success_resets_the_failure_count(api: Api) -> None:
    await api.register("ada@example.com")
    for _ in range(9):
        await api.login("ada@example.com", WRONG)
    assert (await api.login("ada@example.com")).status_code == 200
    for _ in range(9):
        assert (await api.login("ada@example.com", WRONG)).status_code == 401


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_login_ip": "5/minute"}])
async def test_per_ip_ceiling_across_accounts(api: Api) -> None:
    """Spraying many accounts from one IP hits the per-IP ceiling."""
    for n in range(5):
        assert (await api.login(f"user{n}@example.com", WRONG)).status_code == 401
    assert_429(await api.login("user9@example.com", WRONG))


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_login_failures_account": "3/hour"}])
async def test_per_account_limit_across_ips(api: Api, app: Any) -> None:
    import httpx

    await api.register("ada@example.com")
    for n in range(3):
        transport = httpx.ASGITransport(app=app, client=(f"198.51.100.{n + 1}", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.post("/auth/login", json={"email": "ada@example.com", "password": WRONG})
    assert_429(await api.login("ada@example.com"))


async def test_the_token_endpoint_shares_the_login_limits(api: Api) -> None:
    await api.register("ada@example.com")
    for _ in range(10):
        await api.login("ada@example.com", WRONG)
    response = await api.http.post(
        "/auth/token",
        data={"grant_type": "password", "username": "ada@example.com", "password": PASSWORD},
    )
    assert_429(response)


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_register_ip": "3/hour"}])
async def test_registrations_per_ip(api: Api, service: Any) -> None:
    for n in range(3):
        assert (await api.register(f"user{n}@example.com")).status_code == 201
    before = await counts(service)
    assert_429(await api.register("user9@example.com"))
    assert await counts(service) == before


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_refresh_session": "3/minute"}])
async def test_refreshes_per_session(api: Api, service: Any) -> None:
    _, token = await api.signed_up()
    for _ in range(3):
        response = await api.refresh(token)
        assert response.status_code == 200
        token = refresh_cookie(response)
    before = await counts(service)
    assert_429(await api.refresh(token))
    assert await counts(service) == before


async def test_password_change_shares_the_login_failure_count(api: Api) -> None:
    """A stolen access token cannot be used to brute-force the current password."""
    access, _ = await api.signed_up()
    headers = {"Authorization": f"Bearer {access}"}
    body = {"current_password": WRONG, "new_password": "a brand new passphrase 2026"}
    for _ in range(10):
        assert (
            await api.http.post("/auth/password", headers=headers, json=body)
        ).status_code == 401
    right = {**body, "current_password": PASSWORD}
    assert_429(await api.http.post("/auth/password", headers=headers, json=right))
    assert_429(await api.login("ada@example.com"))


@pytest.mark.parametrize("settings_overrides", [{"rate_limits": False}])
async def test_rate_limits_can_be_turned_off(api: Api) -> None:
    await api.register("ada@example.com")
    for _ in range(15):
        assert (await api.login("ada@example.com", WRONG)).status_code == 401
    assert (await api.login("ada@example.com")).status_code == 200


# -- enumeration ---------------------------------------------------------------------------


async def test_unknown_email_costs_a_hash_verification(
    api: Api, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No shortcut for unknown or invalid emails: each runs the (dummy) verification."""
    await api.register("ada@example.com")
    calls: list[str | None] = []
    real = service.hasher.verify

    def spy(password: str, password_hash: str | None) -> Any:
        calls.append(password_hash)
        return real(password, password_hash)

    monkeypatch.setattr(service.hasher, "verify", spy)
    for email in ("nobody@example.com", "not an email", "ada@example.com"):
        assert (await api.login(email, WRONG)).status_code == 401
    assert len(calls) == 3
    assert calls[:2] == [None, None]
    assert calls[2] is not None


# -- client IP ------------------------------------------------------------------------------


async def session_ip(api: Api, headers: dict[str, str]) -> str:
    login = await api.login("ada@example.com", headers=headers)
    access = login.json()["access_token"]
    sessions = await api.http.get("/auth/sessions", headers={"Authorization": f"Bearer {access}"})
    [current] = [s for s in sessions.json()["sessions"] if s["current"]]
    return str(current["ip"])


async def test_forwarded_for_is_ignored_without_trusted_proxies(api: Api) -> None:
    await api.register("ada@example.com")
    assert await session_ip(api, {"X-Forwarded-For": "1.2.3.4"}) == "203.0.113.7"


@pytest.mark.parametrize("settings_overrides", [{"trusted_proxies": "203.0.113.0/24, 10.0.0.1"}])
@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        ("198.51.100.9", "198.51.100.9"),
        ("198.51.100.9, 10.0.0.1", "198.51.100.9"),
        ("6.6.6.6, 198.51.100.9", "198.51.100.9"),  # the client forged the left part
        ("10.0.0.1", "10.0.0.1"),  # only proxies: the leftmost of them
        ("garbage, 198.51.100.9", "198.51.100.9"),
        ("198.51.100.9, garbage", "203.0.113.7"),
    ],
)
async def test_forwarded_for_from_a_trusted_proxy_right_to_left(
    api: Api, forwarded: str, client: str
) -> None:
    await api.register("ada@example.com")
    assert await session_ip(api, {"X-Forwarded-For": forwarded}) == client


async def test_rate_limits_use_the_resolved_ip_so_spoofing_does_not_help(api: Api) -> None:
    """Without a trusted proxy, a changing X-Forwarded-For does not reset the per-IP count."""
    await api.register("ada@example.com")
    for n in range(10):
        await api.login("ada@example.com", WRONG, headers={"X-Forwarded-For": f"1.2.3.{n}"})
    assert_429(await api.login("ada@example.com", headers={"X-Forwarded-For": "9.9.9.9"}))


# -- CSRF -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
async def test_cross_site_refresh_and_logout_are_refused(
    api: Api, service: Any, headers: dict[str, str]
) -> None:
    _, token = await api.signed_up()
    before = await counts(service)
    cookie = {"Cookie": f"tw_refresh={token}"}
    for path in ("/auth/refresh", "/auth/logout"):
        response = await api.http.post(path, headers={**cookie, **headers})
        assert response.status_code == 403
        assert response.headers["content-type"] == PROBLEM
        assert "set-cookie" not in response.headers
    assert await counts(service) == before
    assert (await api.refresh(token)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://testserver"},
        {"Origin": "http://127.0.0.1:8000"},  # the issuer's origin
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "same-site"},
        {},
    ],
)
async def test_same_origin_and_non_browser_requests_pass(api: Api, headers: dict[str, str]) -> None:
    _, token = await api.signed_up()
    assert (await api.refresh(token, headers=headers)).status_code == 200


async def test_cross_site_login_is_refused(api: Api, service: Any) -> None:
    """Login sets the cookie, so a foreign page cannot log a visitor in (login CSRF)."""
    await api.register("ada@example.com")
    response = await api.login("ada@example.com", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert await counts(service) == (1, 0, 0)


@pytest.mark.parametrize("settings_overrides", [{"allowed_origins": "https://app.example"}])
async def test_allowed_front_end_gets_credentialed_cors(api: Api) -> None:
    _, token = await api.signed_up()
    origin = {"Origin": "https://app.example"}
    response = await api.refresh(token, headers=origin)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert response.headers["access-control-allow-credentials"] == "true"
    # The front-end can read RFC 9470's step-up challenge and a rate limit's wait.
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert {"www-authenticate", "retry-after", "x-request-id"} <= exposed
    preflight = await api.http.options(
        "/auth/refresh",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    evil = await api.http.options(
        "/auth/refresh",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in evil.headers
    refused = await api.refresh(
        refresh_cookie(response), headers={"Origin": "https://evil.example"}
    )
    assert refused.status_code == 403


async def test_no_cors_without_allowed_origins(api: Api) -> None:
    response = await api.http.get("/healthz", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers


# -- headers --------------------------------------------------------------------------------


async def test_security_headers_on_every_response(api: Api) -> None:
    for response in (await api.http.get("/healthz"), await api.http.get("/nope")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert "strict-transport-security" not in response.headers  # development


async def test_auth_responses_are_never_cached(api: Api) -> None:
    access, token = await api.signed_up()
    for response in (await api.me(access), await api.refresh(token), await api.refresh("x")):
        assert response.headers["cache-control"] == "no-store"


async def test_docs_page_has_a_strict_csp(api: Api) -> None:
    """Its one inline script is allowed by hash; nothing is allowed inline wholesale."""
    response = await api.http.get("/docs")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "'sha256-" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp


@pytest.mark.parametrize(
    "settings_overrides", [{"env": "production", "issuer": "https://auth.example"}]
)
async def test_production_sends_hsts_and_secure_cookies(api: Api) -> None:
    await api.register("ada@example.com")
    response = await api.login("ada@example.com")
    assert response.headers["strict-transport-security"].startswith("max-age=")
    assert response.headers["set-cookie"].startswith("__Secure-tw_refresh=")
    assert "Secure" in response.headers["set-cookie"]


# -- input limits ---------------------------------------------------------------------------


async def test_oversized_body_is_413_and_nothing_is_created(api: Api, service: Any) -> None:
    body = {"email": "ada@example.com", "password": PASSWORD, "pad": "x" * 17000}
    response = await api.http.post("/auth/register", json=body)
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert await counts(service) == (0, 0, 0)


async def test_oversized_body_without_content_length_is_413(api: Api, service: Any) -> None:
    async def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 1024

    response = await api.http.post(
        "/auth/register", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert await counts(service) == (0, 0, 0)


async def test_huge_authorization_header_is_401_without_parsing(api: Api) -> None:
    response = await api.http.get("/auth/me", headers={"Authorization": "Bearer " + "a" * 9000})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_over_long_password_at_login_is_422_before_hashing(
    api: Api, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.register("ada@example.com")
    monkeypatch.setattr(service.hasher, "verify", lambda *_: pytest.fail("hashed"))
    response = await api.login("ada@example.com", "p" * 129)
    assert response.status_code == 422
    assert response.json()["rule"] == "password_too_long"
    response = await api.login("ada@example.com", "p" * 5000)
    assert response.status_code == 422


@pytest.mark.parametrize("depth", [17, 100, 5000])
async def test_deeply_nested_json_is_422(api: Api, service: Any, depth: int) -> None:
    body = "[" * depth + "]" * depth
    for path in ("/auth/register", "/auth/login"):
        response = await api.http.post(
            path, content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM
    assert await counts(service) == (0, 0, 0)


@pytest.mark.parametrize("body", ["[]", "1", '"text"', "null", "true", "{", '{"email": }'])
async def test_non_object_or_broken_json_is_422(api: Api, body: str) -> None:
    for path in ("/auth/register", "/auth/login"):
        response = await api.http.post(
            path, content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth(b'{"a": "[[[[{{{{", "b": [1, {"c": "\\"]]"}]}') == 3
    assert json_depth(json.dumps({"a": [[["x"]]]}).encode()) == 4


def fullwidth(text: str) -> str:
    """The same text in fullwidth forms (U+FF01..U+FF5E), which NFKC folds back."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


async def test_unicode_is_nfkc_normalised_for_email_and_password(api: Api) -> None:
    """Fullwidth and compatibility forms of the same characters are the same credentials."""
    email, password = fullwidth("ada") + "@example.com", fullwidth("fullwidth") + " passphrase 42"
    assert (await api.register(email, password)).status_code == 201
    assert (await api.login("ada@example.com", "fullwidth passphrase 42")).status_code == 200
