"""The library's core and tokenward's own codec give the same verdict on every corpus token.

This pins "the same rules on both sides" until the server calls the core itself. The few cases
marked ``stricter_than_server`` are refused by the library on purpose and accepted by today's
codec; each says why in tests/verify/corpus.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tokenward.exceptions import TokenError
from tokenward.keys import Keyring, load_key
from tokenward.tokens import AccessTokenCodec
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
    """Accepted by one exactly when accepted by the other (except the stricter cases)."""
    token = case.make(FORGER)
    library = library_accepts(token, case.audience)
    assert library is (case.reason is None)
    server = server_accepts(token, case.audience)
    if case.stricter_than_server:
        assert server and not library, "the server became as strict: drop the marker"
    else:
        assert server is library
