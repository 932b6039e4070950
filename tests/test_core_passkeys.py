"""core.passkeys as tables: the counter rule, names, challenges, what a passkey says in amr."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tokenward.core.mfa import Amr
from tokenward.core.passkeys import (
    CHALLENGE_BYTES,
    Passkey,
    WebauthnChallenge,
    WebauthnPurpose,
    check_passkey_name,
    counter_regressed,
    hash_challenge,
    new_user_handle,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stored", "presented", "regressed"),
    [
        (0, 0, False),  # no counter kept (synced passkeys): never a regression
        (0, 1, False),
        (5, 6, False),
        (5, 5, True),
        (5, 4, True),
        (5, 0, True),  # a counter that was kept and now reads 0
    ],
)
def test_the_counter_rule(stored: int, presented: int, regressed: bool) -> None:
    assert counter_regressed(stored, presented) is regressed


@pytest.mark.parametrize(
    ("name", "kept"),
    [("Laptop", "Laptop"), ("  My   phone ", "My phone"), ("ü" * 64, "ü" * 64)],
)
def test_names_are_trimmed(name: str, kept: str) -> None:
    assert check_passkey_name(name) == kept


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "a\x00b", "a\u200bb"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="printable"):
        check_passkey_name(name)


def test_challenges_are_random_and_kept_hashed() -> None:
    challenge, record = WebauthnChallenge.issue(WebauthnPurpose.LOGIN, NOW, timedelta(minutes=5))
    assert len(challenge) == CHALLENGE_BYTES
    assert record.challenge_hash == hash_challenge(challenge)
    assert challenge.hex() not in record.challenge_hash
    assert record.expires_at == NOW + timedelta(minutes=5)
    assert WebauthnChallenge.issue(WebauthnPurpose.LOGIN, NOW, timedelta(1))[0] != challenge


def test_user_handles_are_random() -> None:
    assert new_user_handle() != new_user_handle()
    assert len(new_user_handle()) == 43  # 32 bytes, base64url


@pytest.mark.parametrize(("backup_eligible", "amr"), [(False, Amr.HWK), (True, Amr.SWK)])
def test_a_synced_passkey_is_a_software_key(backup_eligible: bool, amr: Amr) -> None:
    passkey = Passkey("p", "u", "cred", "key", 0, "Laptop", NOW, backup_eligible, False)
    assert passkey.amr is amr
