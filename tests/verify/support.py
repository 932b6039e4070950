"""Helpers for the verifier tests: real `tokenward serve` processes, users, a hand-moved clock."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
from support import PASSWORD, TOKENWARD, free_port, server_process

from tokenward.verify import Verifier

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
        return Login(email, access, refresh, payload(access))

    def refresh_status(self, login: Login) -> int:
        """POST /auth/refresh with the login's refresh cookie; the status, nothing kept."""
        with httpx.Client(base_url=self.base) as client:
            cookie = {"Cookie": f"tw_refresh={login.refresh_token}"}
            return client.post("/auth/refresh", headers=cookie).status_code

    def refresh(self, login: Login) -> Login:
        """The session's next tokens (the refresh cookie rotated), as a browser gets them."""
        with httpx.Client(base_url=self.base) as client:
            cookie = {"Cookie": f"tw_refresh={login.refresh_token}"}
            response = client.post("/auth/refresh", headers=cookie)
            assert response.status_code == 200, response.text
            access = response.json()["access_token"]
            refresh = response.cookies["tw_refresh"]
        return Login(login.email, access, refresh, payload(access))

    def me(self, access_token: str) -> dict[str, Any]:
        """GET /auth/me: the user as tokenward sees them now (roles and scope included)."""
        headers = {"Authorization": f"Bearer {access_token}"}
        response = httpx.get(f"{self.base}/auth/me", headers=headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

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

    def ok_cli(self, *args: str) -> str:
        """The CLI's output, which must succeed."""
        result = self.cli(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def client_credentials(self, name: str, *scopes: str) -> tuple[str, str]:
        """`tokenward clients create NAME [--scope ...]`: (client_id, client_secret)."""
        options = [arg for scope in scopes for arg in ("--scope", scope)]
        out = self.ok_cli("clients", "create", name, *options)
        values = dict(re.findall(r"^(client_id|client_secret)=(\S+)$", out, re.MULTILINE))
        return values["client_id"], values["client_secret"]

    @cached_property
    def feed_credentials(self) -> tuple[str, str]:
        """A resource server's client (the revocation feed), made once per server."""
        return self.client_credentials("notes-api")

    @cached_property
    def admin_auth(self) -> httpx.BasicAuth:
        """A back office's client holding admin:roles, made once per server."""
        return httpx.BasicAuth(*self.client_credentials("back-office", "admin:roles"))

    def admin(self, method: str, path: str, **params: str) -> httpx.Response:
        """An admin API call without a body (grants, revocations, deletions)."""
        return httpx.request(method, f"{self.base}{path}", params=params, auth=self.admin_auth)

    def put_role(self, name: str, *permissions: str) -> None:
        """Create the role or replace its permissions (PUT /admin/roles/{name})."""
        body = {"permissions": list(permissions)}
        url = f"{self.base}/admin/roles/{name}"
        response = httpx.put(url, json=body, auth=self.admin_auth)
        assert response.status_code in (200, 201), response.text


def payload(token: str) -> dict[str, Any]:
    """A JWT's claims as issued (unverified)."""
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


READER, ADMIN = "notes-reader", "admin"
"""The roles the examples need: one granting the scope notes:read, and the role ``admin``
that purging the notes requires."""
REVOCATION_BOUND = 2.0
"""The examples' revocation_bound where their verifier follows the feed (seconds)."""


def example_roles(tokenward: Tokenward) -> None:
    """Put the examples' roles on a (shared) server: create or replace, any test may be first."""
    tokenward.put_role(READER, "notes:read")
    tokenward.put_role(ADMIN, "notes:purge")


def role_path(user: Login, role: str) -> str:
    """The admin API's path for ``user`` holding ``role``."""
    return f"/admin/users/{user.claims['sub']}/roles/{role}"


def feed_verifier(tokenward: Tokenward) -> Verifier:
    """A resource server's verifier following tokenward's revocation feed (real polling)."""
    client_id, client_secret = tokenward.feed_credentials
    return Verifier(
        tokenward.issuer,
        revocation_url=f"{tokenward.base}/auth/revocations",
        client_id=client_id,
        client_secret=client_secret,
        revocation_bound=REVOCATION_BOUND,
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
