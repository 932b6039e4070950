"""The browser files the server hands out: the client module, and the demo page when enabled."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from support import FAST_HASHER, LIFESPAN_TIMEOUT, PASSWORD, Api, make_settings, refresh_cookie

from tokenward.web import create_app
from tokenward.web.browser import DEMO_CSP, LINK_PAGES
from tokenward.web.embed import tokenward_lifespan

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


def _assets(html: str) -> list[str]:
    """The files a page loads: scripts, style sheets, icons."""
    return re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="([^"]+)"', html)


async def test_the_pages_of_mailed_links_are_the_demo_page_under_its_csp(api: Api) -> None:
    """docs/email.md: links open <app url>/verify-email#token=... (and three more pages); the
    demo page serves them, and its files load from there as from /."""
    home = await api.http.get("/")
    for path in LINK_PAGES:
        page = await api.http.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-security-policy"] == DEMO_CSP
        assert page.headers["cache-control"] == "no-cache"
        assert page.text == home.text
        for asset in _assets(page.text):
            url = urljoin(f"http://testserver{path}", asset)
            assert (await api.http.get(url)).status_code == 200, (path, asset)


async def test_production_without_the_demo_page_serves_no_link_pages(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", env="production", issuer="https://auth.example.com")
    for page in await _get(settings, *LINK_PAGES):
        assert page.status_code == 404
        assert page.headers["content-security-policy"] != DEMO_CSP


async def test_link_pages_keep_their_csp_and_files_when_tokenward_is_mounted(
    tmp_path: Path,
) -> None:
    identity = create_app(make_settings(tmp_path / "data"), hasher=FAST_HASHER)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with tokenward_lifespan(identity):
            yield

    host = FastAPI(lifespan=lifespan)
    host.mount("/id", identity)
    async with LifespanManager(host, startup_timeout=LIFESPAN_TIMEOUT):
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as http:
            for path in ("/id/", *(f"/id{page}" for page in LINK_PAGES)):
                page = await http.get(path)
                assert page.status_code == 200, path
                assert page.headers["content-security-policy"] == DEMO_CSP
                for asset in _assets(page.text):
                    url = urljoin(f"http://host{path}", asset)
                    assert url.startswith("http://host/id/"), url
                    assert (await http.get(url)).status_code == 200, url


def _browser_file(name: str) -> str:
    return (resources.files("tokenward") / name).read_text(encoding="utf-8")


def test_the_demo_page_has_no_inline_script_style_or_handlers() -> None:
    """What the CSP would refuse anyway, refused here first (a page that breaks quietly)."""
    html = _browser_file("demo/index.html")
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all(
        'src="' in attributes and not body.strip() for attributes, body in scripts
    )
    assert "<style" not in html
    assert not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html)
    assert "javascript:" not in html


@pytest.mark.parametrize("name", ["demo/app.js", "static/tokenward.js"])
def test_browser_scripts_never_parse_text_as_html(name: str) -> None:
    """Server data (emails, devices, mails and their links) goes in as text or DOM nodes."""
    source = _browser_file(name)
    sinks = r"\.(?:inner|outer)HTML\b|insertAdjacentHTML\(|document\.write|\beval\("
    assert not re.search(sinks, source), name
    assert not re.search(r"new Function\b|setTimeout\(\s*[\"'`]", source), name


def test_every_id_the_demo_script_looks_up_is_in_the_page() -> None:
    html = _browser_file("demo/index.html")
    script = _browser_file("demo/app.js")
    ids = set(re.findall(r'\bid="([^"]+)"', html))
    wanted = set(re.findall(r'\$\("([^"]+)"\)', script))
    listed = re.search(r"\[((?:\s*\"[a-z-]+\",?)+)\s*\]\.map\(\$\)", script)
    assert listed is not None
    wanted |= set(re.findall(r'"([a-z-]+)"', listed.group(1)))
    assert wanted <= ids, wanted - ids
