"""Issue 5 acceptance: a real tokenward's tokens verify in independent implementations that
know only the published JWKS (joserfc in Python, `jose` in Node), and tampered ones fail there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet

from tokenward.verify import Verifier

from .support import Login, Tokenward
from .test_verifier_server import flip_signature_byte, tamper_claim

ALGORITHMS = ["ES256", "EdDSA", "RS256"]
# RFC 9864 deprecates the JOSE name "EdDSA" for "Ed25519"; tokenward still publishes "EdDSA".
pytestmark = pytest.mark.filterwarnings(
    "ignore:EdDSA is deprecated via RFC 9864:joserfc.errors.SecurityWarning"
)


def variants(login: Login) -> dict[str, str]:
    """The token as issued, and two forgeries of it."""
    return {
        "valid": login.access_token,
        "changed-claim": tamper_claim(login.access_token, sub="mallory"),
        "flipped-signature-byte": flip_signature_byte(login.access_token),
    }


@pytest.fixture(scope="module", params=ALGORITHMS)
def issued(request: pytest.FixtureRequest, servers: Any) -> tuple[Tokenward, Login]:
    server = servers.get(request.param)
    return server, server.login()


def joserfc_verify(server: Tokenward, token: str) -> dict[str, Any]:
    """Verify as a joserfc user would: JWKS over HTTP, pinned algorithm, typ and claims."""
    key_set = KeySet.import_key_set(httpx.get(server.jwks_url).json())
    decoded = jwt.decode(token, key_set, algorithms=[server.alg])
    if decoded.header.get("typ") != "at+jwt":
        raise JoseError("typ")
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": server.issuer},
        sub={"essential": True},
        sid={"essential": True},
        jti={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    )
    registry.validate(decoded.claims)
    return dict(decoded.claims)


def test_joserfc_verifies_tokenward_tokens(issued: tuple[Tokenward, Login]) -> None:
    """joserfc accepts the issued token with the same claims, refuses both forgeries."""
    server, login = issued
    tokens = variants(login)
    assert joserfc_verify(server, tokens["valid"]) == login.claims
    for name in ("changed-claim", "flipped-signature-byte"):
        with pytest.raises(BadSignatureError):
            joserfc_verify(server, tokens[name])


def node_verify(node_jose: Path, server: Tokenward, tokens: list[str]) -> list[dict[str, Any]]:
    """Verify with Node's jose (createRemoteJWKSet + jwtVerify) in one node process."""
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(
        [node, str(node_jose / "verify.mjs"), server.jwks_url, server.issuer, server.alg],
        input=json.dumps(tokens),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    results: list[dict[str, Any]] = json.loads(result.stdout)
    return results


def test_node_jose_verifies_tokenward_tokens(
    node_jose: Path, issued: tuple[Tokenward, Login]
) -> None:
    """Node's jose, given only the JWKS URL, accepts the token and refuses both forgeries."""
    server, login = issued
    tokens = variants(login)
    valid, changed, flipped = node_verify(node_jose, server, list(tokens.values()))
    assert valid["ok"], valid
    assert valid["payload"] == login.claims
    assert valid["header"]["typ"] == "at+jwt"
    assert valid["header"]["alg"] == server.alg
    assert changed == {"ok": False, "code": "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"}
    assert flipped == {"ok": False, "code": "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"}


def test_node_jose_enforces_issuer_and_typ(
    node_jose: Path, tokenward: Tokenward, alice: Login
) -> None:
    """Control: the Node check is not a rubber stamp (wrong issuer, wrong algorithm refused)."""
    other = Tokenward("http://127.0.0.1:1", tokenward.data_dir, tokenward.alg)
    wrong_issuer = node_verify(node_jose, _with_jwks(other, tokenward), [alice.access_token])
    assert wrong_issuer == [{"ok": False, "code": "ERR_JWT_CLAIM_VALIDATION_FAILED"}]
    wrong_alg = Tokenward(tokenward.base, tokenward.data_dir, "RS256")
    refused = node_verify(node_jose, wrong_alg, [alice.access_token])
    assert refused == [{"ok": False, "code": "ERR_JOSE_ALG_NOT_ALLOWED"}]


def _with_jwks(claimed: Tokenward, real: Tokenward) -> Any:
    """A server description whose issuer is ``claimed`` but whose JWKS is ``real``'s."""

    class Mixed:
        issuer = claimed.issuer
        jwks_url = real.jwks_url
        alg = real.alg

    return Mixed()


def test_all_three_agree(node_jose: Path, issued: tuple[Tokenward, Login]) -> None:
    """tokenward.verify, joserfc and Node's jose give the same verdict on every variant."""
    server, login = issued
    tokens = variants(login)
    node = node_verify(node_jose, server, list(tokens.values()))
    with Verifier(server.issuer) as verifier:
        for (name, token), from_node in zip(tokens.items(), node, strict=True):
            try:
                verifier.verify(token)
                ours = True
            except Exception:
                ours = False
            try:
                joserfc_verify(server, token)
                theirs = True
            except JoseError:
                theirs = False
            assert ours is theirs is from_node["ok"] is (name == "valid"), name
