"""Helpers for the verifier tests: real `tokenward serve` processes, users, a hand-moved clock."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from support import PASSWORD, TOKENWARD, free_port, server_process

HS256_SECRET = "verify-tests-hs256-secret-0123456789abcdef"


@contextmanager
def run_tokenward(data_dir: Path, **settings: str) -> Iterator[str]:
    """`tokenward serve` on a free loopback port, its issuer set to its own URL; yield the URL.

    Only the given TOKENWARD_* settings reach it (none of the developer's, no .env).
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    with server_process(
        data_dir,
        port,
        hermetic=True,
        cwd=data_dir,
        TOKENWARD_ISSUER=base,
        TOKENWARD_RATE_LIMITS="false",  # many logins from one loopback address
        **settings,
    ):
        yield base


@dataclass
class Login:
    """A signed-in user: the access token, the refresh cookie and what the token says."""

    email: str
    access_token: str
    refresh_token: str
    claims: dict[str, Any]


@dataclass
class Tokenward:
    """One running server and a client for it."""

    base: str
    data_dir: Path
    alg: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return self.base

    @property
    def jwks_url(self) -> str:
        return f"{self.base}/.well-known/jwks.json"

    def jwks(self) -> dict[str, Any]:
        response = httpx.get(self.jwks_url)
        assert response.status_code == 200
        return dict(response.json())

    def login(self, email: str | None = None) -> Login:
        """Register a fresh user (or log ``email`` in again) and return its tokens."""
        email = email or f"{uuid.uuid4().hex[:12]}@example.com"
        with httpx.Client(base_url=self.base) as client:
            client.post("/auth/register", json={"email": email, "password": PASSWORD})
            response = client.post("/auth/login", json={"email": email, "password": PASSWORD})
            assert response.status_code == 200, response.text
            access = response.json()["access_token"]
            refresh = client.cookies["tw_refresh"]
        payload = access.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return Login(email, access, refresh, claims)

    def logout(self, login: Login) -> None:
        with httpx.Client(base_url=self.base) as client:
            response = client.post(
                "/auth/logout", headers={"Cookie": f"tw_refresh={login.refresh_token}"}
            )
            assert response.status_code == 204

    def me_status(self, access_token: str) -> int:
        headers = {"Authorization": f"Bearer {access_token}"}
        return httpx.get(f"{self.base}/auth/me", headers=headers).status_code

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the operators' CLI on this server's data directory."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENWARD_")}
        env.update(TOKENWARD_DATA_DIR=str(self.data_dir), TOKENWARD_ISSUER=self.base, **self.env)
        return subprocess.run(
            [TOKENWARD, *args],
            env=env,
            cwd=self.data_dir,
            capture_output=True,
            text=True,
            timeout=60,
        )


class Servers:
    """Servers started on first use and kept for the session, one per configuration."""

    def __init__(self, root: Path, stack: ExitStack) -> None:
        self._root = root
        self._stack = stack
        self._running: dict[tuple[tuple[str, str], ...], Tokenward] = {}

    def get(self, alg: str = "ES256", **settings: str) -> Tokenward:
        settings = {"TOKENWARD_SIGNING_ALG": alg, **settings}
        if alg == "HS256":
            settings.setdefault("TOKENWARD_HS256_SECRET", HS256_SECRET)
        key = tuple(sorted(settings.items()))
        if key not in self._running:
            data_dir = self._root / f"tokenward-{len(self._running)}"
            base = self._stack.enter_context(run_tokenward(data_dir, **settings))
            self._running[key] = Tokenward(base, data_dir, alg, settings)
        return self._running[key]


class FakeClock:
    """Wall and monotonic time that move only when a test says so."""

    def __init__(self, wall: float | None = None) -> None:
        self.wall = time.time() if wall is None else wall
        self.mono = 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> Any:
    """Import examples/<name>.py afresh (its module-level app reads the environment)."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}_{uuid.uuid4().hex}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
