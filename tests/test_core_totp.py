"""core.totp: RFC 6238's own test vectors, the step window, and recovery codes (pure, fast)."""

from __future__ import annotations

import base64
import re

import pytest

from tokenward.core.totp import (
    RECOVERY_CODES,
    TotpSecret,
    hash_recovery_code,
    matching_step,
    new_recovery_codes,
    step_at,
)

pytestmark = pytest.mark.sqlite_only  # no database: runs once

# RFC 6238 Appendix B, SHA-1: the seed is the ASCII of "12345678901234567890". The vectors
# have 8 digits; a 6-digit code is the same value mod 10^6 (RFC 4226 5.3), its last 6 digits.
RFC_SECRET = TotpSecret(base64.b32encode(b"12345678901234567890").decode().rstrip("="))
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("time", "eight_digits"), RFC_VECTORS)
def test_codes_are_rfc_6238s_test_vectors(time: int, eight_digits: str) -> None:
    """At each time of RFC 6238's Appendix B, the code is the vector's (as 6 digits), and it
    is accepted at that time for that step."""
    assert RFC_SECRET.code_at(step_at(time)) == eight_digits[-6:]
    assert matching_step(RFC_SECRET, eight_digits[-6:], time) == step_at(time)


def test_a_code_is_accepted_for_its_step_and_the_next_one_only() -> None:
    """Steps t and t-1, nothing else: a code from two steps ago, or from the next step (a
    clock running ahead), matches nothing."""
    secret = TotpSecret.new()
    now = 1_700_000_000.0
    step = step_at(now)
    assert matching_step(secret, secret.code_at(step), now) == step
    assert matching_step(secret, secret.code_at(step - 1), now) == step - 1
    assert matching_step(secret, secret.code_at(step - 2), now) is None
    assert matching_step(secret, secret.code_at(step + 1), now) is None


@pytest.mark.parametrize("typed", ["", "12345", "1234567", "12a456", "١٢٣٤٥٦", "123 45", None])
def test_anything_but_six_ascii_digits_matches_nothing(typed: str | None) -> None:
    """Not six ASCII digits (Arabic-Indic digits included): no match, no error."""
    secret = TotpSecret.new()
    assert matching_step(secret, typed or "", 1_700_000_000.0) is None


def test_spaces_in_a_typed_code_are_ignored() -> None:
    """ "123 456", as authenticator apps show it, is "123456"."""
    now = 1_700_000_000.0
    code = RFC_SECRET.code_at(step_at(now))
    assert matching_step(RFC_SECRET, f"{code[:3]} {code[3:]}", now) == step_at(now)


def test_a_new_secret_is_160_random_bits_and_its_uri_is_the_key_uri_format() -> None:
    """20 bytes (RFC 4226 section 4), base32 without padding; the otpauth URI names the
    issuer and the account, and never appears in the secret's repr."""
    secret = TotpSecret.new()
    assert len(secret.base32) == 32  # 160 bits in base32: 32 characters, no padding
    assert len(base64.b32decode(secret.base32)) == 20
    assert secret != TotpSecret.new()
    uri = secret.uri(account="ada@example.com", issuer="tokenward")
    assert uri.startswith("otpauth://totp/tokenward:ada%40example.com?")
    assert f"secret={secret.base32}" in uri and "issuer=tokenward" in uri
    assert secret.base32 not in repr(secret)


def test_recovery_codes_are_ten_120_bit_codes_shown_once_and_kept_as_hashes() -> None:
    """Ten codes of 120 random bits (NIST SP 800-63B asks 112), in groups of four; the hash
    ignores dashes, spaces and case, as people type them; a code's repr never shows it."""
    codes = new_recovery_codes()
    assert len(codes) == RECOVERY_CODES == 10
    assert len({code.text for code in codes}) == 10
    for code in codes:
        assert re.fullmatch(r"([A-Z2-7]{4}-){5}[A-Z2-7]{4}", code.text)
        assert len(base64.b32decode(code.text.replace("-", ""))) == 15
        assert code.hash == hash_recovery_code(code.text.lower().replace("-", " "))
        assert code.text not in repr(code)
    assert hash_recovery_code("AAAA") != hash_recovery_code("AAAB")
