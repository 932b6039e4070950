"""The claims hook in a real `tokenward serve` process: TOKENWARD_CLAIMS_HOOK names a module on
PYTHONPATH, which uvicorn's worker imports at start-up."""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from support import PASSWORD, TOKENWARD, server_process
from support.hooks import claims_of

EMAIL = "ada@example.com"

# Steered by files beside it: "slow" holds seconds to block (a plain function: tokenward runs
# it in a thread), "fail" makes it raise.
HOOK_SOURCE = """
import pathlib
import time

HERE = pathlib.Path(__file__).parent


def claims(request):
    slow = HERE / "slow"
    if slow.exists():
        time.sleep(float(slow.read_text()))
    if (HERE / "fail").exists():
        raise RuntimeError("hook-internal-detail-5c1e")
    return {"tenant": "acme", "grant_seen": request.grant.value, "roles_seen": list(request.roles)}
"""


def hook_environment(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "deployment_claims.py").write_text(HOOK_SOURCE)
    python_path = os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))
    return hooks, {
        "PYTHONPATH": python_path,
        "TOKENWARD_CLAIMS_HOOK": "deployment_claims:claims",
        "TOKENWARD_CLAIMS_HOOK_TIMEOUT": "1",
    }


def test_serve_imports_the_hook_and_tokens_carry_its_claims(tmp_path: Path) -> None:
    """The documented deployment: the module on PYTHONPATH, the variable naming it; login and
    refresh tokens carry the claims; a hung hook costs a request the timeout (503) while the
    server keeps answering others; a raising hook's message stays out of answers and logs."""
    hooks, env = hook_environment(tmp_path)
    with (
        server_process(tmp_path / "data", **env) as server,
        httpx.Client(base_url=server.base, timeout=30) as client,
    ):
        credentials = {"email": EMAIL, "password": PASSWORD}
        assert client.post("/auth/register", json=credentials).status_code == 201
        login = client.post("/auth/login", json=credentials)
        assert login.status_code == 200, login.text
        claims = claims_of(login.json()["access_token"])
        assert (claims["tenant"], claims["grant_seen"], claims["roles_seen"]) == (
            "acme",
            "login",
            [],
        )
        refreshed = client.post("/auth/refresh")  # the jar sends the refresh cookie
        assert refreshed.status_code == 200
        assert claims_of(refreshed.json()["access_token"])["grant_seen"] == "refresh"

        (hooks / "slow").write_text("3")
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            pending = pool.submit(
                httpx.post, f"{server.base}/auth/login", json=credentials, timeout=30
            )
            time.sleep(0.3)  # the login is now waiting on the hook
            health_started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            health_took = time.monotonic() - health_started
            hung = pending.result()
            took = time.monotonic() - started
        (hooks / "slow").unlink()
        assert hung.status_code == 503
        assert hung.json()["type"] == "urn:tokenward:problem:claims-unavailable"
        assert hung.headers["retry-after"]
        assert took < 2.8, f"the login waited {took:.1f} s on a 3 s hook with a 1 s timeout"
        assert health_took < 0.5, "the hung hook held up the event loop"

        (hooks / "fail").write_text("")
        failed = client.post("/auth/login", json=credentials)
        assert failed.status_code == 503
        assert "hook-internal-detail-5c1e" not in failed.text
        (hooks / "fail").unlink()
        assert client.post("/auth/login", json=credentials).status_code == 200

    log = server.log.read_text()
    assert "hook-internal-detail-5c1e" not in log
    assert "claims hook raised RuntimeError" in log


def test_serve_refuses_to_start_with_a_hook_it_cannot_import(tmp_path: Path) -> None:
    """A hook path that does not import stops `tokenward serve` before it listens, with one
    line naming TOKENWARD_CLAIMS_HOOK (never a server issuing tokens without the claims)."""
    _, env = hook_environment(tmp_path)
    env["TOKENWARD_CLAIMS_HOOK"] = "deployment_claims_missing:claims"
    finished = subprocess.run(
        [TOKENWARD, "serve", "--host", "127.0.0.1", "--port", "9"],
        env={**os.environ, "TOKENWARD_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode != 0
    assert "TOKENWARD_CLAIMS_HOOK" in finished.stderr
    assert "Traceback" not in finished.stderr
