"""The library's core and tokenward's own codec give the same verdict on every corpus token.

The server's AccessTokenCodec calls the core, adding its keyring (which kids may still
verify); this holds the two to one verdict, through the codec's own API.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tokenward.core.keys import Keyring, load_key
from tokenward.core.tokens import AccessTokenCodec
from tokenward.exceptions import TokenError
from tokenward.verify import VerificationError, verify_compact
from tokenward.verify import load_key as load_verify_key

from .corpus import CASES, ISSUER, LEEWAY, NOW, Case, Forger

FORGER = Forger()


def server_codec(audience: str | None) -> Any:
    """tokenward's AccessTokenCodec holding the forger's key (the one place to follow its API)."""
    pem = FORGER.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key = load_key("ES256", pem, activates_at=datetime(2000, 1, 1, tzinfo=UTC))
    assert key.kid == FORGER.kid
    keyring = Keyring([key], alg="ES256", token_lifetime=timedelta(minutes=15))
    return AccessTokenCodec(
        keyring, issuer=ISSUER, audience=audience, ttl=timedelta(minutes=15), leeway=LEEWAY
    )


def server_accepts(token: str, audience: str | None) -> bool:
    try:
        server_codec(audience).verify(token, now=NOW)
    except TokenError:
        return False
    return True


def library_accepts(token: str, audience: str | None) -> bool:
    keys = {FORGER.kid: load_verify_key(FORGER.key.public_key(), kid=FORGER.kid)}
    try:
        verify_compact(token, keys, issuer=ISSUER, audience=audience, leeway=LEEWAY, now=NOW)
    except VerificationError:
        return False
    return True


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_same_verdict_as_the_server(case: Case) -> None:
    """Accepted by the server's codec exactly when accepted by the library."""
    token = case.make(FORGER)
    library = library_accepts(token, case.audience)
    assert library is (case.reason is None)
    assert server_accepts(token, case.audience) is library
