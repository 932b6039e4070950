"""GET /auth/me's framework-free fast path answers exactly as the FastAPI route does."""

from __future__ import annotations

import pytest
from support import Api, headers_without_request_id, without_request_id

from tokenward.web.fastpath import FastProtectedRoute, _bearer_token


async def test_the_fast_answer_is_the_routes_answer(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    access, _ = await api.signed_up()
    fast = await api.me(access)

    async def decline(self: FastProtectedRoute, token: str, send: object) -> bool:
        return False

    monkeypatch.setattr(FastProtectedRoute, "_answer", decline)
    routed = await api.me(access)

    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content
    assert headers_without_request_id(fast) == headers_without_request_id(routed)


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ([(b"authorization", b"Bearer abc.def.ghi")], "abc.def.ghi"),
        ([(b"authorization", b"bearer abc")], "abc"),
        ([(b"authorization", b"Basic abc")], None),
        ([(b"authorization", b"Bearer ")], None),
        ([(b"authorization", b"Bearer a b")], None),
        ([(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")], None),
        ([(b"authorization", b"Bearer " + b"a" * 9000)], None),
        ([], None),
    ],
)
def test_only_plain_bearer_credentials_take_the_fast_path(
    headers: list[tuple[bytes, bytes]], token: str | None
) -> None:
    """Everything unusual goes to the route, which owns the error answers."""
    assert _bearer_token(headers) == token


async def test_refused_tokens_still_get_the_routes_answer(api: Api) -> None:
    access, refresh = await api.signed_up()
    assert (await api.logout(refresh)).status_code == 204
    refused = await api.me(access)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="tokenward", error="invalid_token"'
    assert refused.headers["content-type"] == "application/problem+json"


async def _refresh_answers(api: Api, monkeypatch: pytest.MonkeyPatch, cookie: str | None) -> tuple:
    """The same refresh, replayed within the reuse interval, through the fast path and the
    route: a replay of the rotated-out token gets the same successor, so both can be asked."""
    fast = await api.refresh(cookie)

    async def decline(self: FastProtectedRoute, *args: object) -> bool:
        return False

    with monkeypatch.context() as patched:
        patched.setattr(FastProtectedRoute, "_refresh", decline)
        routed = await api.refresh(cookie)
    return fast, routed


@pytest.mark.parametrize("cookie", ["current", None, "garbage"])
async def test_the_fast_refresh_is_the_routes_refresh(
    api: Api, monkeypatch: pytest.MonkeyPatch, cookie: str | None
) -> None:
    """Same status, body, Set-Cookie and headers: a rotation (its replay gets the same
    successor), no cookie (401, cookie cleared), and a malformed one."""
    _, refresh = await api.signed_up()
    presented = {"current": refresh, None: None, "garbage": "twr_garbage"}[cookie]
    fast, routed = await _refresh_answers(api, monkeypatch, presented)
    assert fast.status_code == routed.status_code
    if fast.status_code == 200:
        # Two answers for one rotation: the same successor, fresh access tokens (jti, iat).
        assert fast.headers.get_list("set-cookie") == routed.headers.get_list("set-cookie")
        assert fast.json().keys() == routed.json().keys()
    else:
        assert without_request_id(fast) == without_request_id(routed)
    assert sorted(k for k, _ in fast.headers.multi_items()) == sorted(
        k for k, _ in routed.headers.multi_items()
    )


async def test_a_cross_origin_refresh_goes_to_the_route(api: Api) -> None:
    _, refresh = await api.signed_up()
    refused = await api.refresh(refresh, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert refused.json()["type"] == "urn:tokenward:problem:cross-origin-request"
