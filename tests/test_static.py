"""The browser files the server hands out: the client module, and the demo page when enabled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from support import FAST_HASHER, LIFESPAN_TIMEOUT, PASSWORD, Api, make_settings, refresh_cookie

from tokenward.web import create_app
from tokenward.web.browser import DEMO_CSP

pytestmark = pytest.mark.sqlite_only  # files and headers; no storage involved


async def _get(settings: Any, *paths: str, **headers: str) -> list[httpx.Response]:
    app = create_app(settings, hasher=FAST_HASHER)
    async with LifespanManager(app, startup_timeout=LIFESPAN_TIMEOUT):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            return [await http.get(path, headers=headers) for path in paths]


async def test_the_client_module_is_served_and_revalidated(api: Api) -> None:
    response = await api.http.get("/static/tokenward.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "no-cache"
    assert "export class TokenwardClient" in response.text
    again = await api.http.get(
        "/static/tokenward.js", headers={"If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304


async def test_the_demo_page_runs_under_a_strict_csp_in_development(api: Api) -> None:
    page = await api.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == DEMO_CSP
    assert "'unsafe-inline'" not in DEMO_CSP
    assert '<script type="module" src="demo/app.js">' in page.text
    for asset in ("/demo/app.js", "/demo/style.css", "/demo/favicon.svg"):
        assert (await api.http.get(asset)).status_code == 200


@pytest.mark.parametrize(("enabled", "status"), [(None, 404), (True, 200)])
async def test_production_serves_the_demo_page_only_when_asked(
    tmp_path: Path, enabled: bool | None, status: int
) -> None:
    settings = make_settings(
        tmp_path / "data", env="production", issuer="https://auth.example.com", demo_page=enabled
    )
    page, asset, module = await _get(settings, "/", "/demo/app.js", "/static/tokenward.js")
    assert (page.status_code, asset.status_code) == (status, status)
    assert module.status_code == 200  # the client is for every front-end


async def test_samesite_none_is_always_secure(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data",
        cookie_samesite="none",
        allowed_origins="https://app.other.example",
        rate_limits=False,
    )
    app = create_app(settings, hasher=FAST_HASHER)
    async with LifespanManager(app, startup_timeout=LIFESPAN_TIMEOUT):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            api = Api(http)
            await api.register("ada@example.com")
            login = await api.login("ada@example.com", PASSWORD)
            header = login.headers["set-cookie"]
            assert "SameSite=none" in header or "SameSite=None" in header
            assert "Secure" in header and "HttpOnly" in header
            assert refresh_cookie(login)
