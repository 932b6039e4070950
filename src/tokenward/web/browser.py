"""The browser side: the client module at /static/tokenward.js and the demo page at /
(and at the pages of mailed links)."""

from __future__ import annotations

import os
from importlib import resources
from os import PathLike
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["DEMO_CSP", "LINK_PAGES", "install_browser_routes"]

# The demo page runs only its own files: no inline script or style, no other origin.
DEMO_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

# The pages that mailed links open (`<app url>/<page>#token=...`, docs/email.md): the demo
# page serves them too. The token is in the fragment, which the browser never sends here.
LINK_PAGES = ("/verify-email", "/reset-password", "/confirm-email", "/cancel-email-change")


def _package_dir(name: str) -> Path:
    return Path(str(resources.files("tokenward") / name))


class _RevalidatedFiles(StaticFiles):
    """Static files that browsers revalidate (ETag) on every use: a new release is seen at once."""

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_browser_routes(app: FastAPI, *, demo: bool) -> dict[str, str]:
    """Mount the client (always) and the demo page (when ``demo``); return per-path CSPs."""
    app.mount("/static", _RevalidatedFiles(directory=_package_dir("static")), name="static")
    if not demo:
        return {}
    demo_dir = _package_dir("demo")
    app.mount("/demo", _RevalidatedFiles(directory=demo_dir), name="demo")

    async def demo_page() -> FileResponse:
        return FileResponse(demo_dir / "index.html", headers={"Cache-Control": "no-cache"})

    pages = ("/", *LINK_PAGES)
    for path in pages:
        app.add_api_route(path, demo_page, methods=["GET"], include_in_schema=False)
    return dict.fromkeys(pages, DEMO_CSP)
