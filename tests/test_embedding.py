"""tokenward mounted inside a host FastAPI app (examples/embedded_fastapi.py's pattern)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from support import FAST_HASHER, LIFESPAN_TIMEOUT, PASSWORD, make_settings, refresh_cookie

from tokenward.app.service import Principal
from tokenward.web import create_app
from tokenward.web.embed import embedded_user, tokenward_lifespan


def host_app(data_dir: Path) -> FastAPI:
    identity = create_app(make_settings(data_dir), hasher=FAST_HASHER)
    current_user = embedded_user(identity)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with tokenward_lifespan(identity):
            yield

    app = FastAPI(lifespan=lifespan)
    app.mount("/id", identity)

    # A default, not Annotated: this module's string annotations cannot see a local name.
    @app.get("/orders")
    async def orders(user: Principal = Depends(current_user)) -> dict[str, Any]:  # noqa: B008
        return {"owner": user.user.email}

    return app


async def test_embedded_tokenward_serves_under_its_mount_and_guards_host_routes(
    tmp_path: Path,
) -> None:
    app = host_app(tmp_path / "data")
    async with LifespanManager(
        app, startup_timeout=LIFESPAN_TIMEOUT, shutdown_timeout=LIFESPAN_TIMEOUT
    ):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            credentials = {"email": "ada@example.com", "password": PASSWORD}
            assert (await client.post("/id/auth/register", json=credentials)).status_code == 201
            login = await client.post("/id/auth/login", json=credentials)
            assert login.status_code == 200
            assert "Path=/id/auth" in login.headers["set-cookie"]
            access = login.json()["access_token"]
            bearer = {"Authorization": f"Bearer {access}"}

            orders = await client.get("/orders", headers=bearer)
            assert orders.status_code == 200
            assert orders.json() == {"owner": "ada@example.com"}
            assert (await client.get("/orders")).status_code == 401
            refused = await client.get("/orders", headers={"Authorization": "Bearer nope"})
            assert refused.status_code == 401
            assert 'error="invalid_token"' in refused.headers["www-authenticate"]

            jwks = await client.get("/id/.well-known/jwks.json")
            assert len(jwks.json()["keys"]) == 1
            token = refresh_cookie(login)
            client.cookies.clear()
            rotated = await client.post(
                "/id/auth/refresh", headers={"Cookie": f"tw_refresh={token}"}
            )
            assert rotated.status_code == 200
            assert rotated.headers["cache-control"] == "no-store"
            assert (
                await client.post(
                    "/id/auth/logout", headers={"Cookie": f"tw_refresh={refresh_cookie(rotated)}"}
                )
            ).status_code == 204
            assert (await client.get("/orders", headers=bearer)).status_code == 401


def test_the_example_app_imports_and_mounts(tmp_path: Path, monkeypatch: Any) -> None:
    """examples/embedded_fastapi.py builds (its tokenward opens at start-up, not import)."""
    import importlib.util

    monkeypatch.setenv("TOKENWARD_DATA_DIR", str(tmp_path / "data"))
    path = Path(__file__).resolve().parents[1] / "examples" / "embedded_fastapi.py"
    spec = importlib.util.spec_from_file_location("embedded_fastapi", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    paths = {getattr(route, "path", "") for route in module.app.routes}
    assert {"/orders", "/id"} <= paths
