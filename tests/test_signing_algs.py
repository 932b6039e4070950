"""Every supported signing algorithm issues tokens that verify from what the server publishes."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from support import Api

SECRET = "an HS256 secret of at least thirty-two bytes"


@pytest.mark.parametrize(
    "settings_overrides",
    [{"signing_alg": "ES256"}, {"signing_alg": "EdDSA"}, {"signing_alg": "RS256"}],
)
async def test_asymmetric_tokens_verify_from_the_jwks(
    api: Api, settings_overrides: dict[str, Any]
) -> None:
    alg = settings_overrides["signing_alg"]
    access, _ = await api.signed_up()
    [key] = (await api.http.get("/.well-known/jwks.json")).json()["keys"]
    assert key["alg"] == alg
    assert jwt.get_unverified_header(access)["kid"] == key["kid"]
    claims = jwt.decode(
        access, jwt.PyJWK(key).key, algorithms=[alg], issuer="http://127.0.0.1:8000"
    )
    assert claims["sid"]
    assert (await api.me(access)).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"signing_alg": "HS256", "hs256_secret": SECRET}])
async def test_hs256_keeps_the_tutorials_shape_and_publishes_no_key(api: Api) -> None:
    """HS256 with a shared secret: tokens verify with it, and the JWKS is empty."""
    access, _ = await api.signed_up()
    assert (await api.http.get("/.well-known/jwks.json")).json() == {"keys": []}
    claims = jwt.decode(access, SECRET, algorithms=["HS256"], issuer="http://127.0.0.1:8000")
    assert claims["sub"]
    assert (await api.me(access)).status_code == 200
    forged = jwt.encode(
        {**claims, "sub": "someone-else"}, "another secret of thirty-two bytes!", "HS256"
    )
    assert (await api.me(forged)).status_code == 401
