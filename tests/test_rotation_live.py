"""A rotation seen from outside: a real server, the CLI, and a Verifier that only sees the JWKS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import jwt
from support import PASSWORD, free_port, serving

from tokenward.verify import Verifier

TOKENWARD = str(Path(sys.executable).parent / "tokenward")


def cli(data_dir: Path, *args: str, **settings: str) -> str:
    env = {**os.environ, "TOKENWARD_DATA_DIR": str(data_dir), **settings}
    result = subprocess.run(
        [TOKENWARD, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_no_token_fails_at_any_point_of_a_rotation(tmp_path: Path) -> None:
    """Tokens signed before, during and after `keys rotate` all verify through a Verifier that
    never refetches for an unknown kid (so only publish-before-sign can make this pass); after
    `keys retire` the old key is gone from the JWKS."""
    data_dir = tmp_path / "data"
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {
        "TOKENWARD_ISSUER": issuer,
        "TOKENWARD_JWKS_MAX_AGE": "2s",
        "TOKENWARD_KEY_RELOAD_INTERVAL": "1s",
        "TOKENWARD_RATE_LIMIT_REFRESH_SESSION": "1000/minute",  # one refresh every 0.2 s
    }
    with (
        ExitStack() as stack,
        serving(data_dir, port=port, **env) as (base, _),
        httpx.Client(base_url=base) as client,
    ):
        assert base == issuer
        credentials = {"email": "ada@example.com", "password": PASSWORD}
        client.post("/auth/register", json=credentials)
        response = client.post("/auth/login", json=credentials)
        verifier = Verifier(
            issuer=issuer,
            jwks_url=f"{issuer}/.well-known/jwks.json",
            insecure_http=True,
            jwks_max_age_limits=(1.0, 3600.0),
            jwks_refetch_floor=3600.0,  # an unknown kid is never rescued by a refetch
        )
        stack.enter_context(verifier)
        issued: list[str] = [response.json()["access_token"]]
        verifier.verify(issued[0])
        kids: list[str] = [_kid(issued[0])]
        rotated_at: float | None = None
        started = time.monotonic()
        # Refresh on through the rotation until the new key has signed for a while; timed
        # from the rotation, since a loaded machine may take seconds to run the CLI.
        while rotated_at is None or time.monotonic() < rotated_at + 8:
            if rotated_at is None and time.monotonic() > started + 1:
                cli(data_dir, "keys", "rotate", **env)  # the same settings as the servers
                rotated_at = time.monotonic()
            response = client.post("/auth/refresh")
            assert response.status_code == 200, response.text
            issued.append(response.json()["access_token"])
            kids.append(_kid(issued[-1]))
            for token in issued[-5:]:  # the newest and some older ones, every time
                verifier.verify(token)
            time.sleep(0.2)
        old_kid, new_kid = kids[0], kids[-1]
        assert old_kid != new_kid, "the new key never started signing"
        assert kids.index(new_kid) > 3, "the new key signed before it was published long enough"
        for token in issued:
            verifier.verify(token)

        cli(data_dir, "keys", "retire", old_kid, **env)
        time.sleep(1.5)  # one key reload
        published = [key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]]
        assert published == [new_kid]


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])
